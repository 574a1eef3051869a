"""What the staff and script commands do, returning plain data (the CLI prints it, tests read it)."""

from __future__ import annotations

import json
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from sqlmodel import select

from inbox_bot.addresses import normalise_address
from inbox_bot.app import App
from inbox_bot.mail.parse import ParseFailure, parse_mail
from inbox_bot.store.db import transaction
from inbox_bot.store.models import (
    AuditEvent,
    DeletionRequest,
    ErasureJob,
    ErasureStep,
    Flag,
    InboundMessage,
    OutboxMail,
    as_utc,
)
from inbox_bot.triage import triage


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def _get(s, request_id: int) -> DeletionRequest:  # noqa: ANN001
    req = s.get(DeletionRequest, request_id)
    if req is None:
        raise CommandError(f"no request with id {request_id}")
    return req


def request_json(s, req: DeletionRequest) -> dict:  # noqa: ANN001
    """The contract's request object: id, email, state, open_flag, sla_due_at (running clock)."""
    flag = s.exec(select(Flag).where(Flag.request_id == req.id, Flag.status == "open")
                  .order_by(Flag.id)).first()
    due = as_utc(flag.sla_due_at) if flag is not None else as_utc(req.sla_due_at)
    return {"id": req.id, "email": req.email, "state": req.state, "open_flag": flag is not None,
            "sla_due_at": due.isoformat() if due else None, "account_id": req.account_id, "note": req.note,
            "language": req.language, "created_at": as_utc(req.created_at).isoformat()}


def add_request(app: App, email: str, account_id: str | None, note: str, actor: str,
                language: str | None = None) -> dict:
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise CommandError(f"--email: {email!r} is not a valid address: {exc}") from exc
    with transaction(app.engine) as s:
        req = app.workflow.add_request(s, email=normalise_address(email), account_id=account_id, note=note,
                                       actor=actor, now=app.clock(), language=language)
        return request_json(s, req)


def staff_transition(app: App, transition: str, request_id: int, actor: str, reason: str) -> dict:
    """ask / confirm / cancel by a person; a staff decision also resolves the request's open flags."""
    with transaction(app.engine) as s:
        req = _get(s, request_id)
        now = app.clock()
        reasons = [reason] if reason else []
        if transition == "ask":
            app.workflow.ask(s, req, actor=actor, now=now, reasons=reasons or ["asked by staff"])
        elif transition == "confirm":
            app.workflow.confirm(s, req, actor=actor, now=now, reasons=reasons)
        elif transition == "cancel":
            app.workflow.cancel(s, req, actor=actor, now=now, reasons=reasons)
        else:
            raise CommandError(f"unknown transition {transition!r}")
        if transition != "ask":
            app.workflow.resolve_flags(s, req, actor=actor, resolution=transition, reason=reason, now=now)
        return request_json(s, req)


def list_requests(app: App, state: str | None = None) -> list[dict]:
    with transaction(app.engine) as s:
        q = select(DeletionRequest).order_by(DeletionRequest.id)
        if state:
            q = q.where(DeletionRequest.state == state)
        return [request_json(s, r) for r in s.exec(q).all()]


def message_json(m: InboundMessage) -> dict:
    return {"id": m.id, "message_id": m.message_id, "request_id": m.request_id, "intent": m.intent,
            "action": m.action, "reasons": m.reasons, "from": m.from_addr, "subject": m.subject,
            "source_key": m.source_key, "received_at": as_utc(m.received_at).isoformat()}


def list_messages(app: App, request_id: int | None = None) -> list[dict]:
    with transaction(app.engine) as s:
        q = select(InboundMessage).order_by(InboundMessage.id)
        if request_id is not None:
            q = q.where(InboundMessage.request_id == request_id)
        return [message_json(m) for m in s.exec(q).all()]


def flag_json(f: Flag) -> dict:
    return {"id": f.id, "request_id": f.request_id, "status": f.status, "reason": f.reason,
            "suggestion": f.suggestion, "evidence": json.loads(f.evidence_json), "reply_text": f.reply_text,
            "created_at": as_utc(f.created_at).isoformat(),
            "sla_due_at": as_utc(f.sla_due_at).isoformat() if f.sla_due_at else None,
            "resolution": f.resolution, "resolved_by": f.resolved_by}


def list_flags(app: App, include_resolved: bool = False) -> list[dict]:
    with transaction(app.engine) as s:
        q = select(Flag).order_by(Flag.id)
        if not include_resolved:
            q = q.where(Flag.status == "open")
        return [flag_json(f) for f in s.exec(q).all()]


