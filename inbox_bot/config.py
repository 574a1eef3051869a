"""Configuration: a TOML file (or built-in defaults) plus the environment for secrets.

Every bad value is a ``ConfigError`` whose message names the key ("erasure.cooling_off: ..."),
so the command line can print one line instead of a traceback. Relative paths are relative
to the config file's folder (or the working directory when there is no file).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from inbox_bot.resources import default_rules_dir, default_templates_dir

ENV_CONFIG = "INBOX_BOT_CONFIG"
DEFAULT_FILE = "inbox-bot.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb?|kib|mb?|mib|gb?|gib)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {None: 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
               "g": 10**9, "gb": 10**9, "gib": 2**30}
_KEYWORD = re.compile(r"^\$?[A-Za-z0-9_.-]+$")  # an IMAP flag-keyword atom (no backslash: system flags)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# section -> key -> default; a key not listed here is an error (typos must not pass silently).
DEFAULTS: dict[str, dict[str, Any]] = {
    "mailbox": {
        "address": "support@clickport.io",
        "source": "maildir:mail/inbox",
        "staff_address": "support-staff@clickport.io",
        "from_name": "Clickport Support",
        "poll_interval": "30s",
        "password_env": "INBOX_BOT_IMAP_PASSWORD",
        "password_file": "",
        "ca_file": "",
        "processed_keyword": "$InboxBot",
        "handled_folder": "",
        "sent_folder": "Sent",
        "max_message_size": "25MB",
        "idle_renew": "25m",
    },
    "outgoing": {"transport": "maildir:mail/sent", "starttls": "auto", "ca_file": "",
                 "password_env": "INBOX_BOT_SMTP_PASSWORD", "password_file": "", "timeout": "30s",
                 "max_attempts": 10, "retry_backoff": "1m", "retry_backoff_max": "1h",
                 "max_per_recipient_per_hour": 10, "max_per_request_per_day": 10,
                 "max_per_address_per_day": 20},
    "database": {"url": "sqlite:///state.db"},
    "security": {"trusted_authserv_ids": ["mx.clickport.io"], "own_domains": [], "token_max_age": "30d",
                 "verify_dkim": False, "address_change_window": "30d", "require_token_for_confirm": True},
    "workflow": {"auto_ask": False, "language": "en"},
    "intake": {"app_sender": "app@clickport.io"},
    "erasure": {"cooling_off": "1h", "plan": "", "max_attempts": 5, "retry_backoff": "1m", "lease": "1h",
                "backup_days": 30, "audit_key_env": "INBOX_BOT_AUDIT_KEY"},
    "paths": {"rules": "", "templates": ""},
    "sla": {},
}
FREE_FORM = {"sla"}  # validated by its own module (inbox_bot.sla)


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key it is about."""


@dataclass(frozen=True)
class ImapOptions:
    """The ``[mailbox]`` keys only the IMAP source reads (see inbox_bot.mail.imap_source)."""

    password_env: str = "INBOX_BOT_IMAP_PASSWORD"
    password_file: Path | None = None
    ca_file: Path | None = None
    processed_keyword: str = "$InboxBot"
    handled_folder: str = ""
    sent_folder: str = "Sent"
    max_message_size: int = 25 * 10**6
    idle_renew: timedelta = timedelta(minutes=25)


@dataclass(frozen=True)
class ImapUrl:
    """``imap[s]://USER@HOST[:PORT][/MAILBOX]``, split; the password never lives in the URL."""

    tls: bool
    user: str
    host: str
    port: int
    mailbox: str

    def __str__(self) -> str:
        return f"{'imaps' if self.tls else 'imap'}://{self.user}@{self.host}:{self.port}/{self.mailbox}"


