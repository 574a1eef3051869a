"""``inbox-bot run``: the daemon. APScheduler runs the jobs; SIGTERM/SIGINT stop it cleanly.

Jobs: the mailbox pass (which also delivers the outbox), the erasure worker (a cheap query
when nothing is due), the SLA check and the staff digest (``add_staff_jobs``). Each job runs at
start-up, then every ``mailbox.poll_interval`` (the staff jobs on their own schedule); one instance
at a time, missed runs coalesced, and a failing pass is logged and retried at the next interval
(never a crash loop). With an IMAP source the mailbox pass is not a job: ``MailboxWatcher``
(inbox_bot.watcher) runs it in its own thread right after each IDLE notification.
"""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from inbox_bot.app import App
from inbox_bot.watcher import MailboxWatcher

log = logging.getLogger("inbox_bot.scheduler")


def _guarded(name: str, fn):  # noqa: ANN001, ANN202
    def job() -> None:
        try:
            result = fn()
            if result and any(result.values()):
                log.info("%s: %s", name, result)
        except Exception:  # noqa: BLE001 - logged; the next interval tries again
            log.exception("%s failed; retrying at the next interval", name)

    return job


def build_scheduler(app: App) -> BlockingScheduler:
    sched = BlockingScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1,
                                                            "misfire_grace_time": 300})
    now = datetime.now(UTC)
    poll_s = max(1.0, app.cfg.poll_interval.total_seconds())
    if not _imap(app):  # IMAP: the MailboxWatcher thread (IDLE) runs the mailbox passes instead
        sched.add_job(_guarded("mailbox", app.poll_once), "interval", seconds=poll_s, id="mailbox",
                      next_run_time=now)
    sched.add_job(_guarded("erasure", app.run_erasures), "interval", seconds=poll_s, id="erasure",
                  next_run_time=now)
    sched.add_job(_guarded("purge", app.purge_expired), "interval", hours=1, id="purge", next_run_time=now)
    add_staff_jobs(sched, app, now)
    return sched


SLA_CHECK_SECONDS = 60
_CRON_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def add_staff_jobs(sched: BaseScheduler, app: App, now: datetime) -> None:
    """The SLA check (every minute) and the digest (at ``sla.digest_time`` local, on workdays).

    Both run once at start-up too, so a notice or digest that fell due while the daemon was down
    goes out at once; their persisted rows (``SlaNotice``, ``StaffDigest``) make every run after a
    restart a no-op for what was already sent. The digest job has no misfire limit: a late digest
    beats none, and holidays and closed dates are checked when it runs.
    """
    calendar, policy = app.calendar, app.sla_policy  # a bad [sla] table fails here, not in a job
    sched.add_job(_guarded("sla", app.check_sla), "interval", seconds=SLA_CHECK_SECONDS, id="sla",
                  next_run_time=now)
    days = ",".join(_CRON_DAYS[d] for d in sorted(calendar.workdays))
    digest = CronTrigger(day_of_week=days, hour=policy.digest_time.hour, minute=policy.digest_time.minute,
                         timezone=calendar.zone)
    sched.add_job(_guarded("digest", app.send_digest), digest, id="digest", next_run_time=now,
                  misfire_grace_time=None)


def _imap(app: App) -> bool:
    return app.cfg.source.startswith(("imap:", "imaps:"))


def run(app: App) -> None:
    sched = build_scheduler(app)
    watcher = MailboxWatcher(app.open_source, app.poll_once, max(1.0, app.cfg.poll_interval.total_seconds())) \
        if _imap(app) else None

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the running jobs finish", signal.Signals(signum).name)
        if watcher is not None:
            watcher.stopping.set()
        sched.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("inbox-bot running: source=%s transport=%s poll every %ss", app.cfg.source, app.cfg.transport,
             app.cfg.poll_interval.total_seconds())
    if watcher is not None:
        watcher.start()
    sched.start()
    if watcher is not None:
        watcher.stop()
    log.info("inbox-bot stopped")
