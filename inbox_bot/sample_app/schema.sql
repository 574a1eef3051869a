-- A small Clickport-like application database (SQLite): the target of the sample erasure plan.
-- The account id is users.id. Billing tables reference it as a plain value, not a foreign key:
-- subscriptions and invoices outlive the user record (invoices are kept for the tax law).

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret   TEXT,
    avatar_path   TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE oauth_links (
    id          INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    provider    TEXT NOT NULL,
    provider_uid TEXT NOT NULL
);

CREATE TABLE recovery_codes (
    id        INTEGER PRIMARY KEY,
    user_id   TEXT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at   TEXT
);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    user_agent TEXT NOT NULL,
    ip         TEXT NOT NULL,
    last_seen  TEXT NOT NULL
);

CREATE TABLE sites (
    id         INTEGER PRIMARY KEY,
    owner_id   TEXT NOT NULL REFERENCES users(id),
    domain     TEXT NOT NULL UNIQUE,
    timezone   TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- tracking data
CREATE TABLE pageviews (
    id       INTEGER PRIMARY KEY,
    site_id  INTEGER NOT NULL REFERENCES sites(id),
    ts       TEXT NOT NULL,
    path     TEXT NOT NULL,
    referrer TEXT,
    country  TEXT
);

CREATE TABLE goals (
    id      INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites(id),
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL
);

CREATE TABLE custom_events (
    id         INTEGER PRIMARY KEY,
    site_id    INTEGER NOT NULL REFERENCES sites(id),
    name       TEXT NOT NULL,
    props_json TEXT NOT NULL,
    ts         TEXT NOT NULL
);

CREATE TABLE share_links (
    id            INTEGER PRIMARY KEY,
    site_id       INTEGER NOT NULL REFERENCES sites(id),
    slug          TEXT NOT NULL UNIQUE,
    password_hash TEXT
);

CREATE TABLE api_keys (
    id       INTEGER PRIMARY KEY,
    user_id  TEXT NOT NULL REFERENCES users(id),
    site_id  INTEGER REFERENCES sites(id),
    name     TEXT NOT NULL,
    key_hash TEXT NOT NULL
);

CREATE TABLE team_memberships (
    id      INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role    TEXT NOT NULL
);

CREATE TABLE subscriptions (
    id                     INTEGER PRIMARY KEY,
    account_id             TEXT NOT NULL,
    paddle_subscription_id TEXT NOT NULL UNIQUE,
    plan                   TEXT NOT NULL,
    status                 TEXT NOT NULL,
    cancelled_at           TEXT
);

CREATE TABLE invoices (
    id                     INTEGER PRIMARY KEY,
    account_id             TEXT NOT NULL,
    customer_email         TEXT NOT NULL,
    amount_cents           INTEGER NOT NULL,
    currency               TEXT NOT NULL,
    paid_at                TEXT NOT NULL,
    paddle_transaction_id  TEXT NOT NULL UNIQUE
);

-- Holds placed by the legal team: while one is not lifted, the account is never erased automatically
-- (the erasure plan's [[holds]]). Empty in the seed data.
CREATE TABLE legal_holds (
    id          INTEGER PRIMARY KEY,
    account_id  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    placed_at   TEXT NOT NULL,
    lifted_at   TEXT
);
