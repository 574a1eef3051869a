"""The IMAP source against a real, private Dovecot (tests/dovecot.py): same decisions as the Maildir,
nothing marked read that the bot did not handle, IDLE reaction, re-syncs and outages survived.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import ConfigError, build_config
from inbox_bot.mail.samples import build_reply, last_sent
from inbox_bot.mail.sources import SourceError
from inbox_bot.store.db import transaction
from inbox_bot.store.models import AuditEvent, InboundMessage, OutboxMail
from tests.conftest import bot_executable, drop, sent_dir
from tests.dovecot import Account, Dovecot

PW_ENV = "INBOX_BOT_TEST_IMAP_PASSWORD"
ANA, BEN = "ana.ruiz@example.net", "ben.okafor@example.org"
KEYWORD = b"$InboxBot"


# --- helpers -----------------------------------------------------------------------------------------

def imap_config(account: Account, **mailbox: object) -> dict:
    return {"mailbox": {"source": account.url(), "password_env": PW_ENV, **mailbox},
            "erasure": {"cooling_off": "0s"}}


@pytest.fixture
def imap_env(monkeypatch: pytest.MonkeyPatch, imap_account: Account) -> Account:
    monkeypatch.setenv(PW_ENV, imap_account.password)
    return imap_account


_RULES: dict = {}


def new_app(data: dict, base: Path, **kw: object) -> App:
    """An App sharing one compiled rulebook across the tests (compiling it is the slow part of start-up)."""
    app = App(build_config(data, base), **kw)
    if "rules" not in _RULES:
        _RULES["rules"] = app.rules
    app.__dict__["rules"] = _RULES["rules"]
    return app


@pytest.fixture
def make_imap_app(tmp_path: Path, clock, imap_env: Account):  # noqa: ANN001, ANN201
    def make(**mailbox: object) -> App:
        base = tmp_path / "imap"
        base.mkdir(exist_ok=True)
        return new_app(imap_config(imap_env, **mailbox), base, clock=clock)

    return make


def asked(app: App, addr: str) -> int:
    rid = commands.add_request(app, addr, None, "", "staff:test")["id"]
    commands.staff_transition(app, "ask", rid, "staff:test", "")
    app.poll_once()
    return rid


def reply_to(app: App, addr: str, body: str, **kw: object) -> bytes:
    return build_reply(last_sent(sent_dir(app))[addr], addr, body, **kw)


def plain(sender: str, subject: str, body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@clickport.io", subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg.as_bytes()


def actions(app: App) -> list[str]:
    return [m["action"] for m in commands.list_messages(app)]


def decisions(app: App) -> list[tuple[str, str, str]]:
    """(sender, intent, action) of every processed message, in a fixed order."""
    return sorted((m["from"], m["intent"], m["action"]) for m in commands.list_messages(app))


def write_config(path: Path, account: Account, **mailbox: str) -> Path:
    extra = "".join(f'{k} = "{v}"\n' for k, v in mailbox.items())
    path.write_text(f'[mailbox]\nsource = "{account.url()}"\npassword_env = "{PW_ENV}"\n{extra}'
                    '[erasure]\ncooling_off = "0s"\n')
    return path


def bot(cfg: Path, *args: str, password: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([bot_executable(), "--config", str(cfg), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, PW_ENV: password})


class Daemon:
    """``inbox-bot run`` in a subprocess, its log in a file the test can read while it runs."""

    def __init__(self, cfg: Path, password: str) -> None:
        self.log_path = cfg.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([bot_executable(), "--config", str(cfg), "run"], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, PW_ENV: password})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            assert self.proc.poll() is None, f"inbox-bot run exited {self.proc.returncode}:\n{self.log()[-3000:]}"
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in the log within {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def wait_action(app: App, message_id: str, timeout: float) -> tuple[str, float]:
    """Poll the database until ``message_id`` has a recorded action; (action, seconds waited)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with transaction(app.engine) as s:
            action = s.exec(select(InboundMessage.action).where(InboundMessage.message_id == message_id)).first()
        if action:
            return action, time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"no decision on {message_id} within {timeout}s")


def message_id(raw: bytes) -> str:
    return re.search(rb"^Message-ID: (<[^>]+>)", raw, re.MULTILINE | re.IGNORECASE).group(1).decode()


# --- the same decisions as the Maildir ---------------------------------------------------------------

