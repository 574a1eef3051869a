"""The pipeline on the embedded default: act once per message, survive crashes and bad mail."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.mail.samples import PASS, build_reply, last_sent
from inbox_bot.mail.sources import MaildirSource
from inbox_bot.store.db import transaction
from inbox_bot.store.models import ErasureJob, InboundMessage, OutboxMail
from inbox_bot.workflow import TransitionError, Workflow
from tests.conftest import drop, inbox, sent_dir

CUSTOMER = "ana.ruiz@example.net"


def asked(app: App, addr: str = CUSTOMER) -> int:
    rid = commands.add_request(app, addr, "acc_1", "", "staff:test")["id"]
    commands.staff_transition(app, "ask", rid, "staff:test", "")
    app.poll_once()
    return rid


def reply(app: App, body: str, addr: str = CUSTOMER, **kw) -> bytes:
    return build_reply(last_sent(sent_dir(app))[addr], addr, body, **kw)


def mails_of_kind(app: App, kind: str) -> list[OutboxMail]:
    with transaction(app.engine) as s:
        return list(s.exec(select(OutboxMail).where(OutboxMail.kind == kind)))


def jobs(app: App) -> list[ErasureJob]:
    with transaction(app.engine) as s:
        return list(s.exec(select(ErasureJob)))


def test_verified_confirm_queues_erasure_and_mails_the_customer(app) -> None:
    rid = asked(app)
    drop(app, reply(app, "Yes, please delete my account."), "1.confirm")
    assert app.poll_once()["queue_erasure"] == 1
    assert commands.show_request(app, rid)["state"] == "erasure_queued"
    assert len(jobs(app)) == 1
    assert [m.to_addr for m in mails_of_kind(app, "erasure_scheduled")] == [CUSTOMER]
    msg = commands.list_messages(app)[0]
    assert msg["action"] == "queue_erasure" and msg["intent"] == "confirm" and msg["request_id"] == rid


def test_cancel_reply_cancels(app) -> None:
    rid = asked(app)
    drop(app, reply(app, "I changed my mind, please cancel the deletion and keep my account."), "1.cancel")
    app.poll_once()
    assert commands.show_request(app, rid)["state"] == "cancelled"
    assert len(mails_of_kind(app, "cancelled")) == 1


def test_forged_sender_is_flagged_never_erased(app) -> None:
    rid = asked(app)
    spoof = "mx.clickport.io; dkim=pass header.d=evil.example; spf=fail smtp.mailfrom=evil.example; dmarc=fail"
    drop(app, reply(app, "Yes, please delete my account.", auth=spoof), "1.spoof")
    app.poll_once()
    view = commands.show_request(app, rid)
    assert view["state"] == "awaiting_confirmation" and view["open_flag"]
    assert jobs(app) == []
    assert len(mails_of_kind(app, "staff_flag")) == 1
    assert commands.list_messages(app)[0]["action"] == "flag_human"


def test_auto_reply_is_ignored_and_never_answered(app) -> None:
    rid = asked(app)
    before = len(mails_of_kind(app, "ask")) + len(mails_of_kind(app, "received"))
    drop(app, reply(app, "I am out of the office until Monday.", subject_prefix="Automatic reply: ",
                    extra_headers={"Auto-Submitted": "auto-replied"}), "1.ooo")
    app.poll_once()
    assert commands.list_messages(app)[0]["action"] == "ignore"
    with transaction(app.engine) as s:
        assert len(s.exec(select(OutboxMail)).all()) == before
    assert commands.show_request(app, rid)["state"] == "awaiting_confirmation"


def test_stranger_is_unmatched_and_left_alone(app) -> None:
    asked(app)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "someone@else.example", "support@clickport.io", "Pricing?"
    msg["Message-ID"] = "<stranger-1@else.example>"
    msg["Authentication-Results"] = PASS.format(d="else.example")
    msg.set_content("Hi, how much is the business plan?")
    drop(app, msg.as_bytes(), "1.stranger")
    app.poll_once()
    m = commands.list_messages(app)[0]
    assert (m["action"], m["request_id"]) == ("unmatched", None)
    assert mails_of_kind(app, "staff_flag") == []


def test_same_message_twice_is_a_duplicate_and_acts_once(app) -> None:
    asked(app)
    raw = reply(app, "Yes, please delete my account.")
    drop(app, raw, "1.first")
    drop(app, raw, "2.again")
    drop(app, raw, "3.and-again")
    counts = app.poll_once()
    assert counts["queue_erasure"] == 1 and counts["duplicate"] == 2
    assert len(jobs(app)) == 1 and len(mails_of_kind(app, "erasure_scheduled")) == 1
    with transaction(app.engine) as s:
        rows = s.exec(select(InboundMessage).where(InboundMessage.message_id.is_not(None))
                      .order_by(InboundMessage.id)).all()
    first, *dups = [r for r in rows if r.raw_sha256 == rows[-1].raw_sha256]
    assert [d.reasons for d in dups] == [[f"same message as inbound #{first.id}"]] * 2  # each names the original


class CrashAfterCommit(Exception):
    """Stands in for the process dying between the commit and marking the message processed."""


def crash_before_marking(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass that dies after each commit, before the message is marked processed at the source."""

    def die(self, key: str, outcome: str) -> None:
        raise CrashAfterCommit(key)

    monkeypatch.setattr(MaildirSource, "mark_done", die)
    with pytest.raises(CrashAfterCommit):
        app.poll_once()
    monkeypatch.undo()


