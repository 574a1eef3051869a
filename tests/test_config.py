"""Configuration: defaults, relative paths, and one-line errors that name the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from inbox_bot.cli import main
from inbox_bot.config import ConfigError, build_config, load_config


def test_defaults_are_the_embedded_setup(tmp_path: Path) -> None:
    cfg = build_config({}, tmp_path)
    assert cfg.source == "maildir:mail/inbox"
    assert cfg.transport == "maildir:mail/sent"
    assert cfg.database_url == f"sqlite:///{tmp_path / 'state.db'}"
    assert cfg.cooling_off == timedelta(hours=1)
    assert cfg.trusted_authserv_ids == ("mx.clickport.io",)
    assert (cfg.rules_dir / "autoreply.toml").is_file()
    assert cfg.templates_dir.is_dir()


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    f = tmp_path / "etc" / "bot.toml"
    f.write_text('[database]\nurl = "sqlite:///data/bot.db"\n[erasure]\ncooling_off = "30m"\n')
    cfg = load_config(str(f))
    assert cfg.database_url == f"sqlite:///{tmp_path / 'etc' / 'data' / 'bot.db'}"
    assert cfg.cooling_off == timedelta(minutes=30)
    assert cfg.path("mail/inbox") == tmp_path / "etc" / "mail" / "inbox"


@pytest.mark.parametrize(("data", "key"), [
    ({"erasure": {"cooling_off": "soon"}}, "erasure.cooling_off"),
    ({"workflow": {"auto_ask": "yes"}}, "workflow.auto_ask"),
    ({"mailbox": {"address": "not-an-address"}}, "mailbox.address"),
    ({"mailbox": {"source": "pop3://x"}}, "mailbox.source"),
    ({"outgoing": {"transport": "carrier-pigeon"}}, "outgoing.transport"),
    ({"security": {"trusted_authserv_ids": []}}, "security.trusted_authserv_ids"),
    ({"security": {"trusted_authserv_id": ["x"]}}, "security.trusted_authserv_id"),
    ({"databse": {}}, "databse"),
    ({"paths": {"rules": "nowhere"}}, "paths.rules"),
    ({"database": {"url": "state.db"}}, "database.url"),
])
def test_bad_values_name_their_key(tmp_path: Path, data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(data, tmp_path)
    assert str(err.value).startswith(key + ":")


def test_bad_config_is_one_line_on_stderr_not_a_traceback(tmp_path: Path, capsys) -> None:
    f = tmp_path / "bot.toml"
    f.write_text('[erasure]\ncooling_off = "later"\n')
    assert main(["--config", str(f), "requests", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "erasure.cooling_off" in err and "Traceback" not in err


def test_bad_sla_section_names_the_key(tmp_path: Path, capsys) -> None:
    f = tmp_path / "bot.toml"
    f.write_text('[sla]\ntimezone = "Mars/Olympus_Mons"\n')
    assert main(["--config", str(f), "sla", "deadline", "2026-12-01T10:00:00+01:00"]) == 2
    assert "sla.timezone" in capsys.readouterr().err


def test_env_variable_names_the_config(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "x.toml"
    f.write_text('[mailbox]\naddress = "help@example.com"\n')
    monkeypatch.setenv("INBOX_BOT_CONFIG", str(f))
    assert load_config().mailbox_address == "help@example.com"


def test_security_switches_must_be_booleans(tmp_path) -> None:
    for key in ("require_token_for_confirm", "verify_dkim"):
        with pytest.raises(ConfigError, match=rf"^security\.{key}: must be true or false"):
            build_config({"security": {key: "yes"}}, tmp_path)