def test_poll_once_through_imap_takes_the_same_actions_as_the_maildir(make_app, tmp_path: Path, dovecot: Dovecot,
                                                                       imap_env: Account) -> None:
    bodies = {ANA: "Yes, please delete my account.", BEN: "Wait, I changed my mind, please keep my account."}
    stranger = plain("carla@example.com", "Invoice question", "Where can I download my invoice?")
    ooo = {"extra_headers": {"Auto-Submitted": "auto-replied"}, "subject_prefix": "Automatic reply: "}

    maildir_app = make_app()
    for addr in bodies:
        asked(maildir_app, addr)
    for i, (addr, body) in enumerate(bodies.items()):
        drop(maildir_app, reply_to(maildir_app, addr, body), f"{i}.reply")
    drop(maildir_app, stranger, "8.stranger")
    maildir_app.poll_once()
    drop(maildir_app, reply_to(maildir_app, ANA, "I am out of the office until Monday.", **ooo), "9.ooo")
    maildir_app.poll_once()

    (tmp_path / "imap").mkdir()
    cfg = write_config(tmp_path / "imap" / "bot.toml", imap_env)
    imap_app = new_app(imap_config(imap_env), cfg.parent)
    for addr in bodies:
        asked(imap_app, addr)
    dovecot.deliver(imap_env, reply_to(imap_app, ANA, bodies[ANA]))
    dovecot.append(imap_env, reply_to(imap_app, BEN, bodies[BEN]))
    dovecot.deliver(imap_env, stranger)
    first = bot(cfg, "poll", "--once", "--json", password=imap_env.password)
    assert first.returncode == 0, first.stderr
    dovecot.deliver(imap_env, reply_to(imap_app, ANA, "I am out of the office until Monday.", **ooo))
    imap_app.poll_once()

    assert decisions(imap_app) == decisions(maildir_app)
    assert sorted(actions(imap_app)) == ["cancel", "ignore", "queue_erasure", "unmatched"]
    assert [r["state"] for r in commands.list_requests(imap_app)] == ["erasure_queued", "cancelled"]
    flags = list(dovecot.flags(imap_env).values())
    assert flags == [(KEYWORD,), (KEYWORD,), (), (KEYWORD,)], "handled: keyword; unmatched: untouched; none \\Seen"
    assert PW_ENV not in first.stderr and imap_env.password not in first.stderr + first.stdout


# --- what staff see ----------------------------------------------------------------------------------

def test_unmatched_mail_stays_untouched_and_handled_mail_moves(make_imap_app, dovecot: Dovecot,
                                                               imap_env: Account, monkeypatch) -> None:
    app = make_imap_app(handled_folder="Handled by bot")
    asked(app, ANA)
    dovecot.deliver(imap_env, reply_to(app, ANA, "Yes, please delete my account."))
    dovecot.deliver(imap_env, plain("carla@example.com", "Question", "How do I export my data?"))
    app.poll_once()

    inbox = dovecot.flags(imap_env)
    assert list(inbox.values()) == [()], "the unmatched message: still in INBOX, no \\Seen, no keyword"
    assert list(dovecot.flags(imap_env, "Handled by bot").values()) == [(KEYWORD,)]

    fetched: list[object] = []
    real_fetch = IMAPClient.fetch
    monkeypatch.setattr(IMAPClient, "fetch", lambda self, *a, **kw: fetched.append(a) or real_fetch(self, *a, **kw))
    counts = app.poll_once()
    assert fetched == [] and not counts.get("unmatched"), "unmatched mail is not fetched again"
    assert dovecot.flags(imap_env) == inbox


def test_oversized_mail_is_flagged_without_loading_it(make_imap_app, dovecot: Dovecot, imap_env: Account,
                                                      monkeypatch) -> None:
    app = make_imap_app(max_message_size="20KB")
    asked(app, ANA)
    big = reply_to(app, ANA, "Yes, please delete my account.\n" + "padding " * 4000)
    dovecot.deliver(imap_env, big)
    small = plain("carla@example.com", "Hi", "short")
    dovecot.deliver(imap_env, small)

    fetched: list[tuple] = []
    real_fetch = IMAPClient.fetch
    monkeypatch.setattr(IMAPClient, "fetch", lambda self, uids, parts, *a, **kw: fetched.append(
        (tuple(uids), tuple(parts))) or real_fetch(self, uids, parts, *a, **kw))
    counts = app.poll_once()

    assert counts["flag_human"] == 1 and counts["unmatched"] == 1
    body_fetches = [uids for uids, parts in fetched if "BODY.PEEK[]" in parts]
    assert body_fetches == [(2,)], "only the small message's body is fetched"
    flag = commands.list_flags(app)[-1]
    size = re.search(r"message of (\d+) bytes over the 20 KB limit", flag["reason"])
    assert size and int(size.group(1)) >= len(big), flag["reason"]  # the server counts CRLF line ends
    assert ANA in flag["reason"], "the reason names the sender so staff can find the mail"
    assert commands.list_requests(app)[0]["state"] == "awaiting_confirmation", "nothing acted on unread mail"
    assert dovecot.flags(imap_env) == {1: (KEYWORD,), 2: ()}