def _split_server_url(value: str, key: str, kind: str, form: str, section: str) -> tuple[SplitResult, int | None]:
    """urlsplit with one-line errors; a password in the URL is refused (secrets live in env or files)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{key}: {value!r} is not an {kind} URL ({form}): {exc}") from exc
    if parts.scheme not in (kind.lower(), kind.lower() + "s") or not parts.hostname:
        raise ConfigError(f"{key}: {value!r} is not an {kind} URL ({form})")
    if parts.password is not None:
        raise ConfigError(f"{key}: no password in the URL; name an environment variable in {section}.password_env "
                          f"or a file in {section}.password_file")
    return parts, port


def parse_imap_url(value: str, key: str = "mailbox.source") -> ImapUrl:
    """Split an IMAP source URL; user and mailbox may be %-encoded (``support%40clickport.io``)."""
    form = "imap://USER@HOST:PORT/MAILBOX or imaps://..."
    parts, port = _split_server_url(value, key, "IMAP", form, "mailbox")
    if not parts.username:
        raise ConfigError(f"{key}: {value!r} names no user ({form})")
    if parts.query or parts.fragment:
        raise ConfigError(f"{key}: {value!r}: query strings and fragments are not supported ({form})")
    tls = parts.scheme == "imaps"
    return ImapUrl(tls=tls, user=unquote(parts.username), host=parts.hostname, port=port or (993 if tls else 143),
                   mailbox=unquote(parts.path.lstrip("/")) or "INBOX")


def parse_size(value: Any, key: str) -> int:
    """'25MB' (10**6), '10MiB' (2**20), '500KB' or a number of bytes; must be positive."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    size = int(float(m.group(1)) * _UNIT_BYTES[(m.group(2) or "b").lower()]) if m else 0
    if size <= 0:
        raise ConfigError(f"{key}: {value!r} is not a size (use e.g. \"25MB\", \"10MiB\" or a number of bytes)")
    return size


@dataclass(frozen=True)
class ErasureSettings:
    """The ``[erasure]`` keys the worker and the purge read (``cooling_off`` stays on Config)."""

    plan: Path | None = None  # None: the packaged rules/erasure.toml (or one in paths.rules)
    max_attempts: int = 5
    retry_backoff: timedelta = timedelta(minutes=1)
    lease: timedelta = timedelta(hours=1)
    backup_days: int = 30
    audit_key_env: str = "INBOX_BOT_AUDIT_KEY"


STARTTLS_MODES = ("auto", "required", "off")


@dataclass(frozen=True)
class OutgoingSettings:
    """The ``[outgoing]`` keys besides ``transport``: the SMTP connection, retries and the rate limit."""

    starttls: str = "auto"  # auto: when the server offers it; required: refuse to send without it; off
    ca_file: Path | None = None
    password_env: str = "INBOX_BOT_SMTP_PASSWORD"
    password_file: Path | None = None
    timeout: timedelta = timedelta(seconds=30)
    max_attempts: int = 10
    retry_backoff: timedelta = timedelta(minutes=1)
    retry_backoff_max: timedelta = timedelta(hours=1)
    max_per_recipient_per_hour: int = 10
    max_per_request_per_day: int = 10  # customer mails queued per request in 24 h (threats row 11: loops)
    max_per_address_per_day: int = 20  # customer mails queued per address in 24 h, across its requests


@dataclass(frozen=True)
class SmtpUrl:
    """``smtp[s]://[USER@]HOST[:PORT]``, split; the password never lives in the URL."""

    tls: bool
    user: str | None
    host: str
    port: int

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{'smtps' if self.tls else 'smtp'}://{user}{self.host}:{self.port}"


def parse_smtp_url(value: str, key: str = "outgoing.transport") -> SmtpUrl:
    """Split an SMTP transport URL; the user may be %-encoded (``bot%40clickport.io``)."""
    form = "smtp://[USER@]HOST:PORT or smtps://..."
    parts, port = _split_server_url(value, key, "SMTP", form, "outgoing")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(f"{key}: {value!r}: paths, query strings and fragments are not supported ({form})")
    tls = parts.scheme == "smtps"
    return SmtpUrl(tls=tls, user=unquote(parts.username) if parts.username else None, host=parts.hostname,
                   port=port or (465 if tls else 25))


