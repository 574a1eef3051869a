"""After erasure: the "erased" mail, an urgent flag for a reply inside the restore window, and the
bot's own purge of the customer's data once the backup window has passed."""

from __future__ import annotations

import sqlite3
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.cli import main
from inbox_bot.erasure.purge import KEY_FILE, audit_key, email_hmac, find_erased
from inbox_bot.mail.samples import build_reply, last_sent
from tests.conftest import drop, sent_dir

ANA = "ana.ruiz@example.net"
BEN = "ben.okafor@example.org"
ANA_WORDS = "Yes, please go ahead and delete my account. Ana Ruiz, Calle Mayor 5"
KEY_ENV = "INBOX_BOT_TEST_AUDIT_KEY"


@pytest.fixture
def bot(make_app, monkeypatch) -> App:
    monkeypatch.setenv(KEY_ENV, "audit-key-for-tests")
    return make_app(erasure={"cooling_off": "0s", "audit_key_env": KEY_ENV})


def reply(app: App, addr: str, text: str, name: str) -> None:
    drop(app, build_reply(last_sent(sent_dir(app))[addr], addr, text), name)


def erased_by_reply(app: App) -> int:
    """Ana asks, confirms by mail, is erased; Ben asks and cancels (his data must stay)."""
    rid = commands.add_request(app, ANA, "acc_1001", "moving to another tool, call me on +34 600 000 000",
                               "app:test", previous_email="ana.old@example.net",
                               email_changed_at=app.clock() - timedelta(days=400))["id"]
    ben = commands.add_request(app, BEN, "acc_1002", "", "app:test")["id"]
    for r in (rid, ben):
        commands.staff_transition(app, "ask", r, "staff:test", "")
    app.poll_once()
    reply(app, ANA, ANA_WORDS, "1.ana")
    reply(app, BEN, "I changed my mind, please keep my account.", "2.ben")
    app.poll_once()
    assert app.run_erasures() == {"done": 1}
    app.poll_once()
    return rid


def test_the_erased_mail_says_what_went_what_stays_and_for_how_long(bot: App) -> None:
    erased_by_reply(bot)
    msg = last_sent(sent_dir(bot))[ANA]
    body = " ".join(msg.get_body(("plain",)).get_content().split())
    for phrase in ("has been deleted", "every login session", "API keys", "subscription has been cancelled",
                   "Invoices and payment receipts", "Paddle transaction ID", "7 years", "within 24 hours",
                   "about 30 days"):
        assert phrase in body, phrase


def test_a_reply_inside_the_restore_window_is_an_urgent_flag(bot: App, clock, capsys) -> None:
    rid = erased_by_reply(bot)
    clock.advance(hours=3)
    reply(bot, ANA, "Oh no, I did not mean it. Can you restore my account?", "3.ana")
    assert bot.poll_once()["flag_human"] == 1
    [flag] = [f for f in commands.list_flags(bot) if f["request_id"] == rid]
    assert flag["urgent"] is True
    erased_at = clock.now - timedelta(hours=3)
    assert datetime.fromisoformat(flag["sla_due_at"]) <= erased_at + timedelta(hours=24)  # a person before it closes
    staff = last_sent(sent_dir(bot))["support-staff@clickport.io"]
    assert str(staff["Subject"]).startswith("[inbox-bot] URGENT (restore window open): Request #")
    cfg = bot.cfg.base_dir / "bot.toml"
    cfg.write_text(f'[erasure]\ncooling_off = "0s"\naudit_key_env = "{KEY_ENV}"\n')
    assert main(["--config", str(cfg), "flags", "list"]) == 0
    assert "URGENT" in capsys.readouterr().out


def test_a_reply_after_the_restore_window_is_flagged_but_not_urgent(bot: App, clock) -> None:
    rid = erased_by_reply(bot)
    clock.advance(hours=25)
    reply(bot, ANA, "Can you restore my account?", "3.ana")
    assert bot.poll_once()["flag_human"] == 1
    [flag] = [f for f in commands.list_flags(bot) if f["request_id"] == rid]
    assert flag["urgent"] is False


def every_text(db: Path) -> str:
    """Every text and blob value of every table of the bot's database, as one string."""
    conn = sqlite3.connect(db)
    out = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            out += [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row]
    conn.close()
    return "\n".join(out).lower()


def test_purge_after_the_backup_window_keeps_only_a_minimal_record(bot: App, clock) -> None:
    rid = erased_by_reply(bot)
    reply(bot, ANA, "Thanks. Ana", "3.ana")  # a reply after erasure: flagged, with her words
    bot.poll_once()
    db = Path(bot.cfg.database_url.removeprefix("sqlite:///"))
    assert ANA in every_text(db) and "calle mayor" in every_text(db)

    clock.advance(days=29)
    assert bot.purge_expired() == {}
    clock.advance(days=1, minutes=1)
    assert bot.purge_expired() == {"purged": 1}
    assert bot.purge_expired() == {}

    text = every_text(db)
    for personal in (ANA, "calle mayor", "+34 600", "ana ruiz", "acc_1001", "thanks. ana", "ana.old@"):
        assert personal not in text, personal
    assert BEN in text  # a cancelled request is ordinary support history: untouched
    view = commands.show_request(bot, rid)
    assert (view["email"], view["note"], view["account_id"], view["state"]) == ("", "", None, "erased")
    assert [e["event"] for e in view["timeline"]][-1] == "purged"
    assert {"confirm", "start_erasure", "finish_erasure"} <= {e["event"] for e in view["timeline"]}
    key = audit_key(KEY_ENV, bot.cfg.base_dir)
    assert key == b"audit-key-for-tests"
    [found] = find_erased(bot.engine, key, ANA.upper())
    assert found["id"] == rid and found["erased_at"] and found["purged_at"]
    assert email_hmac(key, ANA) in every_text(db)
    assert find_erased(bot.engine, b"another key", ANA) == []


def test_purge_command_and_the_key_file_fallback(make_app, clock, monkeypatch, capsys) -> None:
    monkeypatch.delenv("INBOX_BOT_AUDIT_KEY", raising=False)
    app = make_app(erasure={"cooling_off": "0s", "backup_days": 2})
    assert app.purge_expired() == {} and not (app.cfg.base_dir / KEY_FILE).exists()
    rid = commands.add_request(app, ANA, "acc_1001", "", "staff:test")["id"]
    commands.staff_transition(app, "confirm", rid, "staff:test", "phone")
    app.run_erasures()
    clock.advance(days=2, seconds=1)
    assert app.purge_expired() == {"purged": 1}
    key_file = app.cfg.base_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_text().strip()) == 64
    assert find_erased(app.engine, audit_key("INBOX_BOT_AUDIT_KEY", app.cfg.base_dir), ANA)[0]["id"] == rid
    cfg = app.cfg.base_dir / "bot.toml"
    cfg.write_text('[erasure]\nbackup_days = 2\n')
    assert main(["--config", str(cfg), "erasure", "purge", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "{}"
