"""Deliver pending outbox rows through a transport; a row is marked sent only after delivery.

Each mail is claimed, sent and recorded in three short transactions, so no database lock is held
while a server talks. The claim sets ``next_attempt_at`` ahead: a second process leaves the mail
alone, and a crash mid-send looks like a failed attempt (retried after its backoff). The "sent"
commit follows each accepted mail at once, which keeps the at-least-once window of SMTP (accepted
by the server, not yet recorded) to that one mail.

Retries: capped exponential backoff with jitter; a permanent refusal (5xx) or the last allowed
attempt marks the row ``failed`` and calls ``on_failed`` in that same transaction (the app flags a
person there: this layer must not import the workflow). A per-recipient hourly limit defers, never
drops, what would flood one address.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inbox_bot.config import OutgoingSettings
from inbox_bot.mail.transports import Transport, TransportError, TransportUnavailable
from inbox_bot.store.db import transaction
from inbox_bot.store.models import OutboxMail, as_utc

log = logging.getLogger("inbox_bot.outbox")
CLAIM = timedelta(minutes=5)  # the least time a claimed mail is left alone (a send can take minutes)
RATE_WINDOW = timedelta(hours=1)
JITTER = 0.25  # a retry comes up to 25% before its nominal time, so mails that failed together spread out

OnFailed = Callable[[Session, OutboxMail, bool], None]  # (session, the failed row, permanent?)


@dataclass(frozen=True)
class _Claimed:
    id: int
    kind: str
    to_addr: str
    raw: bytes
    created_ns: int


def backoff_delay(settings: OutgoingSettings, attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """The wait after the ``attempts``-th failure: base, 2*base, 4*base ... up to the cap, less jitter."""
    base, cap = settings.retry_backoff.total_seconds(), settings.retry_backoff_max.total_seconds()
    full = min(base * 2.0 ** min(max(attempts - 1, 0), 40), cap)
    return timedelta(seconds=full * (1 - JITTER * rng()))


def rate_limited_until(s: Session, to_addr: str, now: datetime, limit: int) -> datetime | None:
    """When the next mail to ``to_addr`` may go, if ``limit`` mails went to it within the last hour."""
    recent = s.exec(select(OutboxMail.sent_at)
                    .where(OutboxMail.to_addr == to_addr, OutboxMail.status == "sent",
                           col(OutboxMail.sent_at).is_not(None))
                    .order_by(col(OutboxMail.sent_at).desc()).limit(limit)).all()
    window = [t for t in (as_utc(v) for v in recent) if t is not None and t > now - RATE_WINDOW]
    return min(window) + RATE_WINDOW if len(window) >= limit else None


def _due(row: OutboxMail, now: datetime) -> bool:
    return row.status == "pending" and (row.next_attempt_at is None or as_utc(row.next_attempt_at) <= now)


def _claim(engine: Engine, mail_id: int, now: datetime, settings: OutgoingSettings,
           rng: Callable[[], float]) -> _Claimed | str | None:
    """Claim one due mail for sending; "deferred" if its recipient is at the hourly limit."""
    with transaction(engine) as s:
        row = s.get(OutboxMail, mail_id, with_for_update=True)
        if row is None or not _due(row, now):
            return None
        until = rate_limited_until(s, row.to_addr, now, settings.max_per_recipient_per_hour)
        if until is not None:
            row.next_attempt_at = until
            s.add(row)
            log.warning("outbox rate limit: %s got %d mails in the last hour (outgoing.max_per_recipient_per_hour)"
                        "; mail id=%s kind=%s waits until %s", row.to_addr, settings.max_per_recipient_per_hour,
                        row.id, row.kind, until.isoformat())
            return "deferred"
        row.next_attempt_at = now + max(CLAIM, backoff_delay(settings, row.attempts + 1, rng))
        s.add(row)
        created = as_utc(row.created_at)
        return _Claimed(row.id, row.kind, row.to_addr, row.raw, int(created.timestamp() * 1e9))


def deliver_pending(engine: Engine, transport: Transport, clock: Callable[[], datetime],
                    settings: OutgoingSettings | None = None, on_failed: OnFailed | None = None,
                    rng: Callable[[], float] = random.random) -> dict[str, int]:
    """Deliver every due pending mail, oldest first. Returns counts: sent, retry, deferred, failed.

    Stops early when the transport is unavailable (the rest waits for the next pass).
    """
    settings = settings or OutgoingSettings()
    counts = {"sent": 0, "retry": 0, "deferred": 0, "failed": 0}
    now = clock()
    with transaction(engine) as s:
        pending = s.exec(select(OutboxMail.id, OutboxMail.next_attempt_at)
                         .where(OutboxMail.status == "pending").order_by(OutboxMail.id)).all()
    ids = [mail_id for mail_id, at in pending if at is None or as_utc(at) <= now]
    for mail_id in ids:
        claimed = _claim(engine, mail_id, clock(), settings, rng)
        if claimed is None:
            continue
        if claimed == "deferred":
            counts["deferred"] += 1
            continue
        assert isinstance(claimed, _Claimed)
        try:
            transport.deliver(claimed.id, claimed.to_addr, claimed.raw, claimed.created_ns)
        except TransportUnavailable as exc:
            _record_unavailable(engine, claimed, exc, clock(), settings, rng)
            counts["retry"] += 1
            log.error("outbox: transport unavailable, delivery paused until the next pass (mail id=%s waits, "
                      "not counted as an attempt): %s", claimed.id, exc)
            break
        except TransportError as exc:
            counts[_record_failure(engine, claimed, exc, clock(), settings, on_failed, rng)] += 1
        else:
            _record_sent(engine, claimed, clock())
            counts["sent"] += 1
    return counts


def _record_sent(engine: Engine, claimed: _Claimed, now: datetime) -> None:
    with transaction(engine) as s:
        row = s.get(OutboxMail, claimed.id)
        row.attempts += 1
        row.status, row.sent_at, row.last_error, row.next_attempt_at = "sent", now, None, None
        s.add(row)
    log.info("outbox sent id=%s kind=%s to=%s message_id=%s attempt=%s", row.id, row.kind, row.to_addr,
             row.message_id, row.attempts)


def _record_failure(engine: Engine, claimed: _Claimed, exc: TransportError, now: datetime,
                    settings: OutgoingSettings, on_failed: OnFailed | None, rng: Callable[[], float]) -> str:
    """Schedule the retry, or mark the mail failed (permanent, or out of attempts) and hand it on."""
    with transaction(engine) as s:
        row = s.get(OutboxMail, claimed.id)
        row.attempts += 1
        row.last_error = str(exc)
        if exc.permanent or row.attempts >= settings.max_attempts:
            row.status, row.next_attempt_at = "failed", None
            s.add(row)
            if on_failed is not None:
                on_failed(s, row, exc.permanent)
            why = "permanent failure" if exc.permanent else f"no success in {row.attempts} attempts"
            log.error("outbox failed id=%s kind=%s to=%s (%s): %s", row.id, row.kind, row.to_addr, why, exc)
            return "failed"
        row.next_attempt_at = now + backoff_delay(settings, row.attempts, rng)
        s.add(row)
    log.warning("outbox retry id=%s kind=%s to=%s attempt=%s/%s, next at %s: %s", row.id, row.kind, row.to_addr,
                row.attempts, settings.max_attempts, as_utc(row.next_attempt_at).isoformat(), exc)
    return "retry"


def _record_unavailable(engine: Engine, claimed: _Claimed, exc: TransportError, now: datetime,
                        settings: OutgoingSettings, rng: Callable[[], float]) -> None:
    with transaction(engine) as s:
        row = s.get(OutboxMail, claimed.id)
        row.last_error, row.next_attempt_at = str(exc), now + backoff_delay(settings, 1, rng)
        s.add(row)