def test_staff_reply_from_the_sent_folder_joins_the_timeline_and_stops_the_clock(
        make_imap_app, dovecot: Dovecot, imap_env: Account) -> None:
    app = make_imap_app()
    rid = commands.add_request(app, ANA, None, "", "staff:test")["id"]
    app.poll_once()  # delivers the receipt
    assert commands.list_requests(app)[0]["sla_due_at"] is not None
    receipt = last_sent(sent_dir(app))[ANA]
    staff = EmailMessage()
    staff["From"], staff["To"], staff["Subject"] = "Jana Novak <jana@clickport.io>", ANA, "Re: " + receipt["Subject"]
    staff["Message-ID"], staff["In-Reply-To"] = make_msgid(domain="clickport.io"), receipt["Message-ID"]
    staff["References"] = receipt["Message-ID"]
    staff.set_content("Hi Ana, we are on it. Do you want an export first?")
    dovecot.deliver(imap_env, staff.as_bytes(), folder="Sent")
    dovecot.deliver(imap_env, plain("jana@clickport.io", "Lunch?", "Anyone for lunch?"), folder="Sent")
    dovecot.deliver(imap_env, receipt.as_bytes(), folder="Sent")  # a relay filed the bot's own mail

    counts = app.poll_once()
    assert counts["staff_reply"] == 1
    view = commands.show_request(app, rid)
    events = [e for e in view["timeline"] if e["event"] == "staff_reply"]
    assert [(e["actor"], e["message_id"]) for e in events] == [("staff:jana@clickport.io", staff["Message-ID"])]
    assert view["state"] == "received", "a staff reply changes no state"
    assert commands.list_requests(app)[0]["sla_due_at"] is None, "the arrival clock stopped"
    assert list(dovecot.flags(imap_env, "Sent").values()) == [(KEYWORD,), (), ()]

    app.poll_once()
    again = commands.show_request(app, rid)["timeline"]
    assert [e["event"] for e in again].count("staff_reply") == 1


def test_staff_reply_stops_the_clock_of_an_open_flag(make_imap_app, dovecot: Dovecot, imap_env: Account) -> None:
    app = make_imap_app()
    rid = asked(app, ANA)
    dovecot.deliver(imap_env, reply_to(app, ANA, "Will my invoices still be available afterwards?"))
    app.poll_once()
    assert commands.list_requests(app)[0]["open_flag"] and commands.list_requests(app)[0]["sla_due_at"]
    ask = last_sent(sent_dir(app))[ANA]
    staff = EmailMessage()
    staff["From"], staff["To"], staff["Subject"] = "jana@clickport.io", ANA, "Re: " + ask["Subject"]
    staff["Message-ID"], staff["In-Reply-To"] = make_msgid(domain="clickport.io"), ask["Message-ID"]
    staff.set_content("Yes, invoices stay available for 7 years.")
    dovecot.deliver(imap_env, staff.as_bytes(), folder="Sent")
    app.poll_once()
    row = commands.list_requests(app)[0]
    assert row["open_flag"] and row["sla_due_at"] is None, "answered: the flag's clock stops, the flag stays"
    assert commands.show_request(app, rid)["state"] == "awaiting_confirmation"


def test_a_message_that_failed_is_retried_without_refetching_the_rest(make_imap_app, dovecot: Dovecot,
                                                                     imap_env: Account, monkeypatch) -> None:
    app = make_imap_app()
    asked(app, ANA)
    dovecot.deliver(imap_env, reply_to(app, ANA, "Yes, please delete my account."))
    for n in range(3):
        dovecot.deliver(imap_env, plain(f"c{n}@example.com", "Question", "How do I export my data?"))
    real = app.pipeline.process_one
    calls = {"failed": 0}

    def flaky(item):  # noqa: ANN001, ANN202 - the first message fails once (e.g. the database was busy)
        if item.key.endswith(":1") and not calls["failed"]:
            calls["failed"] += 1
            raise RuntimeError("database is locked")
        return real(item)

    monkeypatch.setattr(app.pipeline, "process_one", flaky)
    fetched: list[tuple] = []
    real_fetch = IMAPClient.fetch
    monkeypatch.setattr(IMAPClient, "fetch", lambda self, uids, parts, *a, **kw: fetched.append(
        (tuple(uids), tuple(parts))) or real_fetch(self, uids, parts, *a, **kw))
    source = app.open_source()  # one connection across passes, as in `inbox-bot run`
    try:
        assert app.poll_once(source)["error"] == 1
        fetched.clear()
        counts = app.poll_once(source)
        assert counts["queue_erasure"] == 1 and not counts.get("seen")
        assert [uids for uids, parts in fetched if "BODY.PEEK[]" in parts] == [(1,)], "only the failed one again"
    finally:
        source.close()
    fetched.clear()
    assert not {k: v for k, v in app.poll_once().items() if not k.startswith("outbox_")}
    assert fetched == [], "the progress mark moved past all four"
    assert sorted(actions(app)) == ["queue_erasure", "unmatched", "unmatched", "unmatched"]
    assert list(dovecot.flags(imap_env).values()) == [(KEYWORD,), (), (), ()]


