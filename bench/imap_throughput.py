"""IMAP throughput and IDLE reaction against a private Dovecot (tests/dovecot.py), with realistic mail.

Three figures, measured in one run on the same machine so that they compare:

1. ceiling: imapclient ``UID FETCH BODY.PEEK[]`` (500 per command) + ``parse_mail`` + one SQLModel
   commit per message + a keyword STORE per batch of 100: what any IMAP pipeline in this process
   could reach at best (issue 4 measured ~1,250 messages/s).
2. end to end: the real pass (``ImapSource`` -> parse -> triage -> act in one transaction -> keyword)
   over a backlog of customer replies to open requests. Target: at least half the ceiling.
3. IDLE reaction: ``MailboxWatcher`` in IDLE, one reply delivered into the Maildir at a time, time
   until its decision is committed (median and p99). Dovecot itself announces new mail 0.50 s after
   it arrives (compiled in), so the bot's own part is the figure minus 0.5 s. Targets: median within
   0.2 s of that notification, p99 under 1.0 s in total.

Mail: MTA Received chains, DKIM-Signature, trusted Authentication-Results, 31% multipart/alternative,
replies in the threads of the bot's own "please confirm" mails, sent to their Reply-To (the request's
reply token) as a mail client does (confirm, cancel, question, chatter).

    .venv/bin/python bench/imap_throughput.py [--messages 10000] [--requests 500] [--idle-samples 40]
                                              [--profile FILE]   # cProfile of the end-to-end pass
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Field, Session, SQLModel, create_engine, select  # noqa: E402

from inbox_bot import commands  # noqa: E402
from inbox_bot.app import App  # noqa: E402
from inbox_bot.config import build_config  # noqa: E402
from inbox_bot.mail.parse import parse_mail  # noqa: E402
from inbox_bot.store.db import transaction  # noqa: E402
from inbox_bot.store.models import InboundMessage, OutboxMail  # noqa: E402
from inbox_bot.watcher import MailboxWatcher  # noqa: E402
from tests.dovecot import Account, Dovecot  # noqa: E402

PW_ENV = "INBOX_BOT_BENCH_IMAP_PASSWORD"
BODIES = [
    "Yes, please delete my account.",
    "I confirm, go ahead and delete everything.",
    "Actually, please cancel the deletion, I want to keep my account.",
    "Before you delete it, can I still download my invoices?",
    "Thanks for the quick answer!",
    "Hello, please remove my account and all my data. Best regards",
]


class CeilingRow(SQLModel, table=True):
    """One row per message for the ceiling run: the cost of a commit, without the bot's tables."""

    __tablename__ = "bench_ceiling"
    id: int | None = Field(default=None, primary_key=True)
    message_id: str | None = None
    sha: str = ""


def realistic_reply(i: int, customer: str, thread_id: str, reply_to: str, rnd: random.Random) -> bytes:
    """A customer's reply as our MX would store it: Received chain, DKIM, Authentication-Results.

    Addressed as a mail client answers the bot's ask: to its Reply-To (the request's reply token).
    """
    domain = customer.rpartition("@")[2]
    msg = EmailMessage()
    for hop in range(3):
        msg["Received"] = (f"from mx{hop}.{domain} (mx{hop}.{domain} [192.0.2.{hop + 10}]) by mx.clickport.io "
                           f"with ESMTPS id {rnd.getrandbits(48):x}; {format_datetime(datetime.now(UTC))}")
    msg["Authentication-Results"] = (f"mx.clickport.io; dkim=pass header.d={domain} header.s=s1; "
                                     f"spf=pass smtp.mailfrom={domain}; dmarc=pass header.from={domain}")
    msg["DKIM-Signature"] = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s1; h=from:to:subject:date; "
                             f"bh={rnd.getrandbits(256):x}; b={rnd.getrandbits(1024):x}")
    msg["From"] = customer
    msg["To"] = reply_to
    msg["Subject"] = "Re: Please confirm: delete your Clickport account?"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<bench.{i}.{rnd.getrandbits(32):x}@{domain}>"
    msg["In-Reply-To"] = thread_id
    msg["References"] = thread_id
    body = rnd.choice(BODIES) + "\n\nOn Tue, 1 Dec 2026 at 10:02, Clickport Support <support@clickport.io> wrote:\n" \
        + "> Please confirm that we should delete your account.\n" * 4
    msg.set_content(body)
    if rnd.random() < 0.31:
        msg.add_alternative(f"<html><body><p>{body.splitlines()[0]}</p><blockquote>quoted</blockquote></body></html>",
                            subtype="html")
    return msg.as_bytes()


