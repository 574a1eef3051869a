"""Outgoing mail through a real SMTP server (aiosmtpd, tests/smtp_server.py): what arrives, retries and
backoff, permanent failures, outages, the per-recipient rate limit, TLS, login, and the one window SMTP
cannot close (a crash between the server's 250 and our commit)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.cli import main
from inbox_bot.config import ConfigError, OutgoingSettings, build_config, parse_smtp_url
from inbox_bot.mail.smtp_transport import SmtpTransport
from inbox_bot.mail.transports import TransportError, TransportUnavailable, open_transport
from inbox_bot.store.db import transaction
from inbox_bot.store.models import Flag, OutboxMail
from tests.conftest import bot_executable
from tests.smtp_server import SmtpServer

ANA = "ana@example.net"
SENDER = "support@clickport.io"
STAFF = "support-staff@clickport.io"


def config_text(server: SmtpServer, extra: str = "") -> str:
    return f"""\
[mailbox]
address = "{SENDER}"
source = "maildir:mail/inbox"
[outgoing]
transport = "{server.url}"
{extra}
[database]
url = "sqlite:///state.db"
[erasure]
cooling_off = "0s"
"""


def run_json(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str):  # noqa: ANN201
    capsys.readouterr()
    assert main(["--config", str(cfg), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def smtp_app(make_app, server: SmtpServer, **outgoing: object):  # noqa: ANN001, ANN201
    return make_app(outgoing={"transport": server.url, **outgoing})


def queue(app, to: str, n: int = 1, kind: str = "test") -> list[int]:  # noqa: ANN001
    """Put ``n`` plain mails to ``to`` in the outbox, as a transition would."""
    ids = []
    with transaction(app.engine) as s:
        for i in range(n):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = SENDER, to, f"mail {i}"
            msg["Message-ID"] = make_msgid(domain="clickport.io")
            msg.set_content(f"hello {i}")
            row = OutboxMail(kind=kind, to_addr=to, message_id=msg["Message-ID"], raw=msg.as_bytes(),
                             created_at=app.clock())
            s.add(row)
            s.flush()
            ids.append(row.id)
    return ids


def rows(app) -> dict[int, OutboxMail]:  # noqa: ANN001
    with transaction(app.engine) as s:
        return {r.id: r for r in s.exec(select(OutboxMail).order_by(OutboxMail.id)).all()}


def open_flags(app) -> list[Flag]:  # noqa: ANN001
    with transaction(app.engine) as s:
        return list(s.exec(select(Flag).where(Flag.status == "open")).all())


# --- through the command line --------------------------------------------------------------------

def test_receipt_and_ask_arrive_threaded(capsys, tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = tmp_path / "inbox-bot.toml"
    cfg.write_text(config_text(smtp_server))
    req = run_json(capsys, cfg, "request", "add", "--email", ANA)
    assert main(["--config", str(cfg), "request", "ask", str(req["id"])]) == 0
    assert run_json(capsys, cfg, "poll", "--once")["outbox_sent"] == 2

    receipt, ask = smtp_server.accepted
    assert [(m.mail_from, m.rcpt_tos) for m in (receipt, ask)] == [(SENDER, (ANA,))] * 2
    shown = run_json(capsys, cfg, "request", "show", str(req["id"]))
    assert [(m["kind"], m["status"]) for m in shown["mails"]] == [("received", "sent"), ("ask", "sent")]
    r, a = receipt.message, ask.message
    assert [r["Message-ID"], a["Message-ID"]] == [m["message_id"] for m in shown["mails"]]
    assert r["To"] == a["To"] == ANA
    assert a["In-Reply-To"] == r["Message-ID"] and r["Message-ID"] in a["References"]
    assert r["Auto-Submitted"] == a["Auto-Submitted"] == "auto-replied"
    assert a["Reply-To"].startswith("support+") and a["Reply-To"].endswith("@clickport.io")

    assert run_json(capsys, cfg, "poll", "--once")["outbox_sent"] == 0
    assert len(smtp_server.accepted) == 2


def test_process_killed_between_250_and_commit_resends_only_that_mail(tmp_path: Path,
                                                                      smtp_server: SmtpServer) -> None:
    """The at-least-once window, measured: the server accepts mail 2, the process dies (SIGKILL) before
    it can record that; after the restart only mail 2 goes again (same Message-ID), nothing is lost."""
    cfg = tmp_path / "inbox-bot.toml"
    cfg.write_text(config_text(smtp_server))
    bot = bot_executable()
    env = {**os.environ, "INBOX_BOT_CONFIG": str(cfg)}
    for who in ("a", "b", "c"):
        subprocess.run([bot, "request", "add", "--email", f"{who}@example.net"], env=env, check=True,
                       capture_output=True, timeout=60)
    poll = subprocess.Popen([bot, "poll", "--once"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_at_second(got) -> None:  # noqa: ANN001
        if got.rcpt_tos == ("b@example.net",):
            os.kill(poll.pid, signal.SIGKILL)

    smtp_server.handler.on_data = kill_at_second
    assert poll.wait(timeout=60) == -signal.SIGKILL
    smtp_server.handler.on_data = None

    app_rows = {r["to"]: r for r in _outbox_via_sql(tmp_path / "state.db")}
    assert [app_rows[f"{w}@example.net"]["status"] for w in "abc"] == ["sent", "pending", "pending"]
    # The claim keeps b's mail for its backoff (as after any failed attempt); let that time pass.
    _sql(tmp_path / "state.db", "UPDATE outbox_mail SET next_attempt_at = NULL")
    subprocess.run([bot, "poll", "--once"], env=env, check=True, capture_output=True, timeout=60)

    counts = {w: len(smtp_server.to(f"{w}@example.net")) for w in "abc"}
    assert counts == {"a": 1, "b": 2, "c": 1}
    first, second = smtp_server.to("b@example.net")
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert {r["status"] for r in _outbox_via_sql(tmp_path / "state.db")} == {"sent"}


def _sql(db: Path, statement: str) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute(statement).fetchall()


def _outbox_via_sql(db: Path) -> list[dict]:
    return [{"to": to, "status": status} for to, status in _sql(db, "SELECT to_addr, status FROM outbox_mail")]


# --- retries, failures, outages ------------------------------------------------------------------

def test_4xx_then_success_after_backoff_delivered_once(make_app, clock, smtp_server: SmtpServer) -> None:
    app = smtp_app(make_app, smtp_server)
    [mail] = queue(app, ANA)
    smtp_server.fail_next(1, "451 4.3.0 greylisted, try again later")
    assert app.deliver_outbox() == {"sent": 0, "retry": 1, "deferred": 0, "failed": 0}
    row = rows(app)[mail]
    assert (row.status, row.attempts) == ("pending", 1) and "451" in row.last_error
    assert app.deliver_outbox()["sent"] == 0  # not due yet: no busy retry
    clock.advance(seconds=app.cfg.outgoing.retry_backoff.total_seconds())
    assert app.deliver_outbox()["sent"] == 1
    row = rows(app)[mail]
    assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == ("sent", 2, None, None)
    clock.advance(days=1)
    assert app.deliver_outbox()["sent"] == 0
    assert len(smtp_server.to(ANA)) == 1 and smtp_server.handler.refused == [(ANA, "451 4.3.0 greylisted, try "
                                                                              "again later")]


def test_backoff_grows_and_is_capped(make_app, clock, smtp_server: SmtpServer) -> None:
    app = smtp_app(make_app, smtp_server, retry_backoff="1m", retry_backoff_max="4m", max_attempts=6)
    [mail] = queue(app, ANA)
    smtp_server.fail_next(5, "421 4.4.2 busy", stage="rcpt")
    waits = []
    for _ in range(5):
        assert app.deliver_outbox()["retry"] == 1
        waits.append((rows(app)[mail].next_attempt_at.replace(tzinfo=clock.now.tzinfo) - clock.now).total_seconds())
        clock.advance(minutes=4)
    nominal = [60, 120, 240, 240, 240]  # base * 2**(n-1), capped; jitter takes off up to a quarter
    assert all(0.75 * n <= w <= n for w, n in zip(waits, nominal, strict=True)), waits
    assert app.deliver_outbox()["sent"] == 1 and len(smtp_server.to(ANA)) == 1


def test_5xx_fails_flags_a_person_and_is_never_retried(make_app, clock, smtp_server: SmtpServer) -> None:
    app = smtp_app(make_app, smtp_server)
    req = commands.add_request(app, ANA, None, "", "staff:test")
    smtp_server.refuse(ANA)
    assert app.deliver_outbox() == {"sent": 0, "retry": 0, "deferred": 0, "failed": 1}
    [flag] = open_flags(app)
    assert flag.request_id == req["id"]
    assert flag.reason.startswith(f"received mail to {ANA} failed permanently: RCPT TO <{ANA}>: 550 5.1.1")
    assert app.deliver_outbox()["sent"] == 1  # the staff notification about it
    [note] = smtp_server.to(STAFF)
    assert "550" in note.content.decode()
    for _ in range(3):
        clock.advance(days=1)
        app.deliver_outbox()
    assert smtp_server.to(ANA) == [] and len(smtp_server.handler.refused) == 1
    assert [r.status for r in rows(app).values()] == ["failed", "sent"]


def test_5xx_after_data_fails(make_app, smtp_server: SmtpServer) -> None:
    app = smtp_app(make_app, smtp_server)
    queue(app, ANA)
    smtp_server.fail_next(1, "554 5.7.1 message rejected as spam")
    assert app.deliver_outbox()["failed"] == 1
    assert "DATA: 554 5.7.1" in open_flags(app)[0].reason


def test_failed_staff_mail_is_flagged_without_another_staff_mail(make_app, clock, smtp_server: SmtpServer) -> None:
    app = smtp_app(make_app, smtp_server)
    queue(app, STAFF, kind="staff_flag")
    smtp_server.refuse(STAFF)
    assert app.deliver_outbox()["failed"] == 1
    clock.advance(hours=1)
    assert app.deliver_outbox() == {"sent": 0, "retry": 0, "deferred": 0, "failed": 0}
    assert len(open_flags(app)) == 1 and len(rows(app)) == 1  # no notification loop


def test_attempts_exhausted_fail_and_flag(make_app, clock, smtp_server: SmtpServer) -> None:
    app = smtp_app(make_app, smtp_server, max_attempts=3)
    commands.add_request(app, ANA, None, "", "staff:test")
    smtp_server.fail_next(3, "452 4.2.2 mailbox full", stage="rcpt")
    results = []
    for _ in range(3):
        results.append(app.deliver_outbox())
        clock.advance(hours=1)
    assert [r["retry"] for r in results] == [1, 1, 0] and results[-1]["failed"] == 1
    assert "not delivered after 3 attempts: RCPT TO <ana@example.net>: 452 4.2.2" in open_flags(app)[0].reason


def test_server_down_nothing_lost_no_attempt_used(make_app, clock, smtp_server: SmtpServer, caplog) -> None:
    app = smtp_app(make_app, smtp_server, max_attempts=2)
    ids = queue(app, ANA, 3)
    smtp_server.stop()
    caplog.set_level(logging.ERROR, "inbox_bot.outbox")
    for _ in range(4):  # longer than max_attempts: an outage is not the mail's fault
        assert app.deliver_outbox() == {"sent": 0, "retry": 1, "deferred": 0, "failed": 0}
        clock.advance(minutes=1)
    assert "transport unavailable" in caplog.text and "cannot open a session" in caplog.text
    assert {(r.status, r.attempts) for r in rows(app).values()} == {("pending", 0)}
    smtp_server.start()
    clock.advance(minutes=1)
    assert app.deliver_outbox()["sent"] == 3
    assert [r.message["Message-ID"] for r in smtp_server.to(ANA)] == [rows(app)[i].message_id for i in ids]


def test_sender_refused(smtp_server: SmtpServer) -> None:
    """A 5xx to MAIL FROM is about us (relay settings), not the mail: the pass stops, the mail waits.
    552 (too big) is about this mail: permanent."""
    transport = SmtpTransport(parse_smtp_url(smtp_server.url), SENDER)
    smtp_server.handler.mail_reply = "550 5.7.1 sender not allowed to relay"
    with pytest.raises(TransportUnavailable, match="MAIL FROM <support@clickport.io>: 550 5.7.1"):
        transport.deliver(1, ANA, b"Subject: x\r\n\r\nx\r\n", 0)
    smtp_server.handler.mail_reply = "552 5.3.4 message too big"
    with pytest.raises(TransportError) as err:
        transport.deliver(2, ANA, b"Subject: x\r\n\r\nx\r\n", 0)
    assert err.value.permanent and not isinstance(err.value, TransportUnavailable)
    transport.close()


def test_one_connection_per_pass_and_reconnect_when_dropped(smtp_server: SmtpServer) -> None:
    transport = SmtpTransport(parse_smtp_url(smtp_server.url), SENDER)
    raw = b"From: support@clickport.io\r\nTo: ana@example.net\r\nSubject: x\r\n\r\nhello\r\n"
    try:
        transport.deliver(1, ANA, raw, 0)
        transport.deliver(2, ANA, raw, 0)
        smtp_server.restart()  # the server cuts the connection between two mails
        transport.deliver(3, ANA, raw, 0)
    finally:
        transport.close()
    peers = [m.peer for m in smtp_server.accepted]
    assert len(peers) == 3 and peers[0] == peers[1] != peers[2]


# --- the rate limit ------------------------------------------------------------------------------

def test_rate_limit_defers_then_sends(make_app, clock, smtp_server: SmtpServer, caplog) -> None:
    app = smtp_app(make_app, smtp_server, max_per_recipient_per_hour=2)
    queue(app, ANA, 4)
    queue(app, "bob@example.net")
    queue(app, STAFF, 3, kind="staff_flag")
    caplog.set_level(logging.WARNING, "inbox_bot.outbox")
    assert app.deliver_outbox() == {"sent": 5, "retry": 0, "deferred": 3, "failed": 0}
    assert "outbox rate limit: ana@example.net got 2 mails in the last hour" in caplog.text
    clock.advance(minutes=30)
    assert app.deliver_outbox()["sent"] == 0
    clock.advance(minutes=31)
    assert app.deliver_outbox() == {"sent": 3, "retry": 0, "deferred": 0, "failed": 0}
    assert (len(smtp_server.to(ANA)), len(smtp_server.to(STAFF)), len(smtp_server.to("bob@example.net"))) == \
        (4, 3, 1)
    assert {r.status for r in rows(app).values()} == {"sent"}
    assert all(r.attempts == 1 for r in rows(app).values())  # waiting is not an attempt


# --- TLS and login -------------------------------------------------------------------------------

def test_starttls_with_private_ca(make_app, smtp_factory, tls_cert) -> None:
    server = smtp_factory(tls="starttls", cert=tls_cert, require_starttls=True)
    app = smtp_app(make_app, server, ca_file=str(tls_cert[0]), starttls="required")
    queue(app, ANA)
    assert app.deliver_outbox()["sent"] == 1 and len(server.to(ANA)) == 1


def test_untrusted_certificate_is_refused(make_app, smtp_factory, tls_cert) -> None:
    server = smtp_factory(tls="starttls", cert=tls_cert)
    app = smtp_app(make_app, server)
    queue(app, ANA)
    assert app.deliver_outbox()["retry"] == 1
    assert "TLS failed" in next(iter(rows(app).values())).last_error and server.accepted == []


def test_starttls_required_but_not_offered(smtp_server: SmtpServer) -> None:
    transport = SmtpTransport(parse_smtp_url(smtp_server.url), SENDER, starttls="required")
    with pytest.raises(TransportUnavailable, match="does not offer STARTTLS"):
        transport.deliver(1, ANA, b"Subject: x\r\n\r\nx\r\n", 0)


def test_implicit_tls(make_app, smtp_factory, tls_cert) -> None:
    server = smtp_factory(tls="implicit", cert=tls_cert)
    assert server.url.startswith("smtps://")
    app = smtp_app(make_app, server, ca_file=str(tls_cert[0]))
    queue(app, ANA)
    assert app.deliver_outbox()["sent"] == 1 and len(server.to(ANA)) == 1


def test_login_over_starttls_password_from_env_never_logged(make_app, smtp_factory, tls_cert, monkeypatch,
                                                            caplog) -> None:
    server = smtp_factory(tls="starttls", cert=tls_cert, logins={"bot": "s3cret-pw"})
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("INBOX_BOT_SMTP_PASSWORD", "s3cret-pw")
    url = server.url.replace("://", "://bot@")
    app = make_app(outgoing={"transport": url, "ca_file": str(tls_cert[0])})
    queue(app, ANA)
    assert app.deliver_outbox()["sent"] == 1
    monkeypatch.setenv("INBOX_BOT_SMTP_PASSWORD", "wrong-pw")
    queue(app, ANA)
    assert app.deliver_outbox()["retry"] == 1
    assert "login as bot refused: 535" in rows(app)[2].last_error and rows(app)[2].attempts == 0
    assert "s3cret-pw" not in caplog.text and "wrong-pw" not in caplog.text
    assert "pw" not in repr(open_transport(url, app.cfg.base_dir, app.cfg.outgoing, SENDER))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_password_file(tmp_path: Path, smtp_factory) -> None:
    server = smtp_factory(logins={"bot": "from-file"})
    (tmp_path / "smtp.pw").write_text("from-file\n")
    cfg = build_config({"outgoing": {"transport": server.url.replace("://", "://bot@"),
                                     "password_file": "smtp.pw"}}, tmp_path)
    transport = open_transport(cfg.transport, tmp_path, cfg.outgoing, SENDER)
    try:
        transport.deliver(1, ANA, b"Subject: x\r\n\r\nx\r\n", 0)
    finally:
        transport.close()
    assert len(server.to(ANA)) == 1


def test_missing_password_is_a_config_error_naming_the_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("INBOX_BOT_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"^outgoing\.password_env: environment variable INBOX_BOT_SMTP_PASSWORD"):
        open_transport("smtp://bot@127.0.0.1:25", tmp_path, OutgoingSettings(), SENDER)


@pytest.mark.parametrize(("outgoing", "key"), [
    ({"transport": "smtp://bot:pw@relay.example:587"}, "outgoing.transport: no password in the URL"),
    ({"transport": "smtp://relay.example:587/x"}, "outgoing.transport"),
    ({"transport": "smtp://relay.example:port"}, "outgoing.transport"),
    ({"starttls": "maybe"}, "outgoing.starttls"),
    ({"ca_file": "nope.pem"}, "outgoing.ca_file: file not found"),
    ({"password_env": "1 BAD"}, "outgoing.password_env"),
    ({"max_attempts": 0}, "outgoing.max_attempts"),
    ({"max_per_recipient_per_hour": "ten"}, "outgoing.max_per_recipient_per_hour"),
    ({"retry_backoff": "10m", "retry_backoff_max": "1m"}, "outgoing.retry_backoff_max"),
    ({"timeout": "0s"}, "outgoing.timeout"),
    ({"colour": "red"}, "outgoing.colour: unknown key"),
])
def test_bad_outgoing_config_names_the_key(tmp_path: Path, outgoing: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"outgoing": outgoing}, tmp_path)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_smtp_url_defaults() -> None:
    assert str(parse_smtp_url("smtp://relay.example")) == "smtp://relay.example:25"
    assert str(parse_smtp_url("smtps://bot%40clickport.io@relay.example")) == \
        "smtps://bot@clickport.io@relay.example:465"


def test_error_classes() -> None:
    assert issubclass(TransportUnavailable, TransportError)
    assert TransportUnavailable("x").permanent is False
    assert timedelta(0) < OutgoingSettings().retry_backoff <= OutgoingSettings().retry_backoff_max
