"""`inbox-bot run`'s staff jobs under a travelling clock: the real APScheduler sees the time (time-machine).

A request arrives Friday 16:00 Berlin; the daemon runs over the weekend; the reminder goes out on
Monday 14:00 and the escalation at 16:00, the Monday digest at 08:30, and a restart of the daemon
sends none of them twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import time_machine
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import build_config
from inbox_bot.scheduler import build_scheduler
from inbox_bot.store.db import transaction
from inbox_bot.store.models import OutboxMail, SlaNotice, as_utc

BERLIN = ZoneInfo("Europe/Berlin")
SLA = {"timezone": "Europe/Berlin", "business_hours": ["09:00", "17:00"],
       "holidays": {"country": "DE", "subdivision": "BE"}}


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def staff_kinds(app: App) -> list[str]:
    with transaction(app.engine) as s:
        rows = s.exec(select(OutboxMail.kind).where(OutboxMail.to_addr == app.cfg.staff_address)
                      .order_by(OutboxMail.id))
        return list(rows)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Daemon:
    """`inbox-bot run` in a thread, with a log of every SLA and digest job run (the time it saw)."""

    def __init__(self, app: App) -> None:
        self.runs: list[tuple[str, datetime]] = []
        for name in ("check_sla", "send_digest"):
            setattr(app, name, self._recording(name, getattr(app, name)))
        self.sched = build_scheduler(app)
        self.thread = threading.Thread(target=self.sched.start, daemon=True)

    def _recording(self, name: str, fn: Callable[[], dict]) -> Callable[[], dict]:
        def job() -> dict:
            result = fn()
            self.runs.append((name, datetime.now(UTC)))
            return result

        return job

    def ran_at_or_after(self, name: str, moment: datetime) -> bool:
        return any(n == name and at >= moment for n, at in self.runs)

    def settle(self, moment: datetime) -> None:
        """Wake the scheduler (its wait is in real time) and wait until both staff jobs ran at ``moment``."""
        self.sched.wakeup()
        wait_for(lambda: self.ran_at_or_after("check_sla", moment), f"the SLA check at {moment}")


@contextmanager
def running(app: App, at: datetime) -> Iterator[Daemon]:
    daemon = Daemon(app)
    daemon.thread.start()
    try:
        daemon.settle(at)
        wait_for(lambda: daemon.ran_at_or_after("send_digest", at), "the start-up digest check")
        yield daemon
    finally:
        daemon.sched.shutdown(wait=True)
        daemon.thread.join(timeout=10)


def test_jobs_are_configured_for_a_restartable_daemon(tmp_path: Path) -> None:
    app = App(build_config({"sla": SLA}, tmp_path))
    with time_machine.travel(berlin(2026, 12, 4, 16, 0), tick=False):
        sched = build_scheduler(app)
        jobs = {job.id: job for job in sched.get_jobs()}
        assert {"sla", "digest"} <= set(jobs)
        now = datetime.now(UTC)
        assert jobs["sla"].next_run_time == jobs["digest"].next_run_time == now  # at start-up
        digest = jobs["digest"].trigger
        assert digest.get_next_fire_time(None, now) == berlin(2026, 12, 7, 8, 30)  # Monday, not Saturday
        assert digest.get_next_fire_time(None, berlin(2026, 10, 23, 9, 0)) == berlin(2026, 10, 26, 8, 30)


def test_friday_request_through_a_weekend_and_a_restart(tmp_path: Path) -> None:
    cfg = build_config({"sla": SLA, "erasure": {"cooling_off": "0s"}}, tmp_path)
    friday = berlin(2026, 12, 4, 16, 0)
    with time_machine.travel(friday, tick=True) as traveller:
        app = App(cfg)
        commands.add_request(app, "ana@example.net", "acc_1", "moving on", "staff:test")
        with running(app, friday) as daemon:
            # Started after 08:30 on a business day with no digest yet: Friday's goes out late, at once.
            assert staff_kinds(app) == ["digest"]
            for moment in (berlin(2026, 12, 5, 12, 0), berlin(2026, 12, 7, 8, 0)):
                traveller.move_to(moment)
                daemon.settle(moment)
            assert staff_kinds(app) == ["digest"]  # nothing on Saturday, nothing before 08:30
            traveller.move_to(berlin(2026, 12, 7, 8, 30))
            daemon.sched.wakeup()
            wait_for(lambda: staff_kinds(app).count("digest") == 2, "Monday's digest")
            traveller.move_to(berlin(2026, 12, 7, 13, 58))
            daemon.settle(berlin(2026, 12, 7, 13, 58))
            assert staff_kinds(app) == ["digest", "digest"]
            traveller.move_to(berlin(2026, 12, 7, 14, 0, 1))
            daemon.sched.wakeup()
            wait_for(lambda: "sla_reminder" in staff_kinds(app), "the reminder")
            traveller.move_to(berlin(2026, 12, 7, 15, 59))
            daemon.settle(berlin(2026, 12, 7, 15, 59))
            assert staff_kinds(app) == ["digest", "digest", "sla_reminder"]

        # Restart: a new process (new App, new engine) on the same database, at 16:00 sharp.
        traveller.move_to(berlin(2026, 12, 7, 16, 0, 5))
        restarted = App(cfg)
        with running(restarted, berlin(2026, 12, 7, 16, 0, 5)):
            wait_for(lambda: "sla_escalation" in staff_kinds(restarted), "the escalation")
        assert staff_kinds(restarted) == ["digest", "digest", "sla_reminder", "sla_escalation"]

        # And once more later the same day: nothing is sent twice.
        traveller.move_to(berlin(2026, 12, 7, 16, 30))
        again = App(cfg)
        sent = tmp_path / "mail" / "sent" / "new"
        with running(again, berlin(2026, 12, 7, 16, 30)):
            # The mailbox job delivers what the staff jobs queued: the receipt and four staff mails.
            wait_for(lambda: sent.is_dir() and len(list(sent.iterdir())) == 5, "delivery of the outbox")
        assert staff_kinds(again) == ["digest", "digest", "sla_reminder", "sla_escalation"]
    with transaction(again.engine) as s:
        sent_at = {n.level: as_utc(n.sent_at) for n in s.exec(select(SlaNotice))}
    assert berlin(2026, 12, 7, 14, 0) <= sent_at["reminder"] < berlin(2026, 12, 7, 14, 1)
    assert berlin(2026, 12, 7, 16, 0) <= sent_at["escalation"] < berlin(2026, 12, 7, 16, 1)