def setup_requests(app: App, n: int) -> list[tuple[str, str, str]]:
    """``n`` requests awaiting confirmation; (customer, Message-ID, Reply-To of the ask mail) for each."""
    for k in range(n):
        email = f"customer{k}@example{k % 50}.net"
        rid = commands.add_request(app, email, None, "", "staff:bench")["id"]
        commands.staff_transition(app, "ask", rid, "staff:bench", "")
    with transaction(app.engine) as s:
        rows = s.exec(select(OutboxMail.to_addr, OutboxMail.message_id, OutboxMail.raw)
                      .where(OutboxMail.kind == "ask")).all()
    return [(to, mid, str(message_from_bytes(raw, policy=default)["Reply-To"])) for to, mid, raw in rows]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def ceiling(server: Dovecot, account: Account, work: Path) -> float:
    """Fetch + parse + one commit per message + a keyword per 100: the best this process can do."""
    engine = create_engine(f"sqlite:///{work / 'ceiling.db'}")
    SQLModel.metadata.create_all(engine, tables=[CeilingRow.__table__])
    with engine.connect() as c:
        c.exec_driver_sql("PRAGMA journal_mode=WAL")
    client = server.client(account)
    t0 = time.perf_counter()
    uids = client.search(["UNKEYWORD", "$Bench"])
    for i in range(0, len(uids), 500):
        chunk = uids[i:i + 500]
        data = client.fetch(chunk, ["BODY.PEEK[]"])
        for j, uid in enumerate(chunk):
            mail = parse_mail(data[uid][b"BODY[]"], f"bench:{uid}")
            with Session(engine) as s:
                s.add(CeilingRow(message_id=mail.message_id, sha=mail.raw_sha256))
                s.commit()
            if j % 100 == 99 or j == len(chunk) - 1:
                client.add_flags(chunk[j - j % 100:j + 1], [b"$Bench"], silent=True)
    took = time.perf_counter() - t0
    client.logout()
    return len(uids) / took


def source_alone(account: Account, opts_app: App) -> float:
    """The IMAP source by itself (search, size, batched bodies, batched keyword), no parse, no triage."""
    from inbox_bot.config import parse_imap_url
    from inbox_bot.mail.imap_source import ImapSource

    source = ImapSource(parse_imap_url(account.url()), opts_app.cfg.imap, engine=None)
    t0 = time.perf_counter()
    n = 0
    for item in source.pending():
        source.mark_done(item.key, "ignore")
        n += 1
    took = time.perf_counter() - t0
    source.close()
    return n / took


def end_to_end(app: App, profile: str | None = None) -> tuple[float, int, dict]:
    source = app.open_source()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    counts = app.pipeline.process(source)
    took = time.perf_counter() - t0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
        print(f"end-to-end profile written to {profile} (the profiler slows the pass down)")
    source.close()
    n = sum(counts.values())
    return n / took, n, dict(counts)


