"""A small Clickport-like application: a SQLite database, avatar files, and the erasure plan for it.

It gives the demo and the tests a real target: ``create_sample_app(folder)`` writes ``app.db``
(schema.sql plus deterministic seed data for six accounts), ``avatars/<account>.png`` and a copy
of ``erasure.toml`` into ``folder``, so the plan's relative paths point at that copy.
``footprint`` counts what an account has in each table, which is what an erasure must empty.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

ACCOUNTS: tuple[tuple[str, str, str], ...] = (
    ("acc_1001", "ana.ruiz@example.net", "Ana Ruiz"),
    ("acc_1002", "ben.okafor@example.org", "Ben Okafor"),
    ("acc_1003", "chen.li@example.com", "Chen Li"),
    ("acc_1004", "dora.schmidt@example.de", "Dora Schmidt"),
    ("acc_1005", "eve.martin@example.fr", "Eve Martin"),
    ("acc_1006", "finn.berg@example.se", "Finn Berg"),
)
ERASED_TABLES = ("users", "oauth_links", "recovery_codes", "sessions", "sites", "pageviews", "goals",
                 "custom_events", "share_links", "api_keys", "team_memberships")
KEPT_TABLES = ("subscriptions", "invoices")
MEMBERSHIPS = (("acc_1001", "acc_1002"), ("acc_1001", "acc_1003"), ("acc_1006", "acc_1002"),
               ("acc_1003", "acc_1005"))  # (member, owner of the site): nobody is a member of a site of Ana's


@dataclass(frozen=True)
class SampleApp:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "app.db"

    @property
    def avatars(self) -> Path:
        return self.root / "avatars"

    @property
    def plan(self) -> Path:
        return self.root / "erasure.toml"

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db)


def _png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A valid solid-colour PNG (avatars are real image files, not placeholders)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _seed(conn: sqlite3.Connection) -> None:
    rnd = random.Random(1001)
    site_of: dict[str, list[int]] = {}
    for n, (acc, email, name) in enumerate(ACCOUNTS):
        conn.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (acc, email, name, f"$argon2id$v=19$m=65536,t=3,p=4${acc}", f"TOTP{n:04d}" if n % 2 == 0 else None,
                      f"{acc}.png", f"2024-0{n + 1}-15T10:00:00Z"))
        for provider in ("google", "github")[: 1 + n % 2]:
            conn.execute("INSERT INTO oauth_links (user_id, provider, provider_uid) VALUES (?, ?, ?)",
                         (acc, provider, f"{provider}-{rnd.randrange(10**9)}"))
        if n % 2 == 0:
            conn.executemany("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?, ?)",
                             [(acc, f"sha256:{rnd.getrandbits(64):016x}") for _ in range(8)])
        conn.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                         [(f"s_{acc}_{i}", acc, ("Firefox", "Safari iOS", "Chrome")[i], f"203.0.113.{n * 10 + i}",
                           "2026-11-30T18:00:00Z") for i in range(1 + (n + 2) % 3)])
        site_of[acc] = []
        for k in range(1 + (n % 2 == 0)):
            domain = f"{name.split()[0].lower()}{'-shop' if k else ''}.example"
            cur = conn.execute("INSERT INTO sites (owner_id, domain, timezone, created_at) VALUES (?, ?, ?, ?)",
                               (acc, domain, "Europe/Berlin", "2024-06-01T00:00:00Z"))
            site = cur.lastrowid
            site_of[acc].append(site)
            conn.executemany("INSERT INTO pageviews (site_id, ts, path, referrer, country) VALUES (?, ?, ?, ?, ?)",
                             [(site, f"2026-11-{1 + i % 28:02d}T12:00:00Z", rnd.choice(("/", "/pricing", "/blog")),
                               rnd.choice((None, "https://news.example/")), rnd.choice(("DE", "FR", "US")))
                              for i in range(20 + rnd.randrange(20))])
            conn.executemany("INSERT INTO goals (site_id, name, kind) VALUES (?, ?, ?)",
                             [(site, "Signup", "event"), (site, "Visit /pricing", "page")])
            conn.executemany("INSERT INTO custom_events (site_id, name, props_json, ts) VALUES (?, ?, ?, ?)",
                             [(site, "Signup", '{"plan": "growth"}', f"2026-11-{i + 1:02d}T09:00:00Z")
                              for i in range(5)])
            conn.execute("INSERT INTO share_links (site_id, slug, password_hash) VALUES (?, ?, ?)",
                         (site, f"share-{domain.split('.')[0]}", None))
            conn.execute("INSERT INTO api_keys (user_id, site_id, name, key_hash) VALUES (?, ?, ?, ?)",
                         (acc, site, "Zapier", f"sha256:{rnd.getrandbits(64):016x}"))
        conn.execute("INSERT INTO api_keys (user_id, site_id, name, key_hash) VALUES (?, NULL, ?, ?)",
                     (acc, "personal script", f"sha256:{rnd.getrandbits(64):016x}"))
        conn.execute("INSERT INTO subscriptions (account_id, paddle_subscription_id, plan, status) VALUES (?, ?, ?, ?)",
                     (acc, f"sub_{1000 + n}", ("growth", "business")[n % 2], "active"))
        conn.executemany("INSERT INTO invoices (account_id, customer_email, amount_cents, currency, paid_at, "
                         "paddle_transaction_id) VALUES (?, ?, ?, ?, ?, ?)",
                         [(acc, email, (900, 1900)[n % 2], "EUR", f"2026-{m:02d}-01T00:00:00Z", f"txn_{n}{m:02d}")
                          for m in range(8, 12)])
    for member, owner in MEMBERSHIPS:
        conn.execute("INSERT INTO team_memberships (site_id, user_id, role) VALUES (?, ?, ?)",
                     (site_of[owner][0], member, "viewer"))


def create_sample_app(dest: Path) -> SampleApp:
    """Write the sample app into ``dest`` (which must not already hold one)."""
    app = SampleApp(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if app.db.exists():
        raise FileExistsError(f"{app.db} exists; the sample app is only ever created fresh")
    with app.connect() as conn:
        conn.executescript((HERE / "schema.sql").read_text(encoding="utf-8"))
        _seed(conn)
    conn.close()
    app.avatars.mkdir(exist_ok=True)
    for n, (acc, _, _) in enumerate(ACCOUNTS):
        (app.avatars / f"{acc}.png").write_bytes(_png((40 * n % 256, 120, 200 - 30 * n)))
    shutil.copyfile(HERE / "erasure.toml", app.plan)
    return app


def site_ids(app: SampleApp, account_id: str) -> list[int]:
    with app.connect() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM sites WHERE owner_id = ? ORDER BY id", (account_id,))]
    conn.close()
    return ids


def footprint(app: SampleApp, account_id: str, sites: list[int] | None = None) -> dict[str, int]:
    """Rows of the account per table (its own, and those of its sites), and its avatar file.

    Pass ``sites`` (the ids from before an erasure) to find rows left behind by sites already gone.
    """
    sites = site_ids(app, account_id) if sites is None else sites
    marks = ",".join("?" * len(sites)) or "NULL"
    where = {
        "users": ("id = ?", [account_id]),
        "oauth_links": ("user_id = ?", [account_id]),
        "recovery_codes": ("user_id = ?", [account_id]),
        "sessions": ("user_id = ?", [account_id]),
        "sites": (f"owner_id = ? OR id IN ({marks})", [account_id, *sites]),
        "pageviews": (f"site_id IN ({marks})", sites),
        "goals": (f"site_id IN ({marks})", sites),
        "custom_events": (f"site_id IN ({marks})", sites),
        "share_links": (f"site_id IN ({marks})", sites),
        "api_keys": (f"user_id = ? OR site_id IN ({marks})", [account_id, *sites]),
        "team_memberships": (f"user_id = ? OR site_id IN ({marks})", [account_id, *sites]),
        "subscriptions": ("account_id = ?", [account_id]),
        "invoices": ("account_id = ?", [account_id]),
    }
    with app.connect() as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t} WHERE {w}", args).fetchone()[0]
                  for t, (w, args) in where.items()}
    conn.close()
    counts["avatar file"] = int((app.avatars / f"{account_id}.png").exists())
    return counts


def table_sizes(app: SampleApp) -> dict[str, int]:
    """Rows per table, all accounts: what an erasure removed beyond one account shows up here."""
    with app.connect() as conn:
        sizes = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (*ERASED_TABLES, *KEPT_TABLES)}
    conn.close()
    return sizes
