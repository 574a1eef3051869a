"""The request state machine: one function per transition.

Each transition checks that it is allowed, writes the new state and an audit event (who, why,
which message), and queues the mails and the erasure job that go with it, all in the caller's
session, so that they commit together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert
from sqlmodel import Session, func, select

from inbox_bot.config import Config
from inbox_bot.erasure.plan import ErasurePlan
from inbox_bot.mail.compose import Composer
from inbox_bot.mail.parse import message_id_of
from inbox_bot.sla import BusinessCalendar
from inbox_bot.store.models import (
    AuditEvent,
    DeletionRequest,
    ErasureJob,
    ErasureStep,
    Flag,
    OutboxMail,
    ReplyToken,
    as_utc,
)
from inbox_bot.tokens import new_token, reply_address, token_hash
from inbox_bot.types import State

RESTORE_HOURS = 24
BACKUP_DAYS = 30
INVOICE_YEARS = 7

ALLOWED: dict[str, frozenset[State]] = {
    "ask": frozenset({State.RECEIVED, State.AWAITING_CONFIRMATION}),
    "confirm": frozenset({State.RECEIVED, State.AWAITING_CONFIRMATION}),
    "cancel": frozenset({State.RECEIVED, State.AWAITING_CONFIRMATION, State.ERASURE_QUEUED}),
    "start_erasure": frozenset({State.ERASURE_QUEUED}),
    "finish_erasure": frozenset({State.ERASING}),
}


_OPEN_FLAGS = select(Flag).where(Flag.request_id == bindparam("request_id"), Flag.status == "open")  # to resolve
# Built once (each reply that joins a flag asks): building a statement costs more than running it.
_FIRST_OPEN_FLAG = (select(Flag.id, Flag.urgent)
                    .where(Flag.request_id == bindparam("request_id"), Flag.status == "open")
                    .order_by(Flag.id).limit(1))
# An audit event is only ever added: a plain insert spares the ORM its flush (most messages write nothing else).
_INSERT_AUDIT = insert(AuditEvent)


class TransitionError(ValueError):
    """A transition that the state machine does not allow from the request's current state."""


def request_view(req: DeletionRequest) -> dict:
    """The request as plain data (templates, --json)."""
    return {
        "id": req.id,
        "email": req.email,
        "account_id": req.account_id,
        "note": req.note,
        "state": req.state,
        "language": req.language,
        "created_at": as_utc(req.created_at),
    }


