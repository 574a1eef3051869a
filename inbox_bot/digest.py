"""The daily staff digest: what needs a person today, in one mail (HTML and text).

Requests by state, every running SLA clock with its business time left (breached first), and each
open flag (urgent ones, a reply inside the restore window, first) with the customer's words, the
bot's evidence and a one-line suggestion. A day with no
clock and no flag says so in one line instead of sending empty tables.

Sent once per local business day at ``sla.digest_time`` (a ``StaffDigest`` row per day, written in
the same transaction as the outbox mail); ``inbox-bot digest --print`` renders it without sending.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from inbox_bot.sla_watch import (
    SlaWatch,
    clock_view,
    describe_left,
    judge,
    local_time,
    queue_staff_mail,
    running_clocks,
    sort_for_staff,
)
from inbox_bot.store.db import transaction
from inbox_bot.store.models import DeletionRequest, Flag, StaffDigest, as_utc
from inbox_bot.types import State

log = logging.getLogger("inbox_bot.digest")

KIND = "digest"
MAX_EVIDENCE = 8
"""Evidence lines per flag in the digest; `inbox-bot flags show` has them all."""
MAX_WORDS = 600
"""Characters of the customer's words per flag in the digest."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _flag_view(s: Session, watch: SlaWatch, flag: Flag, now: datetime) -> dict[str, Any]:
    req = s.get(DeletionRequest, flag.request_id) if flag.request_id is not None else None
    evidence = json.loads(flag.evidence_json)
    suggestion = _one_line(flag.suggestion) or f"Read the evidence and decide: inbox-bot flags show {flag.id}"
    due = as_utc(flag.sla_due_at)
    return {
        "id": flag.id,
        "request_id": flag.request_id,
        "email": req.email if req else None,
        "state": req.state if req else None,
        "reason": _one_line(flag.reason),
        "reply_text": _clip(flag.reply_text, MAX_WORDS),
        "evidence": evidence[:MAX_EVIDENCE],
        "more_evidence": max(0, len(evidence) - MAX_EVIDENCE),
        "suggestion": suggestion,
        "opened": local_time(as_utc(flag.created_at), watch.calendar),
        "due": local_time(due, watch.calendar) if due else None,
        "left": describe_left(watch.calendar.business_time_between(now, due)) if due else None,
        "breached": bool(due and now >= due),
        "urgent": flag.urgent,
    }


def build_digest(s: Session, watch: SlaWatch, now: datetime) -> dict[str, Any]:
    """The digest's data at ``now`` (template context); pure reads, nothing is written."""
    local = now.astimezone(watch.calendar.zone)
    counts = Counter(s.exec(select(DeletionRequest.state)).all())
    states = [{"state": st.value, "count": counts[st.value]} for st in State if counts[st.value]]
    statuses = sort_for_staff([judge(watch.calendar, watch.policy, c, now) for c in running_clocks(s)])
    clocks = [clock_view(st, watch.calendar) for st in statuses]
    flags = [_flag_view(s, watch, f, now)
             for f in s.exec(select(Flag).where(Flag.status == "open").order_by(Flag.urgent.desc(), Flag.id))]
    last = s.exec(select(StaffDigest.sent_at).order_by(StaffDigest.sent_at.desc())).first()
    since = as_utc(last) if last is not None else now - timedelta(days=7)  # the first digest looks back a week
    erased = [{"id": r.id, "email": r.email, "account_id": r.account_id,
               "erased": local_time(as_utc(r.erased_at), watch.calendar)}
              for r in s.exec(select(DeletionRequest).where(DeletionRequest.erased_at.is_not(None))
                              .order_by(DeletionRequest.erased_at))
              if since < as_utc(r.erased_at) <= now]
    return {
        "erased": erased,
        "day": f"{local:%A} {local.day} {local:%B %Y}",
        "generated": local_time(now, watch.calendar),
        "states": states,
        "total": sum(counts.values()),
        "clocks": clocks,
        "breached": sum(1 for c in clocks if c["breached"]),
        "flags": flags,
        "empty": not clocks and not flags and not erased,
        "support_address": watch.support_address,
        "timezone": watch.calendar.timezone,
    }


def render_digest(engine: Engine, watch: SlaWatch, now: datetime) -> dict[str, str]:
    """Subject, text and HTML of the digest as it would be sent at ``now`` (for `digest --print`)."""
    with transaction(engine) as s:
        context = build_digest(s, watch, now)
    return watch.composer.render(KIND, context)


def digest_day(watch: SlaWatch, now: datetime) -> date | None:
    """The local business day whose digest is due at ``now``, or None (not a business day, too early)."""
    local = now.astimezone(watch.calendar.zone)
    if not watch.calendar.is_business_day(local.date()) or local.time() < watch.policy.digest_time:
        return None
    return local.date()


def send_digest_if_due(engine: Engine, watch: SlaWatch, now: datetime) -> dict[str, int]:
    """Queue today's digest if it is due and not yet sent; safe to call any number of times.

    A digest missed at its time (the daemon was down) goes out when the job next runs that day:
    late is better than none, and tomorrow's digest would not say what was breached today.
    """
    day = digest_day(watch, now)
    if day is None:
        return {"digest": 0}
    try:
        with transaction(engine) as s:
            if s.exec(select(StaffDigest).where(StaffDigest.day == day)).first() is not None:
                return {"digest": 0}
            queue_staff_mail(s, watch, KIND, build_digest(s, watch, now), now)
            s.add(StaffDigest(day=day, sent_at=now))
            s.flush()
    except IntegrityError:
        log.info("digest for %s was already queued by another instance", day)
        return {"digest": 0}
    log.info("digest for %s queued for %s", day, watch.staff_address)
    return {"digest": 1}
