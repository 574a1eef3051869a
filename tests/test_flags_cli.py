"""Staff work the flags: `flags show` and `flags resolve` with each action, its mail and its audit trail."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest
from sqlmodel import select

from inbox_bot import cli, commands
from inbox_bot.commands import CommandError
from inbox_bot.store.db import transaction
from inbox_bot.store.models import AuditEvent, DeletionRequest, Flag, OutboxMail
from inbox_bot.workflow import TransitionError

WORDS = "Can I keep my invoices for the tax office?"


def flagged(app, addr: str = "ana@example.net") -> tuple[int, int]:
    """A new request with an open flag on it (a question the bot would not answer)."""
    rid = commands.add_request(app, addr, "acc_1", "moving on", "staff:test")["id"]
    with transaction(app.engine) as s:
        flag_id = app.workflow.flag(s, s.get(DeletionRequest, rid), reason="reply asks a question", now=app.clock(),
                                    suggestion="Answer the question by hand, then ask again.",
                                    evidence=["sender: HIT - dmarc=pass aligned"], reply_text=WORDS,
                                    message_id="<q-1@example.net>")
        return rid, flag_id


def customer_mails(app, rid: int) -> list[OutboxMail]:
    with transaction(app.engine) as s:
        q = select(OutboxMail).where(OutboxMail.request_id == rid, OutboxMail.to_addr != app.cfg.staff_address)
        return list(s.exec(q.order_by(OutboxMail.id)))


def events(app, rid: int) -> list[AuditEvent]:
    with transaction(app.engine) as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.id)))


@pytest.mark.parametrize(("action", "template", "state", "mail", "event"), [
    ("confirm", "ask", "erasure_queued", "erasure_scheduled", "confirm"),
    ("cancel", "ask", "cancelled", "cancelled", "cancel"),
    ("reply", "ask", "awaiting_confirmation", "ask", "ask"),
    ("reply", "received", "received", "received", "staff_reply"),
    ("dismiss", "ask", "received", None, None),
])
def test_each_action_sends_the_right_mail_and_is_audited(app, action: str, template: str, state: str,
                                                         mail: str | None, event: str | None) -> None:
    rid, fid = flagged(app)
    view = commands.resolve_flag(app, fid, action, "staff:kim", "talked on the phone", template)
    resolution = f"reply:{template}" if action == "reply" else action
    assert (view["status"], view["resolution"], view["resolved_by"]) == ("resolved", resolution, "staff:kim")
    assert view["resolution_reason"] == "talked on the phone"
    assert view["request"]["state"] == state and view["request"]["open_flag"] is False
    sent = [m.kind for m in customer_mails(app, rid)]
    assert sent == ["received"] + ([mail] if mail else [])
    if mail:
        msg = email.message_from_bytes(customer_mails(app, rid)[-1].raw, policy=email.policy.default)
        assert msg["To"].addresses[0].addr_spec == "ana@example.net"  # the address on file
        assert msg["Auto-Submitted"] == "auto-replied"
    trail = [(e.event, e.actor) for e in events(app, rid)][2:]  # after "received" and "flagged"
    expected = ([(event, "staff:kim")] if event else []) + (
        [("erasure_job_queued", "staff:kim")] if action == "confirm" else []) + [("flag_resolved", "staff:kim")]
    assert trail == expected
    assert events(app, rid)[-1].reasons == [f"flag {fid}: {resolution}: talked on the phone"]
    assert [e["event"] for e in view["timeline"]] == ["flagged", "flag_resolved"]


def test_reply_with_ask_meets_the_arrival_clock(app) -> None:
    rid, fid = flagged(app)
    assert commands.show_request(app, rid)["sla_due_at"] is not None
    commands.resolve_flag(app, fid, "reply", "staff:kim", "answered: invoices are kept 7 years")
    assert commands.show_request(app, rid)["sla_due_at"] is None
    with transaction(app.engine) as s:
        assert s.get(DeletionRequest, rid).asked_at is not None


@pytest.mark.parametrize(("template", "message"), [
    ("cancelled", "belongs to cancel; use --action confirm or cancel"),
    ("erasure_scheduled", "belongs to confirm"),
    ("erased", "belongs to the erasure worker"),
    ("digest", "is not a customer mail"),
    ("staff_flag", "is not a customer mail"),
    ("nonsense", "is not a customer mail"),
])
def test_reply_refuses_templates_that_are_not_a_free_reply(app, template: str, message: str) -> None:
    rid, fid = flagged(app)
    with pytest.raises(CommandError, match=message):
        commands.resolve_flag(app, fid, "reply", "staff:kim", "r", template)
    assert commands.show_flag(app, fid)["status"] == "open"
    assert [m.kind for m in customer_mails(app, rid)] == ["received"]


def test_refusals_change_nothing(app) -> None:
    rid, fid = flagged(app)
    with pytest.raises(CommandError, match="no flag with id 99"):
        commands.resolve_flag(app, 99, "dismiss", "staff:kim", "r")
    with pytest.raises(CommandError, match="--action"):
        commands.resolve_flag(app, fid, "erase", "staff:kim", "r")
    with pytest.raises(CommandError, match="--reason"):
        commands.resolve_flag(app, fid, "dismiss", "staff:kim", "  ")
    commands.resolve_flag(app, fid, "dismiss", "staff:kim", "spam")
    with pytest.raises(CommandError, match=f"flag {fid} is already resolved"):
        commands.resolve_flag(app, fid, "cancel", "staff:kim", "r")
    assert commands.show_request(app, rid)["state"] == "received"


def test_a_refused_transition_rolls_back_the_resolution(app) -> None:
    rid, _ = flagged(app)
    commands.staff_transition(app, "confirm", rid, "staff:kim", "phone")  # resolves the first flag
    with transaction(app.engine) as s:
        fid = app.workflow.flag(s, s.get(DeletionRequest, rid), reason="late question", now=app.clock())
    with pytest.raises(TransitionError, match="cannot confirm while erasure_queued"):
        commands.resolve_flag(app, fid, "confirm", "staff:kim", "again")
    assert commands.show_flag(app, fid)["status"] == "open"


def test_a_flag_on_a_lone_message_can_only_be_dismissed(app) -> None:
    with transaction(app.engine) as s:
        fid = app.workflow.flag(s, None, reason="intake notification failed verification", now=app.clock())
    for action in ("confirm", "cancel", "reply"):
        with pytest.raises(CommandError, match="belongs to no request: only --action dismiss"):
            commands.resolve_flag(app, fid, action, "staff:kim", "r")
    view = commands.resolve_flag(app, fid, "dismiss", "staff:kim", "a test from the app team")
    assert view["status"] == "resolved" and view["request"] is None
    with transaction(app.engine) as s:
        audit = s.exec(select(AuditEvent).where(AuditEvent.event == "flag_resolved")).one()
        assert audit.request_id is None and audit.reasons == [f"flag {fid}: dismiss: a test from the app team"]
        assert s.get(Flag, fid).resolution == "dismiss"


def write_config(tmp_path: Path) -> str:
    config = tmp_path / "inbox-bot.toml"
    config.write_text('[erasure]\ncooling_off = "0s"\n', encoding="utf-8")
    return str(config)


def test_the_cli(tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path)
    app = cli._app(cli.build_parser().parse_args(["--config", config, "flags", "list"]))
    rid, fid = flagged(app)

    assert cli.main(["--config", config, "flags", "show", str(fid)]) == 0
    page = capsys.readouterr().out
    for want in (f"flag {fid}  open  request {rid}  ana@example.net  state received", "reason: reply asks a question",
                 "suggestion: Answer the question by hand, then ask again.", f"    | {WORDS}",
                 "  - sender: HIT - dmarc=pass aligned", "business time left", "flagged  by bot",
                 f"resolve: inbox-bot flags resolve {fid} --action confirm|cancel|reply|dismiss"):
        assert want in page, want

    assert cli.main(["--config", config, "flags", "show", str(fid), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert (view["id"], view["status"], view["reply_text"], view["request"]["id"]) == (fid, "open", WORDS, rid)
    assert view["evidence"] == ["sender: HIT - dmarc=pass aligned"] and view["sla_left"]

    assert cli.main(["--config", config, "flags", "resolve", str(fid), "--action", "cancel",
                     "--reason", "asked by phone", "--by", "kim"]) == 0
    assert capsys.readouterr().out.strip() == f"flag {fid}: resolved (cancel); request {rid}: cancelled"
    assert cli.main(["--config", config, "flags", "show", str(fid)]) == 0
    assert "by staff:kim: cancel: asked by phone" in capsys.readouterr().out

    assert cli.main(["--config", config, "flags", "resolve", str(fid), "--action", "dismiss", "--reason", "x"]) == 1
    assert "already resolved" in capsys.readouterr().err
    assert cli.main(["--config", config, "flags", "show", "404"]) == 1
    assert "no flag with id 404" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--config", config, "flags", "resolve", str(fid), "--action", "erase", "--reason", "x"])
    with pytest.raises(SystemExit):
        cli.main(["--config", config, "flags", "resolve", str(fid), "--action", "dismiss"])  # no --reason