@dataclass
class Workflow:
    cfg: Config
    composer: Composer
    calendar: BusinessCalendar
    plan: ErasurePlan

    # --- helpers -------------------------------------------------------------------------------

    def _audit(self, s: Session, req: DeletionRequest | None, *, actor: str, event: str, now: datetime,
               from_state: str | None = None, to_state: str | None = None,
               reasons: Sequence[str] = (), message_id: str | None = None) -> None:
        s.connection().execute(_INSERT_AUDIT, {
            "request_id": req.id if req else None, "at": now, "actor": actor, "event": event,
            "from_state": from_state, "to_state": to_state, "message_id": message_id,
            "reasons_json": json.dumps(list(reasons))})

    def _move(self, s: Session, req: DeletionRequest, transition: str, to: State, *, actor: str,
              now: datetime, reasons: Sequence[str], message_id: str | None) -> None:
        current = State(req.state)
        if current not in ALLOWED[transition]:
            raise TransitionError(f"request {req.id}: cannot {transition.replace('_', ' ')} while {current.value}")
        req.state, req.updated_at = to.value, now
        s.add(req)
        self._audit(s, req, actor=actor, event=transition, now=now, from_state=current.value,
                    to_state=to.value, reasons=reasons, message_id=message_id)

    def _thread(self, s: Session, req: DeletionRequest) -> list[str]:
        rows = s.exec(select(OutboxMail.message_id).where(OutboxMail.request_id == req.id,
                                                          OutboxMail.to_addr == req.email)
                      .order_by(OutboxMail.id)).all()
        return list(rows)

    def _mail_customer(self, s: Session, req: DeletionRequest, kind: str, now: datetime,
                       reply_to_msg: str | None = None, **extra: object) -> None:
        """Queue one mail to the account address on file (never to a From or Reply-To of a message).

        Not queued, and flagged instead (threats row 11: loops, spam cannon), when the address is in
        one of our own domains or the daily caps (outgoing.max_per_*_per_day) are reached.
        """
        refused = self._outgoing_refusal(s, req, now)
        if refused:
            self.flag(s, req, reason=f"{kind} mail to {req.email} not sent: {refused}", now=now,
                      suggestion="check the request; reach the customer by hand if genuine")
            return
        token = new_token()
        s.add(ReplyToken(token_hash=token_hash(token), request_id=req.id, created_at=now))
        thread = self._thread(s, req) + ([reply_to_msg] if reply_to_msg else [])
        context = {**self._base_context(req), **extra}
        msg = self.composer.compose(kind, req.email, context,
                                    reply_to=reply_address(self.cfg.mailbox_address, token),
                                    thread=thread, language=req.language, now=now)
        self._queue(s, req, kind, req.email, msg, now)

    def _in_own_domain(self, address: str) -> bool:
        """An address of ours (or a subdomain): the bot never mails it, so it can never answer itself."""
        domain = address.rpartition("@")[2].lower()
        return any(domain == d or domain.endswith("." + d) for d in self.cfg.own_domains)

    def _outgoing_refusal(self, s: Session, req: DeletionRequest, now: datetime) -> str | None:
        """Why no more customer mail may go for ``req`` now (None: it may)."""
        if self._in_own_domain(req.email):
            return "the address is in our own domain (a mail loop)"
        since, out = now - timedelta(days=1), self.cfg.outgoing
        recent = select(func.count()).select_from(OutboxMail).where(
            OutboxMail.to_addr == req.email, OutboxMail.created_at >= since)
        if s.exec(recent.where(OutboxMail.request_id == req.id)).one() >= out.max_per_request_per_day:
            return f"outgoing.max_per_request_per_day ({out.max_per_request_per_day}) reached"
        if s.exec(recent).one() >= out.max_per_address_per_day:
            return f"outgoing.max_per_address_per_day ({out.max_per_address_per_day}) reached"
        return None

    def _queue(self, s: Session, req: DeletionRequest | None, kind: str, to: str, msg, now: datetime) -> None:  # noqa: ANN001
        mid = message_id_of(msg)
        s.add(OutboxMail(request_id=req.id if req else None, kind=kind, to_addr=to, message_id=mid,
                         raw=msg.as_bytes(), created_at=now))

    def _base_context(self, req: DeletionRequest) -> dict:
        return {"request": request_view(req), "restore_hours": RESTORE_HOURS,
                "backup_days": self.cfg.erasure.backup_days, "invoice_years": INVOICE_YEARS,
                "support_address": self.cfg.mailbox_address}

    def _open_flags(self, s: Session, req: DeletionRequest) -> list[Flag]:
        return list(s.exec(_OPEN_FLAGS, params={"request_id": req.id}).all())

    # --- transitions ---------------------------------------------------------------------------

    def add_request(self, s: Session, *, email: str, account_id: str | None, note: str, actor: str,
                    now: datetime, language: str | None = None, source: str = "cli",
                    previous_email: str | None = None, email_changed_at: datetime | None = None) -> DeletionRequest:
        """A new request (state received) and the "we received your request" mail.

        When the account's address changed within ``security.address_change_window`` before the request
        (``previous_email``, ``email_changed_at``), a hijacked session may be behind it (threats row 22):
        the previous address is told too, and the request is flagged, so that no mail alone confirms it.
        """
        changed_at = as_utc(email_changed_at)
        req = DeletionRequest(email=email, account_id=account_id, note=note or "", created_at=now,
                              updated_at=now, language=language or self.cfg.language, source=source,
                              sla_due_at=self.calendar.deadline(now), previous_email=previous_email,
                              email_changed_at=changed_at)
        s.add(req)
        s.flush()
        self._audit(s, req, actor=actor, event="received", now=now, to_state=State.RECEIVED.value,
                    reasons=[f"request from {source}"])
        self._mail_customer(s, req, "received", now)
        if previous_email and previous_email != email and changed_at is not None \
                and now - changed_at <= self.cfg.address_change_window:
            self._alert_previous_address(s, req, now)
        if self.cfg.auto_ask:
            self.ask(s, req, actor="bot", now=now, reasons=["workflow.auto_ask is on"])
        return req

    def _alert_previous_address(self, s: Session, req: DeletionRequest, now: datetime) -> None:
        """Tell the account's previous address about the request and hand the request to a person."""
        old, when = req.previous_email or "", as_utc(req.email_changed_at)
        days = max(0, (now - when).days) if when else 0
        reason = (f"the account's address changed from {old} to {req.email} {days} day(s) before the request "
                  "(a taken-over session?)")
        if self._in_own_domain(old):
            reason += "; the previous address is in our own domain, so it was not told"
        else:
            msg = self.composer.compose("address_change_alert", old, {**self._base_context(req), "changed_at": when},
                                        reply_to=self.cfg.mailbox_address, language=req.language, now=now)
            self._queue(s, req, "address_change_alert", old, msg, now)
            reason += "; the previous address was told"
        self.flag(s, req, reason=reason, now=now, actor="bot", evidence=[f"previous address {old}, changed {when}"],
                  suggestion="confirm only after the customer re-authenticated in the app, or the previous "
                             "address agreed; a reply from the previous address joins this flag")

    def ask(self, s: Session, req: DeletionRequest, *, actor: str, now: datetime,
            reasons: Sequence[str] = ()) -> None:
        """Ask the customer to confirm; this meets the arrival clock of the SLA."""
        self._move(s, req, "ask", State.AWAITING_CONFIRMATION, actor=actor, now=now,
                   reasons=reasons or ["confirmation asked"], message_id=None)
        req.asked_at, req.sla_due_at = now, None
        self._mail_customer(s, req, "ask", now)

    def confirm(self, s: Session, req: DeletionRequest, *, actor: str, now: datetime,
                reasons: Sequence[str], message_id: str | None = None) -> ErasureJob:
        """Queue the erasure job (after the cooling-off) and tell the customer when it starts."""
        self._move(s, req, "confirm", State.ERASURE_QUEUED, actor=actor, now=now, reasons=reasons,
                   message_id=message_id)
        req.sla_due_at = None
        run_after = now + self.cfg.cooling_off
        job = ErasureJob(request_id=req.id, created_at=now, run_after=run_after)
        s.add(job)
        s.flush()
        for seq, step in enumerate(self.plan.steps, 1):
            s.add(ErasureStep(job_id=job.id, seq=seq, name=step.name, executor=step.executor))
        self._audit(s, req, actor=actor, event="erasure_job_queued", now=now,
                    reasons=[f"job {job.id}: {len(self.plan.steps)} steps, not before {run_after.isoformat()}"])
        self._mail_customer(s, req, "erasure_scheduled", now, reply_to_msg=message_id, run_after=run_after)
        return job

    def cancel(self, s: Session, req: DeletionRequest, *, actor: str, now: datetime,
               reasons: Sequence[str], message_id: str | None = None) -> None:
        """Cancel the request and any queued job; a job that has started cannot be cancelled here."""
        self._move(s, req, "cancel", State.CANCELLED, actor=actor, now=now, reasons=reasons,
                   message_id=message_id)
        req.sla_due_at = None
        for job in s.exec(select(ErasureJob).where(ErasureJob.request_id == req.id,
                                                   ErasureJob.status == "queued")).all():
            job.status, job.finished_at = "cancelled", now
            s.add(job)
            self._audit(s, req, actor=actor, event="erasure_job_cancelled", now=now,
                        reasons=[f"job {job.id} cancelled before its first step"])
        self._mail_customer(s, req, "cancelled", now, reply_to_msg=message_id)

    def start_erasure(self, s: Session, req: DeletionRequest, job: ErasureJob, *, now: datetime) -> None:
        self._move(s, req, "start_erasure", State.ERASING, actor="erasure-worker", now=now,
                   reasons=[f"job {job.id} started"], message_id=None)
        job.status, job.started_at = "running", now
        s.add(job)

    def finish_erasure(self, s: Session, req: DeletionRequest, job: ErasureJob, *, now: datetime) -> None:
        self._move(s, req, "finish_erasure", State.ERASED, actor="erasure-worker", now=now,
                   reasons=[f"job {job.id}: every step done"], message_id=None)
        job.status, job.finished_at = "done", now
        req.erased_at = now
        s.add(job)
        self._mail_customer(s, req, "erased", now, steps=[st.name for st in self.plan.steps])

    def flag(self, s: Session, req: DeletionRequest | None, *, reason: str, now: datetime,
             suggestion: str = "", evidence: Sequence[str] = (), reply_text: str = "",
             inbound_id: int | None = None, message_id: str | None = None, actor: str = "bot",
             notify: bool = True) -> int:
        """Hand the request (or a lone message) to a person; staff get a notification with the evidence.

        While a request has an open flag, new messages join it (the oldest) instead of opening another.
        ``notify=False``: no staff mail (the flag is about a staff mail that could not be delivered).
        Returns the flag's id. Joining is what most replies to a flagged request do, so it reads plain rows.
        """
        restore_until = self.restore_window_end(req, now)
        if req is not None:
            s.flush()  # the plain read below must see this session's own changes (a flag resolved just now)
            existing = s.connection().execute(_FIRST_OPEN_FLAG, {"request_id": req.id}).first()
            if existing is not None:
                if restore_until is not None and not existing.urgent:
                    joined = s.get(Flag, existing.id)
                    joined.urgent = True
                    joined.sla_due_at = min(as_utc(joined.sla_due_at) or restore_until, restore_until)
                    s.add(joined)
                self._audit(s, req, actor=actor, event="flag_joined", now=now, message_id=message_id,
                            reasons=[f"flag {existing.id}: {reason}"])
                return existing.id
        due = self.calendar.deadline(now)
        flag = Flag(request_id=req.id if req else None, inbound_id=inbound_id, reason=reason,
                    suggestion=suggestion, evidence_json=json.dumps(list(evidence)), reply_text=reply_text,
                    created_at=now, sla_due_at=min(due, restore_until) if restore_until else due,
                    urgent=restore_until is not None)
        s.add(flag)
        s.flush()
        self._audit(s, req, actor=actor, event="flagged", now=now, message_id=message_id,
                    reasons=[f"flag {flag.id}: {reason}"])
        context = {
            "request": request_view(req) if req else None,
            "flag": {"id": flag.id, "reason": reason, "suggestion": suggestion, "evidence": list(evidence),
                     "reply_text": reply_text, "message_id": message_id, "urgent": flag.urgent},
            "support_address": self.cfg.mailbox_address,
        }
        if notify:
            msg = self.composer.compose("staff_flag", self.cfg.staff_address, context, now=now,
                                        auto_submitted="auto-generated")
            self._queue(s, req, "staff_flag", self.cfg.staff_address, msg, now)
        return flag.id

    def restore_window_end(self, req: DeletionRequest | None, now: datetime) -> datetime | None:
        """When the customer's restore window closes, if ``req`` was erased and it is still open."""
        erased_at = as_utc(req.erased_at) if req is not None and req.state == State.ERASED.value else None
        end = erased_at + timedelta(hours=RESTORE_HOURS) if erased_at else None
        return end if end is not None and now < end else None

    def resolve_flags(self, s: Session, req: DeletionRequest, *, actor: str, resolution: str,
                      reason: str, now: datetime) -> int:
        """Close the request's open flags (staff acted on it); audited. Returns how many."""
        flags = self._open_flags(s, req)
        for flag in flags:
            self.resolve_flag(s, flag, req, actor=actor, resolution=resolution, reason=reason, now=now)
        return len(flags)

    def resolve_flag(self, s: Session, flag: Flag, req: DeletionRequest | None, *, actor: str, resolution: str,
                     reason: str, now: datetime) -> None:
        """Close one flag with the staff's resolution and reason; audited (on its request, if any)."""
        flag.status, flag.resolved_at, flag.resolved_by = "resolved", now, actor
        flag.resolution, flag.resolution_reason = resolution, reason
        s.add(flag)
        self._audit(s, req, actor=actor, event="flag_resolved", now=now,
                    reasons=[f"flag {flag.id}: {resolution}: {reason}"])

    def notify(self, s: Session, req: DeletionRequest, kind: str, *, now: datetime, reasons: Sequence[str],
               reply_to_msg: str | None = None) -> None:
        """A notice from the bot to the account address that changes no state (e.g. ``link_expired``); audited."""
        self._audit(s, req, actor="bot", event="notice", now=now, reasons=[f"mail {kind}", *reasons])
        self._mail_customer(s, req, kind, now, reply_to_msg=reply_to_msg)

    def reply(self, s: Session, req: DeletionRequest, kind: str, *, actor: str, now: datetime,
              reasons: Sequence[str]) -> None:
        """Staff answer the customer with the template ``kind``, to the account address on file.

        An ``ask`` is the ask transition (it meets the arrival clock and is refused once the request
        is past confirmation), so a template can never claim a state the request is not in.
        """
        if kind == "ask":
            self.ask(s, req, actor=actor, now=now, reasons=reasons)
            return
        self._audit(s, req, actor=actor, event="staff_reply", now=now, reasons=[f"mail {kind}", *reasons])
        self._mail_customer(s, req, kind, now)
