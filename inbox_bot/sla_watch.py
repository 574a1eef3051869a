"""The SLA watch: which promises are running, and the staff reminder and escalation for each, sent once.

Two kinds of clock run (issue 5): a request's *arrival* clock, from its arrival until the first mail
that asks for confirmation (state ``received`` with ``sla_due_at``), and a *flag* clock, from a new
human flag until staff resolve it (open ``Flag`` with ``sla_due_at``). A clock that has used
``reminder_share`` of its business time earns a reminder; a breached one an escalation. Each notice
is an ``SlaNotice`` row (unique per clock and level) written in the same transaction as its outbox
mail and audit event, so running the check again, after a restart or from a second instance, never
sends it twice. A clock first seen already breached gets only the escalation: a late "75% used"
reminder would be noise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from inbox_bot.mail.compose import Composer
from inbox_bot.mail.parse import message_id_of
from inbox_bot.sla import BusinessCalendar, SlaPolicy
from inbox_bot.store.db import transaction
from inbox_bot.store.models import AuditEvent, DeletionRequest, Flag, OutboxMail, SlaNotice, as_utc
from inbox_bot.types import State

log = logging.getLogger("inbox_bot.sla_watch")

REMINDER, ESCALATION = "reminder", "escalation"
LEVELS = (REMINDER, ESCALATION)
"""Ordered: a notice at a level makes every lower level moot."""


@dataclass(frozen=True)
class SlaWatch:
    """What the watch and the digest need to judge clocks and write to staff."""

    calendar: BusinessCalendar
    policy: SlaPolicy
    composer: Composer
    staff_address: str
    support_address: str


@dataclass(frozen=True)
class Clock:
    """One running promise, read from a request or a flag."""

    kind: str  # "request" or "flag"
    id: int
    request_id: int | None
    started_at: datetime
    due_at: datetime
    email: str | None = None
    state: str | None = None
    reason: str = ""
    suggestion: str = ""
    reply_text: str = ""


@dataclass(frozen=True)
class ClockStatus:
    """A clock judged at one instant: business time left (negative once overdue) and the level reached."""

    clock: Clock
    left: timedelta
    reminder_at: datetime | None
    level: str | None

    @property
    def breached(self) -> bool:
        return self.level == ESCALATION


def _request_clock(req: DeletionRequest) -> Clock | None:
    if req.state != State.RECEIVED.value or req.sla_due_at is None:
        return None
    return Clock(kind="request", id=req.id, request_id=req.id, started_at=as_utc(req.created_at),
                 due_at=as_utc(req.sla_due_at), email=req.email, state=req.state,
                 reason="new request: ask the customer to confirm")


def _flag_clock(s: Session, flag: Flag) -> Clock | None:
    if flag.status != "open" or flag.sla_due_at is None:
        return None
    req = s.get(DeletionRequest, flag.request_id) if flag.request_id is not None else None
    return Clock(kind="flag", id=flag.id, request_id=flag.request_id, started_at=as_utc(flag.created_at),
                 due_at=as_utc(flag.sla_due_at), email=req.email if req else None,
                 state=req.state if req else None, reason=flag.reason, suggestion=flag.suggestion,
                 reply_text=flag.reply_text)


def running_clocks(s: Session) -> list[Clock]:
    """Every clock that runs now: arrival clocks of requests still in ``received``, then open flags."""
    reqs = s.exec(select(DeletionRequest).where(DeletionRequest.state == State.RECEIVED.value,
                                                DeletionRequest.sla_due_at.is_not(None))
                  .order_by(DeletionRequest.id))
    flags = s.exec(select(Flag).where(Flag.status == "open", Flag.sla_due_at.is_not(None)).order_by(Flag.id))
    clocks = [_request_clock(r) for r in reqs] + [_flag_clock(s, f) for f in flags]
    return [c for c in clocks if c is not None]


def _load_clock(s: Session, kind: str, clock_id: int) -> Clock | None:
    """The clock as it stands inside this transaction (None if it stopped meanwhile)."""
    if kind == "request":
        req = s.get(DeletionRequest, clock_id)
        return _request_clock(req) if req else None
    flag = s.get(Flag, clock_id)
    return _flag_clock(s, flag) if flag else None


def judge(calendar: BusinessCalendar, policy: SlaPolicy, clock: Clock, now: datetime) -> ClockStatus:
    """Where ``clock`` stands at ``now``; the reminder moment is counted in business time, not wall time."""
    total = calendar.business_time_between(clock.started_at, clock.due_at)
    reminder_at = (calendar.add_business_time(clock.started_at, total * policy.reminder_share)
                   if total > timedelta(0) else None)
    if now >= clock.due_at:
        level: str | None = ESCALATION
    elif reminder_at is not None and now >= reminder_at:
        level = REMINDER
    else:
        level = None
    return ClockStatus(clock=clock, left=calendar.business_time_between(now, clock.due_at),
                       reminder_at=reminder_at, level=level)


def sort_for_staff(statuses: list[ClockStatus]) -> list[ClockStatus]:
    """Breached first (most overdue first), then the rest by how soon they are due."""
    return sorted(statuses, key=lambda st: (not st.breached, st.clock.due_at, st.clock.kind, st.clock.id))


def format_span(span: timedelta) -> str:
    """'1 d 2 h 5 min' style, for business-time spans (a business day is not 24 h, so days are avoided)."""
    minutes = int(abs(span).total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def describe_left(left: timedelta) -> str:
    """Business time left, or how far over the deadline a clock is."""
    if left > timedelta(0):
        return f"{format_span(left)} business time left"
    if left == timedelta(0):
        return "due now"
    return f"overdue by {format_span(left)} business time"


def short_left(left: timedelta) -> str:
    """Business time left for a table cell: '2 h 15 min' or 'overdue 1 h'."""
    return f"overdue {format_span(left)}" if left < timedelta(0) else format_span(left)


def local_time(moment: datetime, calendar: BusinessCalendar) -> str:
    """'Mon 7 Dec 2026, 16:00 CET': staff read deadlines on their own wall clock."""
    t = moment.astimezone(calendar.zone)
    return f"{t:%a} {t.day} {t:%b %Y, %H:%M %Z}"


def clock_view(status: ClockStatus, calendar: BusinessCalendar) -> dict[str, Any]:
    """A clock as template data: everything preformatted, so the templates stay free of arithmetic."""
    c = status.clock
    if c.kind == "request":
        title, short = f"Request #{c.request_id}: reply to the new request", f"Request #{c.request_id} (new)"
        commands = [f"inbox-bot request show {c.request_id}", f"inbox-bot request ask {c.request_id}"]
    else:
        title = (f"Flag #{c.id} on request #{c.request_id}" if c.request_id is not None
                 else f"Flag #{c.id} (message matched no request)")
        short = f"Flag #{c.id} (request #{c.request_id})" if c.request_id is not None else f"Flag #{c.id} (no request)"
        commands = [f"inbox-bot flags show {c.id}",
                    f'inbox-bot flags resolve {c.id} --action confirm|cancel|reply|dismiss --reason "..."']
    return {
        "kind": c.kind, "id": c.id, "request_id": c.request_id, "title": title, "short": short, "email": c.email,
        "state": c.state, "reason": c.reason, "suggestion": c.suggestion, "reply_text": c.reply_text,
        "started": local_time(c.started_at, calendar), "due": local_time(c.due_at, calendar),
        "due_short": f"{(d := c.due_at.astimezone(calendar.zone)):%a} {d.day} {d:%b, %H:%M}",
        "left": describe_left(status.left), "left_short": short_left(status.left), "breached": status.breached,
        "commands": commands,
    }


def queue_staff_mail(s: Session, watch: SlaWatch, kind: str, context: dict[str, Any], now: datetime,
                     request_id: int | None = None) -> OutboxMail:
    """Compose a staff mail and put it in the outbox (the caller's transaction)."""
    msg = watch.composer.compose(kind, watch.staff_address, context, now=now, auto_submitted="auto-generated")
    row = OutboxMail(request_id=request_id, kind=kind, to_addr=watch.staff_address, message_id=message_id_of(msg),
                     raw=msg.as_bytes(), created_at=now)
    s.add(row)
    return row


def _sent_levels(s: Session, clock: Clock) -> set[str]:
    rows = s.exec(select(SlaNotice.level).where(SlaNotice.clock_kind == clock.kind, SlaNotice.clock_id == clock.id))
    return set(rows)


def _needs(status: ClockStatus, sent: set[str]) -> bool:
    if status.level is None:
        return False
    return not any(LEVELS.index(level) >= LEVELS.index(status.level) for level in sent if level in LEVELS)


def _notify(s: Session, watch: SlaWatch, status: ClockStatus, now: datetime) -> None:
    clock, level = status.clock, status.level
    assert level is not None
    view = clock_view(status, watch.calendar)
    context = {"level": level, "clock": view, "share_percent": round(watch.policy.reminder_share * 100),
               "support_address": watch.support_address}
    queue_staff_mail(s, watch, f"sla_{level}", context, now, request_id=clock.request_id)
    s.add(SlaNotice(clock_kind=clock.kind, clock_id=clock.id, level=level, due_at=clock.due_at, sent_at=now))
    what = "arrival clock" if clock.kind == "request" else f"flag {clock.id} clock"
    s.add(AuditEvent(request_id=clock.request_id, at=now, actor="sla-watch", event=f"sla_{level}",
                     reasons_json=json.dumps([f"{what}: due {view['due']}, {view['left']}; "
                                              f"staff notified at {watch.staff_address}"])))
    s.flush()


def check_clocks(engine: Engine, watch: SlaWatch, now: datetime) -> dict[str, int]:
    """Send every reminder and escalation that is due and not yet sent; returns counts by level.

    One transaction per notice: a notice that fails (or that another instance wrote first, caught by
    the unique constraint) does not hold back the others.
    """
    counts = {REMINDER: 0, ESCALATION: 0}
    with transaction(engine) as s:
        keys = [(c.kind, c.id) for c in running_clocks(s)]
    for kind, clock_id in keys:
        try:
            with transaction(engine) as s:
                clock = _load_clock(s, kind, clock_id)
                if clock is None:
                    continue
                status = judge(watch.calendar, watch.policy, clock, now)
                if not _needs(status, _sent_levels(s, clock)):
                    continue
                _notify(s, watch, status, now)
                counts[status.level] += 1
                log.info("sla %s for %s %s (due %s)", status.level, kind, clock_id, clock.due_at.isoformat())
        except IntegrityError:
            log.info("sla notice for %s %s was already written by another instance", kind, clock_id)
    return counts
