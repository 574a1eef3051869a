"""The mailbox watcher of ``inbox-bot run`` for IMAP: a thread that loops IDLE-wait -> pass.

A dedicated thread rather than an APScheduler job, because the wait blocks for as long as the
mailbox is quiet and must answer a notification at once (Dovecot sends it 0.5 s after the mail
arrived; the pass starts a round trip later). The erasure and SLA jobs stay on APScheduler.

Every failure (connection lost, server restarting, login refused, a pass that raised) drops the
connection and retries after a capped exponential backoff with jitter, logged as one line
(``imap reconnect in 8.0s after ConnectionRefusedError: ...``). It never exits on its own:
``inbox-bot run`` stays up through outages and comes back by itself. The password is never logged
(it is not in the URL, and the login error carries only the server's text).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from inbox_bot.config import ConfigError
from inbox_bot.mail.sources import Source, SourceError

log = logging.getLogger("inbox_bot.watcher")

BACKOFF_BASE = 1.0  # seconds before the first retry (0.5-1.0 s with jitter)
BACKOFF_CAP = 300.0  # never wait longer than this between attempts


def backoff_delay(failures: int, rnd: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter": half fixed, half random, so many bots that
    lost the same server do not come back in lock-step, yet the wait never collapses to zero."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, failures - 1))
    return ceiling / 2 + (rnd or random).uniform(0, ceiling / 2)


def _cause(exc: BaseException) -> BaseException:
    """The underlying error (SourceError wraps the socket/IMAP one) for a log line that says what broke."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


class MailboxWatcher(threading.Thread):
    """Runs ``poll(source)`` at start, then after every new-mail notification and at least every
    ``interval`` seconds (which also catches staff replies in the Sent folder, not watched by IDLE)."""

    def __init__(self, open_source: Callable[[], Source], poll: Callable[[Source], dict[str, int]],
                 interval: float) -> None:
        super().__init__(name="mailbox-watcher", daemon=True)
        self.open_source = open_source
        self.poll = poll
        self.interval = interval
        self.stopping = threading.Event()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        failures = 0
        source: Source | None = None
        try:
            while not self.stopping.is_set():
                try:
                    source = source or self.open_source()
                    result = self.poll(source)
                    if failures:
                        log.info("imap: back after %d failed attempt(s)", failures)
                        failures = 0
                    if result and any(result.values()):
                        log.info("mailbox: %s", result)
                    source.wait(self.interval, self.stopping)
                except Exception as exc:  # noqa: BLE001 - every failure: back off and retry, never exit
                    failures += 1
                    delay = backoff_delay(failures)
                    log.warning("imap reconnect in %.1fs after %s: %s", delay, type(_cause(exc)).__name__, exc)
                    if failures == 1 and not isinstance(exc, SourceError | ConfigError):
                        log.error("unexpected error in the mailbox pass", exc_info=exc)
                    disconnect = getattr(source, "disconnect", None)
                    if disconnect is not None:
                        disconnect()
                    self.stopping.wait(delay)
        finally:
            if source is not None:
                source.close()