def show_request(app: App, request_id: int) -> dict:
    with transaction(app.engine) as s:
        req = _get(s, request_id)
        view = request_json(s, req)
        view["timeline"] = [
            {"at": as_utc(e.at).isoformat(), "actor": e.actor, "event": e.event, "from_state": e.from_state,
             "to_state": e.to_state, "message_id": e.message_id, "reasons": e.reasons}
            for e in s.exec(select(AuditEvent).where(AuditEvent.request_id == req.id).order_by(AuditEvent.id))
        ]
        view["messages"] = [message_json(m) for m in s.exec(
            select(InboundMessage).where(InboundMessage.request_id == req.id).order_by(InboundMessage.id))]
        view["mails"] = [{"kind": o.kind, "to": o.to_addr, "message_id": o.message_id, "status": o.status,
                          "created_at": as_utc(o.created_at).isoformat()}
                         for o in s.exec(select(OutboxMail).where(OutboxMail.request_id == req.id)
                                         .order_by(OutboxMail.id))]
        view["flags"] = [flag_json(f) for f in s.exec(select(Flag).where(Flag.request_id == req.id))]
        jobs = []
        for job in s.exec(select(ErasureJob).where(ErasureJob.request_id == req.id).order_by(ErasureJob.id)):
            steps = s.exec(select(ErasureStep).where(ErasureStep.job_id == job.id).order_by(ErasureStep.seq))
            jobs.append({"id": job.id, "status": job.status, "run_after": as_utc(job.run_after).isoformat(),
                         "steps": [{"name": st.name, "executor": st.executor, "status": st.status,
                                    "error": st.error} for st in steps]})
        view["erasure_jobs"] = jobs
        return view


def render_request(view: dict) -> str:
    """A readable page for staff: the request, then its timeline with the reasons behind each event."""
    lines = [f"request {view['id']}  {view['email']}  account {view['account_id'] or '-'}",
             f"state: {view['state']}   open flag: {'yes' if view['open_flag'] else 'no'}   "
             f"SLA due: {view['sla_due_at'] or '-'}"]
    if view["note"]:
        lines.append(f"note: {view['note']}")
    lines.append("timeline:")
    for e in view["timeline"]:
        move = f" {e['from_state'] or ''} -> {e['to_state']}" if e["to_state"] else ""
        lines.append(f"  {e['at'][:19]}  {e['event']}{move}  by {e['actor']}")
        lines += [f"      {r}" for r in e["reasons"]]
    lines.append("messages:")
    for m in view["messages"] or []:
        lines.append(f"  {m['message_id']}  intent {m['intent']}  action {m['action']}")
        lines += [f"      {r}" for r in m["reasons"]]
    lines.append("mails sent:")
    lines += [f"  {o['kind']:<18} to {o['to']}  {o['status']}" for o in view["mails"]] or ["  (none)"]
    for job in view["erasure_jobs"]:
        lines.append(f"erasure job {job['id']}: {job['status']} (not before {job['run_after'][:19]})")
        lines += [f"  {st['name']:<20} {st['executor']:<8} {st['status']}" for st in job["steps"]]
    return "\n".join(lines)


def classify_file(app: App, path: Path, label: str) -> dict:
    """Triage one file with no request context and no state change (`inbox-bot classify`)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"{label}: {exc.strerror or exc}") from exc
    try:
        mail = parse_mail(raw, f"file:{label}")
    except ParseFailure as exc:
        return {"file": label, "intent": "none", "auto_generated": False, "auto_kind": None, "reply_text": "",
                "rules": [], "error": str(exc), "explain": f"  unreadable: {exc}"}
    decision = triage(mail, app.triage_context)
    facts = decision.facts
    explain = [f"  {e.line()}" for e in decision.evidence]
    explain += [f"  cut: {c}" for c in facts.cut]
    explain += [f"  rule {h.rule} ({h.role}) matched {h.matched!r}" for h in facts.rule_hits]
    return {
        "file": label,
        "intent": facts.intent.value,
        "auto_generated": facts.auto_kind.value or False,
        "auto_reasons": facts.auto_reasons,
        "reply_text": facts.reply_text,
        "rules": [h.rule for h in facts.rule_hits],
        "rule_hits": [{"rule": h.rule, "role": h.role, "matched": h.matched, "language": h.language}
                      for h in facts.rule_hits],
        "cut": facts.cut,
        "readable": facts.readable,
        "explain": "\n".join(explain),
    }