@dataclass(frozen=True)
class Config:
    base_dir: Path
    mailbox_address: str
    source: str
    staff_address: str
    from_name: str
    poll_interval: timedelta
    transport: str
    database_url: str
    trusted_authserv_ids: tuple[str, ...]
    own_domains: tuple[str, ...]
    auto_ask: bool
    language: str
    cooling_off: timedelta
    app_sender: str
    rules_dir: Path
    templates_dir: Path
    sla: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None
    imap: ImapOptions = field(default_factory=ImapOptions)
    erasure: ErasureSettings = field(default_factory=ErasureSettings)
    outgoing: OutgoingSettings = field(default_factory=OutgoingSettings)
    token_max_age: timedelta = timedelta(days=30)  # a reply token older than this (at our receipt) cannot confirm
    verify_dkim: bool = False  # our own DKIM check (needs DNS) on top of the trusted Authentication-Results
    address_change_window: timedelta = timedelta(days=30)  # a request this soon after an email change: a person
    require_token_for_confirm: bool = True  # a confirm needs the request's reply token in To/Cc

    @property
    def mailbox_domain(self) -> str:
        return self.mailbox_address.rpartition("@")[2]

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def parse_duration(value: Any, key: str) -> timedelta:
    """'90s', '30m', '1h', '2d' or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    m = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ConfigError(f"{key}: {value!r} is not a duration (use e.g. \"0s\", \"30m\", \"1h\", \"2d\")")
    return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def _check_sections(data: dict[str, Any]) -> None:
    for section, values in data.items():
        if section not in DEFAULTS:
            raise ConfigError(f"{section}: unknown section (known: {', '.join(DEFAULTS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: must be a table ([{section}])")
        if section in FREE_FORM:
            continue
        for key in values:
            if key not in DEFAULTS[section]:
                raise ConfigError(f"{section}.{key}: unknown key (known: {', '.join(DEFAULTS[section])})")


def _str(merged: dict, section: str, key: str) -> str:
    value = merged[section][key]
    if not isinstance(value, str):
        raise ConfigError(f"{section}.{key}: must be a string, got {type(value).__name__}")
    return value


def _bool(merged: dict, section: str, key: str) -> bool:
    value = merged[section][key]
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{key}: must be true or false, got {value!r}")
    return value


def _address(merged: dict, section: str, key: str) -> str:
    value = _str(merged, section, key).strip().lower()
    if not _ADDRESS.match(value):
        raise ConfigError(f"{section}.{key}: {value!r} is not an email address")
    return value


def _str_list(merged: dict, section: str, key: str) -> tuple[str, ...]:
    value = merged[section][key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{section}.{key}: must be a list of non-empty strings")
    return tuple(v.strip().lower() for v in value)


def _scheme(value: str, key: str, allowed: tuple[str, ...]) -> str:
    scheme = value.split(":", 1)[0]
    if ":" not in value or scheme not in allowed:
        raise ConfigError(f"{key}: {value!r} must start with one of {', '.join(s + ':' for s in allowed)}")
    return value


def _imap_options(merged: dict, base_dir: Path, source: str) -> ImapOptions:
    """The IMAP keys, checked whatever the source (a typo should not wait for the switch to IMAP)."""
    if source.startswith(("imap:", "imaps:")):
        parse_imap_url(source)
    env = _str(merged, "mailbox", "password_env").strip()
    if not _ENV_NAME.match(env):
        raise ConfigError(f"mailbox.password_env: {env!r} is not an environment variable name")
    files: dict[str, Path | None] = {}
    for key in ("password_file", "ca_file"):
        value = _str(merged, "mailbox", key).strip()
        path = (base_dir / Path(value).expanduser()) if value else None
        if path is not None and not path.is_file():
            raise ConfigError(f"mailbox.{key}: file not found: {path}")
        files[key] = path
    keyword = _str(merged, "mailbox", "processed_keyword").strip()
    if not _KEYWORD.match(keyword):
        raise ConfigError(f"mailbox.processed_keyword: {keyword!r} is not an IMAP keyword (e.g. \"$InboxBot\")")
    folders = {k: _str(merged, "mailbox", k).strip() for k in ("handled_folder", "sent_folder")}
    for key, value in folders.items():
        if any(c in value for c in "\r\n\"*%"):
            raise ConfigError(f"mailbox.{key}: {value!r} is not a folder name")
    if folders["handled_folder"].upper() == "INBOX":
        raise ConfigError("mailbox.handled_folder: must not be INBOX (leave it empty to keep handled mail there)")
    renew = parse_duration(merged["mailbox"]["idle_renew"], "mailbox.idle_renew")
    if not timedelta(seconds=1) <= renew <= timedelta(minutes=29):
        raise ConfigError(f"mailbox.idle_renew: {renew} is outside 1s..29m (servers may drop an IDLE after 30m)")
    return ImapOptions(password_env=env, password_file=files["password_file"], ca_file=files["ca_file"],
                       processed_keyword=keyword, handled_folder=folders["handled_folder"],
                       sent_folder=folders["sent_folder"],
                       max_message_size=parse_size(merged["mailbox"]["max_message_size"], "mailbox.max_message_size"),
                       idle_renew=renew)


def _positive_int(merged: dict, section: str, key: str) -> int:
    value = merged[section][key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{section}.{key}: must be a whole number of at least 1, got {value!r}")
    return value


def _erasure_settings(merged: dict, base_dir: Path) -> ErasureSettings:
    """The plan file must exist here; its content is checked by inbox_bot.erasure.plan at start-up."""
    plan = _str(merged, "erasure", "plan").strip()
    path = (base_dir / Path(plan).expanduser()) if plan else None
    if path is not None and not path.is_file():
        raise ConfigError(f"erasure.plan: file not found: {path}")
    env = _str(merged, "erasure", "audit_key_env").strip()
    if not _ENV_NAME.match(env):
        raise ConfigError(f"erasure.audit_key_env: {env!r} is not an environment variable name")
    return ErasureSettings(
        plan=path, max_attempts=_positive_int(merged, "erasure", "max_attempts"),
        retry_backoff=parse_duration(merged["erasure"]["retry_backoff"], "erasure.retry_backoff"),
        lease=parse_duration(merged["erasure"]["lease"], "erasure.lease"),
        backup_days=_positive_int(merged, "erasure", "backup_days"), audit_key_env=env)


def _outgoing_settings(merged: dict, base_dir: Path, transport: str) -> OutgoingSettings:
    """The SMTP and delivery keys, checked whatever the transport (a typo should not wait for the switch)."""
    if transport.startswith(("smtp:", "smtps:")):
        parse_smtp_url(transport)
    starttls = _str(merged, "outgoing", "starttls").strip().lower()
    if starttls not in STARTTLS_MODES:
        raise ConfigError(f"outgoing.starttls: {starttls!r} must be one of {', '.join(STARTTLS_MODES)}")
    env = _str(merged, "outgoing", "password_env").strip()
    if not _ENV_NAME.match(env):
        raise ConfigError(f"outgoing.password_env: {env!r} is not an environment variable name")
    files: dict[str, Path | None] = {}
    for key in ("password_file", "ca_file"):
        value = _str(merged, "outgoing", key).strip()
        path = (base_dir / Path(value).expanduser()) if value else None
        if path is not None and not path.is_file():
            raise ConfigError(f"outgoing.{key}: file not found: {path}")
        files[key] = path
    timeout = parse_duration(merged["outgoing"]["timeout"], "outgoing.timeout")
    if timeout <= timedelta(0):
        raise ConfigError("outgoing.timeout: must be more than 0s")
    backoff = parse_duration(merged["outgoing"]["retry_backoff"], "outgoing.retry_backoff")
    backoff_max = parse_duration(merged["outgoing"]["retry_backoff_max"], "outgoing.retry_backoff_max")
    if backoff <= timedelta(0) or backoff_max < backoff:
        raise ConfigError(f"outgoing.retry_backoff_max: must be at least outgoing.retry_backoff ({backoff}), "
                          "which must be more than 0s")
    return OutgoingSettings(
        starttls=starttls, ca_file=files["ca_file"], password_env=env, password_file=files["password_file"],
        timeout=timeout, max_attempts=_positive_int(merged, "outgoing", "max_attempts"),
        retry_backoff=backoff, retry_backoff_max=backoff_max,
        max_per_recipient_per_hour=_positive_int(merged, "outgoing", "max_per_recipient_per_hour"),
        max_per_request_per_day=_positive_int(merged, "outgoing", "max_per_request_per_day"),
        max_per_address_per_day=_positive_int(merged, "outgoing", "max_per_address_per_day"))


def build_config(data: dict[str, Any], base_dir: Path, file: Path | None = None) -> Config:
    """Validate ``data`` (parsed TOML) over the defaults."""
    _check_sections(data)
    merged = {s: {**d, **data.get(s, {})} for s, d in DEFAULTS.items()}
    auto_ask = _bool(merged, "workflow", "auto_ask")
    address = _address(merged, "mailbox", "address")
    own = _str_list(merged, "security", "own_domains") or (address.rpartition("@")[2],)
    trusted = _str_list(merged, "security", "trusted_authserv_ids")
    if not trusted:
        raise ConfigError("security.trusted_authserv_ids: needs at least one authserv-id (your MX's)")
    db_url = _str(merged, "database", "url")
    if not re.match(r"^[a-z][a-z0-9+]*://", db_url):
        raise ConfigError(f"database.url: {db_url!r} is not an SQLAlchemy URL (e.g. sqlite:///state.db)")
    if db_url.startswith("sqlite:///") and not db_url.startswith("sqlite:////") and db_url != "sqlite://":
        rel = db_url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            db_url = "sqlite:///" + str(base_dir / rel)
    rules = _str(merged, "paths", "rules")
    templates = _str(merged, "paths", "templates")
    cfg = Config(
        base_dir=base_dir,
        mailbox_address=address,
        source=_scheme(_str(merged, "mailbox", "source"), "mailbox.source", ("maildir", "imap", "imaps")),
        staff_address=_address(merged, "mailbox", "staff_address"),
        from_name=_str(merged, "mailbox", "from_name"),
        poll_interval=parse_duration(merged["mailbox"]["poll_interval"], "mailbox.poll_interval"),
        transport=_scheme(_str(merged, "outgoing", "transport"), "outgoing.transport", ("maildir", "smtp", "smtps")),
        database_url=db_url,
        trusted_authserv_ids=trusted,
        own_domains=own,
        auto_ask=auto_ask,
        language=_str(merged, "workflow", "language"),
        cooling_off=parse_duration(merged["erasure"]["cooling_off"], "erasure.cooling_off"),
        app_sender=_address(merged, "intake", "app_sender"),
        rules_dir=(base_dir / rules) if rules else default_rules_dir(),
        templates_dir=(base_dir / templates) if templates else default_templates_dir(),
        sla=dict(merged["sla"]),
        file=file,
        imap=_imap_options(merged, base_dir, _str(merged, "mailbox", "source")),
        erasure=_erasure_settings(merged, base_dir),
        outgoing=_outgoing_settings(merged, base_dir, _str(merged, "outgoing", "transport")),
        token_max_age=parse_duration(merged["security"]["token_max_age"], "security.token_max_age"),
        verify_dkim=_bool(merged, "security", "verify_dkim"),
        address_change_window=parse_duration(merged["security"]["address_change_window"],
                                             "security.address_change_window"),
        require_token_for_confirm=_bool(merged, "security", "require_token_for_confirm"),
    )
    if cfg.token_max_age <= timedelta(0):
        raise ConfigError("security.token_max_age: must be more than 0s")
    for key, p in (("paths.rules", cfg.rules_dir), ("paths.templates", cfg.templates_dir)):
        if not p.is_dir():
            raise ConfigError(f"{key}: folder not found: {p}")
    return cfg


def find_config_file(explicit: str | None) -> Path | None:
    """--config FILE, else $INBOX_BOT_CONFIG, else ./inbox-bot.toml if present, else None (defaults)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    local = Path.cwd() / DEFAULT_FILE
    return local if local.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    path = find_config_file(explicit)
    if path is None:
        return build_config({}, Path.cwd())
    if not path.is_file():
        raise ConfigError(f"config: file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from exc
    return build_config(data, path.resolve().parent, path.resolve())
