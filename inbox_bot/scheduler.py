"""``inbox-bot run``: the daemon. APScheduler runs the jobs; SIGTERM/SIGINT stop it cleanly.

Jobs: the mailbox pass (which also delivers the outbox) and the erasure worker (a cheap query
when nothing is due). Each job runs at start-up, then every ``mailbox.poll_interval``; one instance at a time, missed runs coalesced, and a
failing pass is logged and retried at the next interval (never a crash loop).
"""

from __future__ import annotations

import logging
import signal
from datetime import UTC, datetime

from apscheduler.schedulers.blocking import BlockingScheduler

from inbox_bot.app import App

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
    sched.add_job(_guarded("mailbox", app.poll_once), "interval", seconds=poll_s, id="mailbox",
                  next_run_time=now)
    sched.add_job(_guarded("erasure", app.run_erasures), "interval", seconds=poll_s, id="erasure",
                  next_run_time=now)
    return sched


def run(app: App) -> None:
    sched = build_scheduler(app)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping after the running jobs finish", signal.Signals(signum).name)
        sched.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("inbox-bot running: source=%s transport=%s poll every %ss", app.cfg.source, app.cfg.transport,
             app.cfg.poll_interval.total_seconds())
    sched.start()
    log.info("inbox-bot stopped")