# --- UIDVALIDITY -------------------------------------------------------------------------------------

def test_uidvalidity_change_resyncs_without_acting_twice(make_imap_app, dovecot: Dovecot, imap_env: Account,
                                                         caplog) -> None:
    app = make_imap_app()
    asked(app, ANA)
    dovecot.deliver(imap_env, reply_to(app, ANA, "Yes, please delete my account."))
    dovecot.deliver(imap_env, plain("carla@example.com", "Question", "How do I export my data?"))
    app.poll_once()
    c = dovecot.client(imap_env)
    c.remove_flags([1], [KEYWORD])  # as if the process died between the commit and the keyword
    c.logout()

    def snapshot() -> tuple:
        with transaction(app.engine) as s:
            return (len(s.exec(select(OutboxMail)).all()), len(s.exec(select(AuditEvent)).all()))

    before = snapshot()
    dovecot.set_uidvalidity(imap_env, 4242)
    counts = app.poll_once()
    assert counts["duplicate"] == 2 and not counts.get("queue_erasure")
    assert snapshot() == before, "no new transition, audit event or mail"
    assert "UIDVALIDITY changed" in caplog.text
    assert actions(app).count("queue_erasure") == 1
    assert not {k: v for k, v in app.poll_once().items() if not k.startswith("outbox_")}, "settled"


# --- the daemon: IDLE, restarts, bad passwords --------------------------------------------------------

def start_daemon(daemons: list[Daemon], cfg: Path, password: str) -> Daemon:
    d = Daemon(cfg, password)
    daemons.append(d)
    return d


def test_run_reacts_through_idle_and_survives_a_server_restart(tmp_path: Path, dovecot: Dovecot,
                                                               imap_env: Account, daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path / "bot.toml", imap_env, poll_interval="5m")
    app = new_app(imap_config(imap_env), tmp_path)
    asked(app, ANA)
    asked(app, BEN)
    d = start_daemon(daemons, cfg, imap_env.password)
    d.wait_log("imap connected")
    time.sleep(0.5)  # the first pass is done and the watcher sits in IDLE
    raw = reply_to(app, ANA, "Yes, please delete my account.")
    t0 = time.monotonic()
    dovecot.deliver(imap_env, raw)
    action, _ = wait_action(app, message_id(raw), timeout=5)
    took = time.monotonic() - t0
    print(f"\nIDLE reaction: {took:.3f}s from delivery to committed decision (Dovecot notifies after 0.5s)")
    assert action == "queue_erasure"
    assert took < 2.0, "a poll every 5 minutes cannot explain this: IDLE did"

    dovecot.restart()  # mid-IDLE: the server says BYE and closes the connection
    raw = reply_to(app, BEN, "Please cancel, I want to keep my account.")
    dovecot.deliver(imap_env, raw)
    action, _ = wait_action(app, message_id(raw), timeout=15)
    assert action == "cancel"
    log = d.log()
    assert re.search(r"imap reconnect in \d+\.\ds after ConnectionAbortedError: .*BYE", log), log[-2000:]
    assert d.proc.poll() is None, "run stays up"
    assert d.stop() == 0, d.log()[-2000:]
    assert "Traceback" not in d.log()


