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

from inbox_bot.resources import default_rules_dir, default_templates_dir

ENV_CONFIG = "INBOX_BOT_CONFIG"
DEFAULT_FILE = "inbox-bot.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?\s*$")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}

# section -> key -> default; a key not listed here is an error (typos must not pass silently).
DEFAULTS: dict[str, dict[str, Any]] = {
    "mailbox": {
        "address": "support@clickport.io",
        "source": "maildir:mail/inbox",
        "staff_address": "support-staff@clickport.io",
        "from_name": "Clickport Support",
        "poll_interval": "30s",
    },
    "outgoing": {"transport": "maildir:mail/sent"},
    "database": {"url": "sqlite:///state.db"},
    "security": {"trusted_authserv_ids": ["mx.clickport.io"], "own_domains": []},
    "workflow": {"auto_ask": False, "language": "en"},
    "intake": {"app_sender": "app@clickport.io"},
    "erasure": {"cooling_off": "1h"},
    "paths": {"rules": "", "templates": ""},
    "sla": {},
}
FREE_FORM = {"sla"}  # validated by its own module (inbox_bot.sla)


class ConfigError(ValueError):
    """A bad configuration value; the message starts with the key it is about."""


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


def build_config(data: dict[str, Any], base_dir: Path, file: Path | None = None) -> Config:
    """Validate ``data`` (parsed TOML) over the defaults."""
    _check_sections(data)
    merged = {s: {**d, **data.get(s, {})} for s, d in DEFAULTS.items()}
    auto_ask = merged["workflow"]["auto_ask"]
    if not isinstance(auto_ask, bool):
        raise ConfigError(f"workflow.auto_ask: must be true or false, got {auto_ask!r}")
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
    )
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
