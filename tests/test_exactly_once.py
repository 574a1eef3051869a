"""Exactly once under crashes: `inbox-bot run` against a private Dovecot and a real SMTP server,
SIGKILLed at random moments while it works through a few hundred replies, and two daemons at once.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from sqlmodel import select

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import load_config
from inbox_bot.mail.samples import build_reply
from inbox_bot.store.db import transaction
from inbox_bot.store.models import AuditEvent, OutboxMail
from tests.conftest import bot_executable
from tests.dovecot import Account, Dovecot
from tests.smtp_server import SmtpServer

PW_ENV = "INBOX_BOT_TEST_IMAP_PASSWORD"
BODIES = ["Yes, please delete my account.", "I changed my mind, please cancel the deletion.",
          "Can I still download my invoices afterwards?", "Thanks for the quick answer."]


def setup(tmp_path: Path, account: Account, smtp: SmtpServer, customers: int) -> tuple[Path, dict]:
    """A config file for the daemon, and every customer asked to confirm (receipt and ask sent by SMTP)."""
    cfg = tmp_path / "inbox-bot.toml"
    cfg.write_text(
        f'[mailbox]\nsource = "{account.url()}"\npassword_env = "{PW_ENV}"\npoll_interval = "1s"\n'
        f'[outgoing]\ntransport = "{smtp.url}"\nmax_per_recipient_per_hour = 100000\n'
        '[erasure]\ncooling_off = "1h"\n')
    os.environ[PW_ENV] = account.password
    app = App(load_config(str(cfg)))
    for i in range(customers):
        rid = commands.add_request(app, f"c{i}@example.net", f"acc_{i}", "", "staff:test")["id"]
        commands.staff_transition(app, "ask", rid, "staff:test", "")
    app.deliver_outbox()
    asks = {m.message["To"].addresses[0].addr_spec: m.message for m in smtp.accepted}
    return cfg, asks


def replies(asks: dict, customers: int) -> list[bytes]:
    return [build_reply(asks[f"c{i}@example.net"], f"c{i}@example.net", BODIES[i % len(BODIES)])
            for i in range(customers)]


def check_exactly_once(cfg: Path, smtp: SmtpServer, raws: list[bytes]) -> dict:
    """Every reply recorded once, one transition per message, no Message-ID at the server twice."""
    app = App(load_config(str(cfg)))
    msgs = commands.list_messages(app)
    acted = collections.Counter(m["message_id"] for m in msgs if m["action"] != "duplicate")
    assert len(acted) == len(raws), f"{len(raws) - len(acted)} replies never recorded"
    assert max(acted.values()) == 1, [k for k, v in acted.items() if v > 1]
    with transaction(app.engine) as s:
        events = s.exec(select(AuditEvent.request_id, AuditEvent.message_id, AuditEvent.event)
                        .where(AuditEvent.message_id.is_not(None),
                               AuditEvent.event.in_(("confirm", "cancel")))).all()
        outbox = s.exec(select(OutboxMail.message_id, OutboxMail.status)).all()
    per_message = collections.Counter((r, m) for r, m, _ in events)
    assert not per_message or max(per_message.values()) == 1
    at_server = collections.Counter(str(m.message["Message-ID"]) for m in smtp.accepted)
    assert [k for k, v in at_server.items() if v > 1] == [], "a mail reached the server twice"
    sent = {mid for mid, status in outbox if status == "sent"}
    assert sent <= set(at_server), "a mail marked sent never reached the server"
    return {"actions": collections.Counter(m["action"] for m in msgs), "sent": len(sent), "outbox": len(outbox),
            "at_server": len(at_server)}


def test_sigkill_at_random_moments_loses_nothing_and_acts_once(
        tmp_path: Path, dovecot: Dovecot, imap_account: Account, smtp_server: SmtpServer) -> None:
    customers, kills = 200, 20
    cfg, asks = setup(tmp_path, imap_account, smtp_server, customers)
    raws = replies(asks, customers)
    rnd = random.Random(7)
    bot = bot_executable()
    log = open(tmp_path / "run.log", "ab")  # noqa: SIM115 - shared by every run below
    try:
        for wave in range(kills):
            for raw in raws[wave::kills]:
                dovecot.deliver(imap_account, raw)
            proc = subprocess.Popen([bot, "--config", str(cfg), "run"], stdout=log, stderr=log)
            time.sleep(rnd.uniform(0.4, 1.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        log.close()
    done = subprocess.run([bot, "--config", str(cfg), "poll", "--once", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    figures = check_exactly_once(cfg, smtp_server, raws)
    print(f"\n{kills} kills over {customers} replies: {figures}")
    assert figures["actions"]["queue_erasure"] == customers // 4
    assert figures["actions"]["cancel"] == customers // 4


def test_two_daemons_on_one_mailbox_never_process_a_message_twice(
        tmp_path: Path, dovecot: Dovecot, imap_account: Account, smtp_server: SmtpServer) -> None:
    customers = 40
    cfg, asks = setup(tmp_path, imap_account, smtp_server, customers)
    raws = replies(asks, customers)
    bot = bot_executable()
    procs = [subprocess.Popen([bot, "--config", str(cfg), "run"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for raw in raws:
            dovecot.deliver(imap_account, raw)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run([bot, "--config", str(cfg), "messages", "list", "--json"], capture_output=True,
                                 text=True)
            if out.returncode == 0 and len(json.loads(out.stdout)) >= customers:
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=30)[1] for p in procs]
    check_exactly_once(cfg, smtp_server, raws)
    assert any("another inbox-bot process holds the mailbox lock" in e for e in errs), \
        "the daemon that waits for the other says so in its log"