def idle_reaction(server: Dovecot, account: Account, app: App, threads: list[tuple[str, str, str]], samples: int,
                  rnd: random.Random) -> list[float]:
    watcher = MailboxWatcher(app.open_source, app.poll_once, interval=600)
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not watcher.is_alive():
            time.sleep(0.01)
        time.sleep(1.0)  # the first pass (an empty backlog) is done; the watcher sits in IDLE
        lat = []
        for k in range(samples):
            raw = realistic_reply(10**7 + k, *threads[rnd.randrange(len(threads))], rnd)
            mid = parse_mail(raw, "x").message_id
            t0 = time.perf_counter()
            server.deliver(account, raw)
            while True:
                with transaction(app.engine) as s:
                    if s.exec(select(InboundMessage.id).where(InboundMessage.message_id == mid)).first():
                        break
                if time.perf_counter() - t0 > 30:
                    raise SystemExit(f"no decision within 30 s for sample {k}")
                time.sleep(0.002)
            lat.append(time.perf_counter() - t0)
            time.sleep(0.2 + rnd.random() * 0.2)  # the next arrival at an unrelated moment
        return lat
    finally:
        watcher.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--idle-samples", type=int, default=40)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--profile", metavar="FILE", help="cProfile the end-to-end pass into FILE (pstats format)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("inbox_bot.outbox").setLevel(logging.ERROR)  # the staff flag flood hits the rate limit
    rnd = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="imap-bench-", dir="/tmp"))
    work.chmod(0o711)  # Dovecot's unprivileged users must traverse it when we run as root
    server = Dovecot(work / "dovecot")
    (work / "dovecot").mkdir()
    server.start()
    try:
        backlog, ceil_acct, idle_acct = server.new_account("backlog"), server.new_account("ceil"), \
            server.new_account("idle")
        os.environ[PW_ENV] = backlog.password
        cfg = {"mailbox": {"source": backlog.url(), "password_env": PW_ENV, "sent_folder": ""},
               "erasure": {"cooling_off": "1h"}, "database": {"url": "sqlite:///state.db"}}
        (work / "bot").mkdir()
        app = App(build_config(cfg, work / "bot"))
        t = time.perf_counter()
        threads = setup_requests(app, a.requests)
        print(f"setup: {a.requests} requests asked in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        raws = [realistic_reply(i, *threads[rnd.randrange(len(threads))], rnd) for i in range(a.messages)]
        multipart = sum(b"multipart/alternative" in r for r in raws) / len(raws)
        for raw in raws:
            server.deliver(backlog, raw)
            server.deliver(ceil_acct, raw)
        print(f"mail: {a.messages} replies ({multipart:.0%} multipart, mean {sum(map(len, raws)) / len(raws):.0f} "
              f"bytes) delivered into two Maildirs in {time.perf_counter() - t:.1f}s")
        for acct in (backlog, ceil_acct):  # let Dovecot index both folders before the clocks start
            server.client(acct).logout()
        app.rules  # noqa: B018 - compile the rulebook before the clock starts (start-up, not throughput)

        ceil = ceiling(server, ceil_acct, work)
        print(f"ceiling (fetch 500/command + parse + one commit per message + keyword per 100): {ceil:,.0f} msg/s")
        os.environ[PW_ENV] = ceil_acct.password
        print(f"IMAP source alone (search + size + bodies 200/command + keyword per 500, no parse): "
              f"{source_alone(ceil_acct, app):,.0f} msg/s")
        os.environ[PW_ENV] = backlog.password
        e2e, n, counts = end_to_end(app, a.profile)
        verdict = "OK" if e2e >= ceil / 2 else "BELOW TARGET"
        print(f"end to end (ImapSource -> triage -> act -> keyword), {n} messages: {e2e:,.0f} msg/s = "
              f"{e2e / ceil:.1%} of the ceiling (target >= 50%: {verdict}); {counts}")

        os.environ[PW_ENV] = idle_acct.password
        cfg_idle = {**cfg, "mailbox": {**cfg["mailbox"], "source": idle_acct.url(), "poll_interval": "10m"}}
        (work / "idle").mkdir()
        idle_app = App(build_config(cfg_idle, work / "idle"))
        idle_app.__dict__["rules"] = app.rules
        idle_threads = setup_requests(idle_app, 20)
        idle_app.poll_once()
        lat = idle_reaction(server, idle_acct, idle_app, idle_threads, a.idle_samples, rnd)
        med, p99 = statistics.median(lat), percentile(lat, 99)
        ok = "OK" if med - 0.5 <= 0.2 and p99 <= 1.0 else "BELOW TARGET"
        print(f"IDLE reaction (delivery -> decision committed), {len(lat)} samples: median {med:.3f}s "
              f"(bot's share after Dovecot's 0.5s notification: {med - 0.5:.3f}s), p99 {p99:.3f}s, "
              f"max {max(lat):.3f}s (targets: median share <= 0.2s, p99 <= 1.0s: {ok})")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
