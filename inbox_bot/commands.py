"""What the staff and script commands do, returning plain data (the CLI prints it, tests read it)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from sqlmodel import select

from inbox_bot.addresses import normalise_address
from inbox_bot.app import App
from inbox_bot.mail.parse import ParseFailure, parse_mail
from inbox_bot.sla_watch import describe_left
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
            "language": req.language, "created_at": as_utc(req.created_at).isoformat(),
            "previous_email": req.previous_email,
            "email_changed_at": changed.isoformat() if (changed := as_utc(req.email_changed_at)) else None}


def add_request(app: App, email: str, account_id: str | None, note: str, actor: str,
                language: str | None = None, previous_email: str | None = None,
                email_changed_at: datetime | None = None) -> dict:
    for option, value in (("--email", email), ("--previous-email", previous_email)):
        try:
            if value is not None:
                validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise CommandError(f"{option}: {value!r} is not a valid address: {exc}") from exc
    if (previous_email is None) != (email_changed_at is None):
        raise CommandError("--previous-email and --email-changed-at go together")
    with transaction(app.engine) as s:
        req = app.workflow.add_request(s, email=normalise_address(email), account_id=account_id, note=note,
                                       actor=actor, now=app.clock(), language=language,
                                       previous_email=normalise_address(previous_email) if previous_email else None,
                                       email_changed_at=email_changed_at)
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
            "resolution": f.resolution, "resolved_by": f.resolved_by, "urgent": f.urgent}


def list_flags(app: App, include_resolved: bool = False) -> list[dict]:
    with transaction(app.engine) as s:
        q = select(Flag).order_by(Flag.id)
        if not include_resolved:
            q = q.where(Flag.status == "open")
        return [flag_json(f) for f in s.exec(q).all()]


FLAG_ACTIONS = ("confirm", "cancel", "reply", "dismiss")
STAFF_KINDS = frozenset({"staff_flag", "sla_reminder", "sla_escalation", "digest"})
TRANSITION_KINDS = {"cancelled": "cancel", "erasure_scheduled": "confirm", "erased": "the erasure worker"}
"""Mails that announce a state change: sent only by that transition, never as a free reply."""


def _get_flag(s, flag_id: int) -> Flag:  # noqa: ANN001
    flag = s.get(Flag, flag_id)
    if flag is None:
        raise CommandError(f"no flag with id {flag_id}")
    return flag


def _flag_view(app: App, s, flag: Flag) -> dict:  # noqa: ANN001
    """The flag with its request, the message behind it, the clock and its own audit trail."""
    view = flag_json(flag)
    view["resolved_at"] = as_utc(flag.resolved_at).isoformat() if flag.resolved_at else None
    view["resolution_reason"] = flag.resolution_reason
    req = s.get(DeletionRequest, flag.request_id) if flag.request_id is not None else None
    view["request"] = request_json(s, req) if req else None
    inbound = s.get(InboundMessage, flag.inbound_id) if flag.inbound_id is not None else None
    view["message"] = message_json(inbound) if inbound else None
    due = as_utc(flag.sla_due_at)
    running = flag.status == "open" and due is not None
    view["sla_left"] = describe_left(app.calendar.business_time_between(app.clock(), due)) if running else None
    mine = (f"flag {flag.id}:", f"flag {flag.id} clock:")
    events = s.exec(select(AuditEvent).where(AuditEvent.request_id == flag.request_id).order_by(AuditEvent.id))
    view["timeline"] = [
        {"at": as_utc(e.at).isoformat(), "actor": e.actor, "event": e.event, "reasons": e.reasons}
        for e in events if any(r.startswith(mine) for r in e.reasons)
    ]
    return view


def show_flag(app: App, flag_id: int) -> dict:
    with transaction(app.engine) as s:
        return _flag_view(app, s, _get_flag(s, flag_id))


def render_flag(view: dict) -> str:
    """A readable page for staff: what the customer wrote, why the bot stopped, and how to resolve it."""
    req = view["request"]
    lines = [f"flag {view['id']}  {view['status']}  "
             + (f"request {req['id']}  {req['email']}  state {req['state']}" if req else "no request (lone message)")
             + ("  URGENT: reply inside the restore window" if view.get("urgent") else ""),
             f"reason: {view['reason']}",
             f"suggestion: {view['suggestion'] or '-'}",
             f"opened: {view['created_at'][:19]}  SLA due: {view['sla_due_at'] or '-'}"
             + (f" ({view['sla_left']})" if view["sla_left"] else "")]
    if view["message"]:
        m = view["message"]
        lines.append(f"message: {m['message_id']} from {m['from'] or '-'}: {m['subject']}")
    lines.append("the customer's words:" if req else "the sender's words:")
    lines += [f"    | {line}" for line in (view["reply_text"] or "(empty)").splitlines()]
    lines.append("evidence:")
    lines += [f"  - {e}" for e in view["evidence"]] or ["  (none)"]
    lines.append("timeline:")
    for e in view["timeline"]:
        lines.append(f"  {e['at'][:19]}  {e['event']}  by {e['actor']}")
        lines += [f"      {r}" for r in e["reasons"]]
    if view["status"] == "open":
        lines.append(f"resolve: inbox-bot flags resolve {view['id']} --action "
                     f"{'confirm|cancel|reply|dismiss' if req else 'dismiss'} --reason \"...\"")
    else:
        lines.append(f"resolved {view['resolved_at'][:19]} by {view['resolved_by']}: {view['resolution']}: "
                     f"{view['resolution_reason']}")
    return "\n".join(lines)


def resolve_flag(app: App, flag_id: int, action: str, actor: str, reason: str, template: str = "ask") -> dict:
    """Staff resolve a flag: the action's transition and mail, then the flag closed, in one transaction.

    confirm and cancel are the request transitions (their own mails; every open flag of the request
    closes); reply mails the customer the template named; dismiss sends nothing. A flag about a lone
    message has no address on file, so only dismiss is possible there.
    """
    if action not in FLAG_ACTIONS:
        raise CommandError(f"--action: {action!r} is not one of {', '.join(FLAG_ACTIONS)}")
    if not reason.strip():
        raise CommandError("--reason: say why (it is kept in the audit trail)")
    if action == "reply":
        _check_reply_kind(app, template)
    with transaction(app.engine) as s:
        flag = _get_flag(s, flag_id)
        if flag.status != "open":
            raise CommandError(f"flag {flag_id} is already {flag.status} ({flag.resolution} by {flag.resolved_by})")
        req = s.get(DeletionRequest, flag.request_id) if flag.request_id is not None else None
        if req is None and action != "dismiss":
            raise CommandError(f"flag {flag_id} belongs to no request: only --action dismiss "
                               "(answer by hand, to an address on file)")
        now = app.clock()
        if action == "confirm":
            app.workflow.confirm(s, req, actor=actor, now=now, reasons=[reason])
        elif action == "cancel":
            app.workflow.cancel(s, req, actor=actor, now=now, reasons=[reason])
        elif action == "reply":
            app.workflow.reply(s, req, template, actor=actor, now=now, reasons=[reason])
        resolution = f"reply:{template}" if action == "reply" else action
        if action in ("confirm", "cancel"):
            app.workflow.resolve_flags(s, req, actor=actor, resolution=resolution, reason=reason, now=now)
        else:
            app.workflow.resolve_flag(s, flag, req, actor=actor, resolution=resolution, reason=reason, now=now)
        s.flush()
        return _flag_view(app, s, flag)


def _check_reply_kind(app: App, kind: str) -> None:
    if kind in TRANSITION_KINDS:
        raise CommandError(f"--template {kind}: that mail belongs to {TRANSITION_KINDS[kind]}; "
                           "use --action confirm or cancel instead")
    customer_kinds = [k for k in app.composer.kinds if k not in STAFF_KINDS and k not in TRANSITION_KINDS]
    if kind not in customer_kinds:
        raise CommandError(f"--template: {kind!r} is not a customer mail (known: {', '.join(customer_kinds)})")


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
                                    "error": st.error, "attempts": st.attempts, "note": st.note}
                                   for st in steps]})
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
        lines += [f"  {st['name']:<20} {st['executor']:<8} {st['status']:<8} {st['note'] or st['error'] or ''}"
                  for st in job["steps"]]
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


# --- erasure: the plan, retrying a failed job, the purge --------------------------------------------

def erasure_plan(app: App) -> dict:
    """The plan in force (validated) and what the environment lacks for it right now."""
    plan = app.plan
    names = [st.name for st in plan.steps]
    problems = plan.problems(names, {"account_id": "x", "email": "x", "request_id": 0, "job_id": 0})
    return {"file": str(plan.source) if plan.source else None, "problems": problems,
            "steps": [{"name": st.name, "executor": st.executor, "description": st.description} for st in plan.steps]}


def retry_erasure(app: App, job_id: int, actor: str, reason: str) -> dict:
    from inbox_bot.erasure.worker import retry_job

    try:
        return retry_job(app.engine, app.workflow, job_id, actor=actor, reason=reason, now=app.clock())
    except (LookupError, ValueError) as exc:
        raise CommandError(str(exc)) from exc


def purge(app: App) -> dict[str, int]:
    return app.purge_expired()
