"""The state machine: each transition is allowed only from its states, audited, and sends its mail."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.store.db import transaction
from inbox_bot.store.models import AuditEvent, DeletionRequest, ErasureJob, ErasureStep, Flag, OutboxMail, as_utc
from inbox_bot.workflow import TransitionError


def outbox(app, request_id: int) -> list[OutboxMail]:
    with transaction(app.engine) as s:
        return list(s.exec(select(OutboxMail).where(OutboxMail.request_id == request_id).order_by(OutboxMail.id)))


def audit(app, request_id: int) -> list[AuditEvent]:
    with transaction(app.engine) as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.id)))


def new_request(app, addr: str = "ana@example.net") -> int:
    return commands.add_request(app, addr, "acc_1", "moving on", "staff:test")["id"]


def test_add_records_received_queues_receipt_and_starts_the_clock(app) -> None:
    rid = new_request(app)
    view = commands.show_request(app, rid)
    assert view["state"] == "received"
    assert view["sla_due_at"] is not None
    mails = outbox(app, rid)
    assert [m.kind for m in mails] == ["received"]
    msg = email.message_from_bytes(mails[0].raw, policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "ana@example.net"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Reply-To"].addresses[0].addr_spec.startswith("support+")
    assert [e.event for e in audit(app, rid)] == ["received"]


def test_ask_moves_to_awaiting_stops_the_clock_and_threads_the_mail(app) -> None:
    rid = new_request(app)
    view = commands.staff_transition(app, "ask", rid, "staff:kim", "")
    assert view["state"] == "awaiting_confirmation" and view["sla_due_at"] is None
    receipt, ask = outbox(app, rid)
    ask_msg = email.message_from_bytes(ask.raw, policy=email.policy.default)
    assert ask_msg["In-Reply-To"] == receipt.message_id
    assert ask.kind == "ask"
    event = audit(app, rid)[-1]
    assert (event.event, event.from_state, event.to_state, event.actor) == (
        "ask", "received", "awaiting_confirmation", "staff:kim")


def test_confirm_queues_job_with_steps_and_mail(app, clock) -> None:
    rid = new_request(app)
    commands.staff_transition(app, "ask", rid, "staff:kim", "")
    commands.staff_transition(app, "confirm", rid, "staff:kim", "confirmed by phone")
    with transaction(app.engine) as s:
        job = s.exec(select(ErasureJob).where(ErasureJob.request_id == rid)).one()
        steps = s.exec(select(ErasureStep).where(ErasureStep.job_id == job.id)).all()
    assert job.status == "queued" and len(steps) == 6
    assert outbox(app, rid)[-1].kind == "erasure_scheduled"
    assert audit(app, rid)[-2].reasons == ["confirmed by phone"]


def test_cooling_off_holds_the_job_until_due(make_app, clock) -> None:
    app = make_app(erasure={"cooling_off": "1h"})
    rid = new_request(app)
    commands.staff_transition(app, "confirm", rid, "staff:kim", "phone")
    assert app.run_erasures() == {}
    clock.advance(minutes=61)
    assert app.run_erasures() == {"done": 1}
    view = commands.show_request(app, rid)
    assert view["state"] == "erased"
    assert [st["status"] for st in view["erasure_jobs"][0]["steps"]] == ["done"] * 6
    assert outbox(app, rid)[-1].kind == "erased"
    assert [e["event"] for e in view["timeline"]][-2:] == ["start_erasure", "finish_erasure"]


def test_cancel_inside_cooling_off_stops_the_job(make_app, clock) -> None:
    app = make_app(erasure={"cooling_off": "1h"})
    rid = new_request(app)
    commands.staff_transition(app, "confirm", rid, "staff:kim", "phone")
    commands.staff_transition(app, "cancel", rid, "staff:kim", "customer called back")
    clock.advance(hours=2)
    assert app.run_erasures() == {}
    view = commands.show_request(app, rid)
    assert view["state"] == "cancelled" and view["erasure_jobs"][0]["status"] == "cancelled"
    assert outbox(app, rid)[-1].kind == "cancelled"


@pytest.mark.parametrize(("first", "then"), [
    ("cancel", "confirm"), ("cancel", "ask"), ("cancel", "cancel"), ("confirm", "confirm"), ("confirm", "ask"),
])
def test_forbidden_transitions_raise_and_change_nothing(app, first: str, then: str) -> None:
    rid = new_request(app)
    commands.staff_transition(app, first, rid, "staff:kim", "r")
    before = (commands.show_request(app, rid), len(outbox(app, rid)))
    with pytest.raises(TransitionError):
        commands.staff_transition(app, then, rid, "staff:kim", "r")
    after = (commands.show_request(app, rid), len(outbox(app, rid)))
    assert before == after


def test_no_cancel_after_erasure(app) -> None:
    rid = new_request(app)
    commands.staff_transition(app, "confirm", rid, "staff:kim", "phone")
    app.run_erasures()
    with pytest.raises(TransitionError, match="erased"):
        commands.staff_transition(app, "cancel", rid, "staff:kim", "too late")


def test_flag_notifies_staff_once_and_later_messages_join_it(app) -> None:
    rid = new_request(app)
    with transaction(app.engine) as s:
        req = s.get(DeletionRequest, rid)
        f1 = app.workflow.flag(s, req, reason="question", now=app.clock(), evidence=["classify: HIT"])
        f2 = app.workflow.flag(s, req, reason="another question", now=app.clock())
    assert f1 == f2
    staff = [m for m in outbox(app, rid) if m.kind == "staff_flag"]
    assert len(staff) == 1 and staff[0].to_addr == app.cfg.staff_address
    assert commands.list_requests(app)[0]["open_flag"] is True
    commands.staff_transition(app, "cancel", rid, "staff:kim", "customer asked by phone")
    with transaction(app.engine) as s:
        assert s.get(Flag, f1).status == "resolved"
    assert commands.list_requests(app)[0]["open_flag"] is False


def test_a_flag_resolved_earlier_in_the_same_transaction_is_not_joined(app) -> None:
    rid = new_request(app)
    with transaction(app.engine) as s:
        req = s.get(DeletionRequest, rid)
        first = app.workflow.flag(s, req, reason="question", now=app.clock())
        app.workflow.resolve_flags(s, req, actor="staff:kim", resolution="dismiss", reason="answered", now=app.clock())
        second = app.workflow.flag(s, req, reason="another question", now=app.clock())
    assert second != first
    with transaction(app.engine) as s:
        assert [(f.id, f.status) for f in s.exec(select(Flag).order_by(Flag.id))] == [
            (first, "resolved"), (second, "open")]


def test_a_message_joining_a_flag_inside_the_restore_window_makes_it_urgent(app) -> None:
    rid = new_request(app)
    now = app.clock()
    with transaction(app.engine) as s:
        req = s.get(DeletionRequest, rid)
        fid = app.workflow.flag(s, req, reason="question", now=now)
        req.state, req.erased_at = "erased", now - timedelta(hours=2)
        s.add(req)
    with transaction(app.engine) as s:
        assert s.get(Flag, fid).urgent is False
        joined = app.workflow.flag(s, s.get(DeletionRequest, rid), reason="undo, please", now=now)
    assert joined == fid
    with transaction(app.engine) as s:
        flag = s.get(Flag, fid)
        assert flag.urgent is True and as_utc(flag.sla_due_at) <= now + timedelta(hours=22)
    assert [e.event for e in audit(app, rid)][-1] == "flag_joined"


def test_auto_ask_sends_both_mails_at_once(make_app) -> None:
    app = make_app(workflow={"auto_ask": True})
    rid = new_request(app)
    assert [m.kind for m in outbox(app, rid)] == ["received", "ask"]
    assert commands.show_request(app, rid)["state"] == "awaiting_confirmation"
