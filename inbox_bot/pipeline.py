"""One message's way through: source -> parse -> triage -> act (one transaction) -> mark processed.

The message is marked processed at the source only after the transaction committed. If the
process dies in between, the next pass finds the message's ``source_key`` already recorded
and only marks it: no second action, no second mail. The same message arriving again under
another key (same Message-ID or same bytes) is recorded as ``duplicate`` and not acted on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import bindparam, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, and_, or_, select

from inbox_bot.intake import parse_notification
from inbox_bot.mail.dkim_check import DnsFunc, verify_dkim
from inbox_bot.mail.parse import ParseFailure, parse_mail
from inbox_bot.mail.sources import Source, SourceItem
from inbox_bot.store.db import transaction
from inbox_bot.store.models import (
    AuditEvent,
    DeletionRequest,
    Flag,
    InboundMessage,
    OutboxMail,
    ReplyToken,
    as_utc,
)
from inbox_bot.tokens import token_hash, tokens_in
from inbox_bot.triage import TriageContext, triage
from inbox_bot.triage.decide import hold_back
from inbox_bot.triage.sender import Sender
from inbox_bot.types import Action, Candidates, Decision, Facts, InboundMail, Intent, RequestSnapshot, State
from inbox_bot.workflow import TransitionError, Workflow

log = logging.getLogger("inbox_bot.pipeline")

OPEN_STATES = (State.RECEIVED, State.AWAITING_CONFIRMATION, State.ERASURE_QUEUED, State.ERASING)

SUGGESTIONS = {
    Intent.CONFIRM: "looks like a confirmation: check the sender, then `request confirm`",
    Intent.CANCEL: "looks like a change of mind: check the sender, then `request cancel`",
    Intent.QUESTION: "answer the customer's question; nothing is erased until they confirm",
    Intent.NONE: "read the message and decide: confirm, cancel or reply",
}


# The per-message queries, built once: building a statement costs more than SQLite takes to run it.
_SEEN = select(InboundMessage.id).where(InboundMessage.source_key == bindparam("source_key"))
_OPEN_FLAG = select(Flag.id).where(Flag.request_id == bindparam("request_id"), Flag.status == "open")
_THREAD_OWNERS = (select(OutboxMail.message_id, DeletionRequest)  # the mails we sent, with their requests
                  .join(DeletionRequest, DeletionRequest.id == OutboxMail.request_id)
                  .where(OutboxMail.message_id.in_(bindparam("ids", expanding=True))))
_TOKEN = (select(ReplyToken.request_id, ReplyToken.created_at, ReplyToken.used_at)
          .where(ReplyToken.token_hash == bindparam("token_hash")))
_OPEN_REQUESTS_OF = (select(DeletionRequest)
                     .where(DeletionRequest.email == bindparam("email"),
                            DeletionRequest.state.in_([x.value for x in OPEN_STATES]))
                     .order_by(DeletionRequest.id.desc()))
_INSERT_INBOUND = insert(InboundMessage)  # a plain insert: an ORM flush of its own cost more than the work
# Recorded before: under this key (done already), or the same bytes / Message-ID first recorded under another
# key (this is a duplicate of it; earlier duplicates are left out, so a mail resent in a loop stays one row).
_EARLIER = (select(InboundMessage.id, InboundMessage.request_id, InboundMessage.source_key)
            .where(or_(InboundMessage.source_key == bindparam("source_key"),  # each term on its own index
                       and_(InboundMessage.raw_sha256 == bindparam("raw_sha256"),
                            InboundMessage.action != Action.DUPLICATE.value),
                       and_(InboundMessage.message_id == bindparam("message_id"),  # NULL matches nothing
                            InboundMessage.action != Action.DUPLICATE.value)))
            .order_by(InboundMessage.id))


def snapshot(s: Session, req: DeletionRequest, seen: dict[int, RequestSnapshot] | None = None) -> RequestSnapshot:
    """``req`` as triage sees it; ``seen`` (one lookup's memo): thread, token and sender often name one request.

    The request object stays referenced for the rest of the session (``s.info``): the identity map holds
    objects weakly, and the transaction's later ``s.get`` of the matched request then needs no query.
    The open flag is a plain read (no ORM flush): snapshots are taken while matching, before any write.
    """
    if seen is not None and req.id in seen:
        return seen[req.id]
    s.info.setdefault("requests", {})[req.id] = req
    open_flag = s.connection().execute(_OPEN_FLAG, {"request_id": req.id}).first()
    snap = RequestSnapshot(id=req.id, email=req.email, state=State(req.state), open_flag=open_flag is not None,
                           account_id=req.account_id)
    if seen is not None:
        seen[req.id] = snap
    return snap


def find_candidates(s: Session, mail: InboundMail, mailbox: str, *, now: datetime | None = None,
                    token_max_age: timedelta | None = None) -> Candidates:
    """The I/O half of matching: look the message's ids, tokens and sender up in the database.

    Tokens are read from To/Cc only (never References/Delivered-To: threats row 9). A token stays bound
    to its request; one already used, or older than ``token_max_age`` at ``now`` (our receipt time, not
    the mail's Date), is reported as ``token_problem`` so that it cannot confirm (row 10). The sender's
    open requests are looked up only when neither the thread nor a token found one: Match reads them only then.
    Matching runs before the transaction writes anything, so plain reads (no ORM flush) are what it sees.
    """
    by_thread = None
    seen: dict[int, RequestSnapshot] = {}
    ids = [*mail.in_reply_to, *reversed(mail.references), *mail.embedded_ids]
    if ids:
        owner = dict(s.exec(_THREAD_OWNERS, params={"ids": ids}).all())
        for mid in ids:  # In-Reply-To first, then the newest reference
            if mid in owner:
                by_thread = snapshot(s, owner[mid], seen)
                break
    tokens = tokens_in([*mail.to_addrs, *mail.cc_addrs], mailbox)
    by_token, token_problem, token_expired = None, None, False
    for token in tokens:
        row = s.connection().execute(_TOKEN, {"token_hash": token_hash(token)}).first()
        if row is not None:
            by_token = snapshot(s, s.get(DeletionRequest, row.request_id), seen)
            created = as_utc(row.created_at)
            if row.used_at is not None:
                token_problem = "reply token already used for a confirmation: it cannot confirm again"
            elif now is not None and token_max_age is not None and created is not None \
                    and now - created > token_max_age:
                token_problem = f"reply token expired (issued {created:%Y-%m-%d}, older than {token_max_age.days} days)"
                token_expired = True
            break
    if tokens and by_token is None:
        token_problem = "reply token matches no request (mistyped or guessed): it cannot confirm"
    by_sender: tuple[RequestSnapshot, ...] = ()
    if mail.from_addr and by_thread is None and by_token is None:
        reqs = s.exec(_OPEN_REQUESTS_OF, params={"email": mail.from_addr}).all()
        by_sender = tuple(snapshot(s, r, seen) for r in reqs)
    return Candidates(by_thread=by_thread, by_token=by_token, token_seen=bool(tokens), by_sender=by_sender,
                      token_problem=token_problem, token_expired=token_expired)


@dataclass
class Pipeline:
    engine: Engine
    workflow: Workflow
    context: TriageContext
    clock: Callable[[], datetime]
    dkim_dns: DnsFunc | None = None  # DNS for security.verify_dkim; None: the system resolver (tests inject one)

    def process(self, source: Source) -> Counter:
        """Process every pending message of ``source``; one bad message never stops the rest."""
        counts: Counter = Counter()
        for item in source.pending():
            try:
                outcome = self.process_one(item)
            except Exception:  # noqa: BLE001 - keep going; the message stays pending and is retried
                log.exception("message key=%s: unexpected error, left pending for the next pass", item.key)
                counts["error"] += 1
                continue
            source.mark_done(item.key, outcome)
            counts[outcome] += 1
        return counts

    def process_one(self, item: SourceItem) -> str:
        """Record and act on one message; returns the action taken ('seen' if it was done before)."""
        key = item.key
        if item.folder == "sent":
            return "seen" if self._seen(key) else self._staff_reply(item)
        if item.raw is None:
            return "seen" if self._seen(key) else self._quarantine(
                key, b"", item.problem or "the source could not load the message", what="large mail")
        raw = item.raw
        try:
            mail = parse_mail(raw, key)
        except ParseFailure as exc:
            return "seen" if self._seen(key) else self._quarantine(key, raw, str(exc))
        if self.workflow.cfg.verify_dkim:  # DNS at the edge; triage only reads the verdict
            mail = replace(mail, dkim=verify_dkim(raw, self.dkim_dns))
        try:
            with transaction(self.engine) as s:
                action = self._act(s, mail)
        except IntegrityError:
            log.info("message key=%s was recorded by another process meanwhile", key)
            return "seen"
        except SQLAlchemyError:
            raise  # the database, not the message: left pending and retried on the next pass
        except Exception as exc:  # noqa: BLE001 - a message that breaks triage or a template would fail forever
            log.exception("message key=%s: error while handling it, quarantined", key)
            return self._quarantine(key, raw, f"error while handling it: {type(exc).__name__}: {exc}"[:300])
        return action

    def _seen(self, key: str) -> bool:
        """Recorded before (the process died between the commit and the mark at the source)?

        A parsed message learns this inside its own transaction (``_act``), with the duplicate check in the
        same query; this separate read is for what is not parsed there: Sent mail, unloadable or unparseable mail.
        """
        with self.engine.begin() as c:  # one read: no ORM session needed
            seen = c.execute(_SEEN, {"source_key": key}).first() is not None
        if seen:
            log.info("message key=%s already processed: marking it done", key)
        return seen

    # --- inside the transaction ----------------------------------------------------------------

    def _act(self, s: Session, mail: InboundMail) -> str:
        now = self.clock()
        earlier = s.connection().execute(_EARLIER, {"source_key": mail.source_key, "raw_sha256": mail.raw_sha256,
                                                    "message_id": mail.message_id}).all()
        if any(row.source_key == mail.source_key for row in earlier):
            log.info("message key=%s already processed: marking it done", mail.source_key)
            return "seen"
        if earlier:
            dup = earlier[0]
            self._record(s, mail, Action.DUPLICATE, Intent.NONE, [f"same message as inbound #{dup.id}"],
                         request_id=dup.request_id)
            log.info("message %s key=%s duplicate of inbound #%s", mail.message_id, mail.source_key, dup.id)
            return Action.DUPLICATE.value
        notification = parse_notification(mail)
        if notification is not None:
            return self._intake(s, mail, notification, now)
        ctx = replace(self.context, candidates=find_candidates(
            s, mail, self.context.mailbox_address, now=now, token_max_age=self.workflow.cfg.token_max_age))
        decision = self._holds_checked(s, triage(mail, ctx))
        inbound_id = self._record(s, mail, decision.action, decision.intent, list(decision.reasons),
                                  request_id=decision.request_id, decision=decision)
        action, reasons = self._apply(s, mail, decision, inbound_id, now)
        log.info("message %s key=%s request=%s intent=%s action=%s reasons=%s", mail.message_id,
                 mail.source_key, decision.request_id, decision.intent.value, action.value, "; ".join(reasons))
        return action.value

    def _holds_checked(self, s: Session, decision: Decision) -> Decision:
        """A confirm meets the erasure plan's holds (the app's data) before anything is queued."""
        if decision.action is not Action.QUEUE_ERASURE or not self.workflow.plan.holds:
            return decision
        req = s.get(DeletionRequest, decision.request_id)
        holds = self.workflow.plan.holds_applying({"account_id": req.account_id, "email": req.email,
                                                   "request_id": req.id})
        action, reasons = hold_back(decision.action, list(decision.reasons), holds)
        return replace(decision, action=action, reasons=tuple(reasons))

    def _record(self, s: Session, mail: InboundMail, action: Action, intent: Intent, reasons: list[str], *,
                request_id: int | None, decision: Decision | None = None) -> int:
        """Record the message (its ``source_key`` is unique: a second process fails here); returns its id."""
        row = {
            "source_key": mail.source_key, "message_id": mail.message_id, "raw_sha256": mail.raw_sha256,
            "request_id": request_id, "from_addr": mail.from_addr, "subject": mail.subject[:500],
            "intent": intent.value, "action": action.value, "reasons_json": json.dumps(reasons),
            "evidence_json": json.dumps([e.line() for e in decision.evidence]) if decision else "[]",
            "reply_text": decision.facts.reply_text[:5000] if decision else "", "received_at": self.clock(),
        }
        return s.connection().execute(_INSERT_INBOUND, row).inserted_primary_key[0]

    def _apply(self, s: Session, mail: InboundMail, decision: Decision, inbound_id: int,
               now: datetime) -> tuple[Action, list[str]]:
        """Carry the decision out; returns the action taken and why (a refused transition becomes a flag)."""
        reasons = list(decision.reasons)
        if decision.request_id is None or decision.action in (Action.IGNORE, Action.UNMATCHED):
            return decision.action, reasons
        req = s.get(DeletionRequest, decision.request_id)
        actor = f"customer:{mail.message_id or mail.source_key}"
        action = decision.action
        try:
            if decision.action is Action.QUEUE_ERASURE:
                self.workflow.confirm(s, req, actor=actor, now=now, reasons=reasons, message_id=mail.message_id)
                self._use_tokens(s, mail, now)
                return decision.action, reasons
            if decision.action is Action.CANCEL:
                self.workflow.cancel(s, req, actor=actor, now=now, reasons=reasons, message_id=mail.message_id)
                return decision.action, reasons
        except TransitionError as exc:
            action = Action.FLAG_HUMAN
            reasons.append(str(exc))
            s.connection().execute(update(InboundMessage).where(InboundMessage.id == inbound_id).values(
                action=Action.FLAG_HUMAN.value, reasons_json=json.dumps(reasons)))
        self.workflow.flag(s, req, reason=reasons[-1], now=now, suggestion=SUGGESTIONS[decision.intent],
                           evidence=[e.line() for e in decision.evidence], reply_text=decision.facts.reply_text,
                           inbound_id=inbound_id, message_id=mail.message_id)
        facts = decision.facts
        if facts.token_expired and facts.sender_verified and decision.intent is Intent.CONFIRM:
            self.workflow.notify(s, req, "link_expired", now=now, reasons=["the confirm came with an expired token"],
                                 reply_to_msg=mail.message_id)
        return action, reasons

    def _use_tokens(self, s: Session, mail: InboundMail, now: datetime) -> None:
        for token in tokens_in([*mail.to_addrs, *mail.cc_addrs], self.context.mailbox_address):
            row = s.exec(select(ReplyToken).where(ReplyToken.token_hash == token_hash(token))).first()
            if row is not None and row.used_at is None:
                row.used_at = now
                s.add(row)

    def _intake(self, s: Session, mail: InboundMail, note, now: datetime) -> str:  # noqa: ANN001
        """A deletion request notified by the app: act only on a verified app sender."""
        app = self.workflow.cfg.app_sender
        facts = Facts(request=RequestSnapshot(id=0, email=app, state=State.RECEIVED))
        evidence = Sender().run(mail, self.context, facts)
        problem = note.problem or (None if facts.sender_verified else
                                   f"app notification not from a verified {app}: {evidence.detail}")
        if problem:
            inbound_id = self._record(s, mail, Action.FLAG_HUMAN, Intent.NONE, [problem], request_id=None)
            self.workflow.flag(s, None, reason=problem, now=now, inbound_id=inbound_id,
                               message_id=mail.message_id, evidence=[evidence.line()],
                               suggestion="check with the app team; add the request by hand if genuine")
            log.warning("message %s: %s", mail.message_id, problem)
            return Action.FLAG_HUMAN.value
        req = self.workflow.add_request(s, email=note.email, account_id=note.account_id, note=note.note,
                                        actor=f"app:{mail.message_id}", now=now, source="app-notification",
                                        previous_email=note.previous_email, email_changed_at=note.email_changed_at)
        self._record(s, mail, Action.IGNORE, Intent.NONE, [f"app notification: created request {req.id}"],
                     request_id=req.id)
        log.info("message %s: app notification created request %s for %s", mail.message_id, req.id, req.email)
        return Action.IGNORE.value

    def _quarantine(self, key: str, raw: bytes, reason: str, what: str = "malformed mail") -> str:
        """Keep an unreadable message (it stays in the mailbox), record it and flag it with the reason."""
        with transaction(self.engine) as s:
            row = InboundMessage(source_key=key, raw_sha256=hashlib.sha256(raw).hexdigest(),
                                 action=Action.FLAG_HUMAN.value, intent=Intent.NONE.value,
                                 reasons_json=json.dumps([f"{what}: {reason}"]), received_at=self.clock())
            s.add(row)
            s.flush()
            self.workflow.flag(s, None, reason=f"{what} kept unprocessed: {reason}", now=self.clock(),
                               inbound_id=row.id, suggestion="open the message in the mailbox and handle it by hand")
        log.warning("message key=%s quarantined: %s", key, reason)
        return Action.FLAG_HUMAN.value

    # --- staff replies from the Sent folder -----------------------------------------------------

    def _staff_reply(self, item: SourceItem) -> str:
        """A mail staff sent from their own client (IMAP Sent folder). In a request's thread it joins the
        timeline (``staff_reply``, actor ``staff:FROM``) and stops the arrival SLA clock, since a person
        answered; it never changes the request's state. Other sent mail, and the bot's own mail (which a
        relay may file in Sent), is left alone and not recorded: the source's progress mark skips it.
        """
        try:
            mail = parse_mail(item.raw or b"", item.key)
        except ParseFailure as exc:
            log.info("sent mail key=%s unreadable, skipped: %s", item.key, exc)
            return Action.UNMATCHED.value
        auto = (mail.header("Auto-Submitted") or "no").strip().lower()
        ids = [*mail.in_reply_to, *reversed(mail.references)]
        if not ids or not auto.startswith("no"):
            return Action.UNMATCHED.value
        with transaction(self.engine) as s:
            own = select(OutboxMail.id).where(OutboxMail.message_id == mail.message_id)
            if mail.message_id and s.exec(own).first():
                return Action.UNMATCHED.value  # the bot's own mail
            req = self._thread_request(s, ids)
            if req is None:
                return Action.UNMATCHED.value
            if mail.message_id and s.exec(select(AuditEvent.id).where(
                    AuditEvent.event == "staff_reply", AuditEvent.message_id == mail.message_id)).first():
                self._record(s, mail, Action.DUPLICATE, Intent.NONE, ["staff reply already in the timeline"],
                             request_id=req.id)
                return Action.DUPLICATE.value
            now = self.clock()
            staff = mail.from_addr or "unknown"
            reasons = [f"staff reply from {staff} in the request's thread (Sent folder)"]
            if req.state == State.RECEIVED.value and req.sla_due_at is not None:
                req.sla_due_at, req.updated_at = None, now
                s.add(req)
                reasons.append("answered: the arrival SLA clock stops")
            for flag in s.exec(select(Flag).where(Flag.request_id == req.id, Flag.status == "open",
                                                  Flag.sla_due_at.is_not(None))).all():
                flag.sla_due_at = None
                s.add(flag)
                reasons.append(f"answered: the clock of flag {flag.id} stops (the flag stays open until resolved)")
            s.add(AuditEvent(request_id=req.id, at=now, actor=f"staff:{staff}", event="staff_reply",
                             message_id=mail.message_id, reasons_json=json.dumps(reasons)))
            self._record(s, mail, Action.IGNORE, Intent.NONE, reasons, request_id=req.id)
        log.info("sent mail %s key=%s: staff reply by %s on request %s", mail.message_id, item.key, staff, req.id)
        return "staff_reply"

    @staticmethod
    def _thread_request(s: Session, ids: list[str]) -> DeletionRequest | None:
        """The request whose thread names one of ``ids``: a mail the bot sent or a message it recorded."""
        owner = dict(s.exec(select(OutboxMail.message_id, OutboxMail.request_id)
                            .where(OutboxMail.message_id.in_(ids), OutboxMail.request_id.is_not(None))).all())
        for mid, rid in s.exec(select(InboundMessage.message_id, InboundMessage.request_id)
                               .where(InboundMessage.message_id.in_(ids), InboundMessage.request_id.is_not(None))):
            owner.setdefault(mid, rid)
        for mid in ids:  # In-Reply-To first, then the newest reference
            if mid in owner:
                return s.get(DeletionRequest, owner[mid])
        return None