def test_crash_between_commit_and_mark_processed_acts_once(app, monkeypatch) -> None:
    rid = asked(app)
    drop(app, reply(app, "Yes, please delete my account."), "1.confirm")
    crash_before_marking(app, monkeypatch)
    assert list((inbox(app) / "new").iterdir()), "the message must still be pending"
    restarted = App(app.cfg, clock=app.clock)  # a new process: nothing cached
    counts = restarted.poll_once()
    assert counts.get("seen") == 1 and "queue_erasure" not in counts
    assert list((inbox(app) / "new").iterdir()) == []
    assert len(jobs(app)) == 1
    assert len(mails_of_kind(app, "erasure_scheduled")) == 1
    assert [e["event"] for e in commands.show_request(app, rid)["timeline"]].count("confirm") == 1
    assert len(list((sent_dir(app) / "new").iterdir())) == 3  # receipt, ask, erasure scheduled


def _bomb(depth: int) -> bytes:
    head = b"From: x@example.net\r\nTo: support@clickport.io\r\nSubject: bomb\r\nMessage-ID: <bomb@x>\r\n"
    body = b"hello"
    for i in range(depth):
        b = f"b{i}".encode()
        body = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n" + body +
                b"\r\n--" + b + b"--\r\n")
    return head + b"MIME-Version: 1.0\r\n" + body


def test_malformed_mail_is_kept_flagged_and_processing_goes_on(app) -> None:
    asked(app)
    drop(app, _bomb(40), "1.bomb")
    drop(app, reply(app, "Yes, please delete my account."), "2.confirm")
    counts = app.poll_once()
    assert counts["flag_human"] == 1 and counts["queue_erasure"] == 1
    flags = commands.list_flags(app)
    assert len(flags) == 1 and "MIME nesting" in flags[0]["reason"] and flags[0]["request_id"] is None
    kept = list((inbox(app) / "cur").iterdir())
    assert any(p.name.startswith("1.bomb") for p in kept), "the malformed mail stays in the mailbox"


def test_crash_after_quarantine_does_not_flag_the_malformed_mail_twice(app, monkeypatch) -> None:
    drop(app, _bomb(40), "1.bomb")
    crash_before_marking(app, monkeypatch)
    counts = App(app.cfg, clock=app.clock).poll_once()
    assert counts.get("seen") == 1 and "flag_human" not in counts
    assert len(commands.list_flags(app)) == 1
    assert list((inbox(app) / "new").iterdir()) == []


def _notification(auth: str, sender: str = "app@clickport.io") -> bytes:
    msg = EmailMessage()
    msg["Authentication-Results"] = auth
    msg["From"], msg["To"] = sender, "support@clickport.io"
    msg["Subject"] = "Account deletion requested"
    msg["Message-ID"] = "<notify-1@clickport.io>"
    msg["X-Clickport-Event"] = "account-deletion-requested"
    msg["X-Clickport-Account-Id"] = "acc_77"
    msg["X-Clickport-Customer-Email"] = "Zoe@Example.org"
    msg.set_content("Too expensive for us right now.")
    return msg.as_bytes()


def test_app_notification_from_verified_sender_creates_the_request(app) -> None:
    drop(app, _notification(PASS.format(d="clickport.io")), "1.notify")
    app.poll_once()
    reqs = commands.list_requests(app)
    assert [(r["email"], r["account_id"], r["note"], r["state"]) for r in reqs] == [
        ("zoe@example.org", "acc_77", "Too expensive for us right now.", "received")]
    assert [m.to_addr for m in mails_of_kind(app, "received")] == ["zoe@example.org"]


def test_app_notification_without_proof_creates_nothing(app) -> None:
    drop(app, _notification("mx.clickport.io; spf=fail smtp.mailfrom=clickport.io; dmarc=fail"), "1.notify")
    app.poll_once()
    assert commands.list_requests(app) == []
    assert mails_of_kind(app, "received") == []
    assert len(commands.list_flags(app)) == 1


def test_a_refused_transition_is_recorded_and_flagged_instead(app, monkeypatch) -> None:
    """The state machine has the last word: if it refuses what triage decided, a person gets the message."""
    rid = asked(app)
    drop(app, reply(app, "Yes, please delete my account."), "1.confirm")

    def refuse(self, s, req, **kw) -> None:  # noqa: ANN001
        raise TransitionError(f"request {req.id}: cannot confirm while tested")

    monkeypatch.setattr(Workflow, "confirm", refuse)
    assert app.poll_once()["flag_human"] == 1
    with transaction(app.engine) as s:
        row = s.exec(select(InboundMessage).where(InboundMessage.request_id == rid)).one()
    assert row.action == "flag_human" and row.reasons[-1] == f"request {rid}: cannot confirm while tested"
    flags = commands.list_flags(app)
    assert [(f["request_id"], f["reason"]) for f in flags] == [(rid, row.reasons[-1])]
    assert jobs(app) == [] and commands.show_request(app, rid)["state"] == "awaiting_confirmation"