def test_auth_failure_and_outage_back_off_without_crashing_or_leaking(tmp_path: Path, imap_env: Account,
                                                                     daemons: list[Daemon]) -> None:
    cfg = write_config(tmp_path / "bot.toml", imap_env)
    wrong = "not-the-password-" + "x" * 8
    once = bot(cfg, "poll", "--once", password=wrong)
    assert once.returncode == 1
    assert once.stderr.strip() == (f"inbox-bot: imap login failed for {imap_env.user}@127.0.0.1: "
                                   "[AUTHENTICATIONFAILED] Authentication failed.")

    (tmp_path / "down").mkdir()
    nowhere = Account(imap_env.user, "127.0.0.1", _closed_port(), imap_env.maildir)
    refused = start_daemon(daemons, write_config(tmp_path / "down" / "bot.toml", nowhere), imap_env.password)
    denied = start_daemon(daemons, cfg, wrong)
    denied.wait_log(r"imap reconnect in \d+\.\ds after ImapAuthError: imap login failed for u\d+@127\.0\.0\.1: "
                    r"\[AUTHENTICATIONFAILED\] Authentication failed\.\n")
    refused.wait_log(r"(imap reconnect in .*\n.*){3}")
    delays = [float(x) for x in re.findall(r"imap reconnect in (\d+\.\d)s after ConnectionRefusedError",
                                           refused.log())]
    assert len(delays) >= 3 and delays[0] <= 1.0 and delays[2] >= 1.0, refused.log()
    assert len(delays) <= 5, "capped exponential backoff, not a busy loop"
    for d in (refused, denied):
        assert d.proc.poll() is None, "run stays up"
        assert wrong not in d.log() and imap_env.password not in d.log() and "Traceback" not in d.log()
        assert d.stop() == 0


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- TLS, passwords from files, configuration ----------------------------------------------------------

def test_imaps_checks_the_certificate_against_the_configured_ca(tmp_path: Path, dovecot: Dovecot,
                                                                imap_env: Account) -> None:
    pw = tmp_path / "imap-password"
    pw.write_text(imap_env.password + "\n")
    url = f"imaps://{imap_env.user}@localhost:{dovecot.tls_port}/INBOX"
    dovecot.deliver(imap_env, plain("carla@example.com", "Question", "How do I export my data?"))
    trusted = new_app({"mailbox": {"source": url, "password_file": str(pw), "ca_file": str(dovecot.ca_file)}},
                      tmp_path)
    assert trusted.poll_once()["unmatched"] == 1

    untrusted = new_app({"mailbox": {"source": url, "password_file": str(pw)}}, tmp_path)
    with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED") as err:
        untrusted.poll_once()
    assert imap_env.password not in str(err.value)


@pytest.mark.parametrize(("mailbox", "key"), [
    ({"source": "imap://127.0.0.1:143/INBOX"}, "mailbox.source"),
    ({"source": "imap://bot:secret@127.0.0.1/INBOX"}, "mailbox.source"),
    ({"source": "imap://bot@127.0.0.1:notaport/INBOX"}, "mailbox.source"),
    ({"max_message_size": "huge"}, "mailbox.max_message_size"),
    ({"max_message_size": 0}, "mailbox.max_message_size"),
    ({"idle_renew": "45m"}, "mailbox.idle_renew"),
    ({"processed_keyword": "\\Seen"}, "mailbox.processed_keyword"),
    ({"password_env": "NOT A NAME"}, "mailbox.password_env"),
    ({"password_file": "missing.txt"}, "mailbox.password_file"),
    ({"ca_file": "missing.pem"}, "mailbox.ca_file"),
    ({"handled_folder": "INBOX"}, "mailbox.handled_folder"),
])
def test_bad_imap_settings_are_one_line_errors_naming_the_key(tmp_path: Path, mailbox: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"mailbox": mailbox}, tmp_path)
    assert str(err.value).startswith(key + ":") and "\n" not in str(err.value)


def test_imap_settings_parse(tmp_path: Path) -> None:
    cfg = build_config({"mailbox": {"source": "imaps://support%40clickport.io@imap.example.net/Support%20Queue",
                                    "max_message_size": "10MiB", "idle_renew": "20m"}}, tmp_path)
    from inbox_bot.config import parse_imap_url

    url = parse_imap_url(cfg.source)
    assert (url.tls, url.user, url.host, url.port, url.mailbox) == (True, "support@clickport.io", "imap.example.net",
                                                                   993, "Support Queue")
    assert cfg.imap.max_message_size == 10 * 2**20 and cfg.imap.idle_renew.total_seconds() == 1200
    assert build_config({}, tmp_path).imap.max_message_size == 25_000_000


def test_missing_password_is_a_config_error(tmp_path: Path, imap_account: Account, monkeypatch) -> None:
    monkeypatch.delenv(PW_ENV, raising=False)
    app = new_app(imap_config(imap_account), tmp_path)
    with pytest.raises(ConfigError, match=f"^mailbox.password_env: the environment variable {PW_ENV} is not set"):
        app.poll_once()
