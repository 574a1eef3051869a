"""SLA reminders and escalations: at the right business moments, each exactly once, across restarts."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.config import ConfigError
from inbox_bot.sla import BusinessCalendar, SlaPolicy
from inbox_bot.store.db import transaction
from inbox_bot.store.models import AuditEvent, DeletionRequest, OutboxMail, SlaNotice

BERLIN = ZoneInfo("Europe/Berlin")
SLA = {"timezone": "Europe/Berlin", "business_hours": ["09:00", "17:00"],
       "holidays": {"country": "DE", "subdivision": "BE"}, "closed_dates": ["2026-12-24", "2026-12-31"]}
FRIDAY_16 = datetime(2026, 12, 4, 16, 0, tzinfo=BERLIN)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def staff_mails(app) -> list[OutboxMail]:
    with transaction(app.engine) as s:
        return list(s.exec(select(OutboxMail).where(OutboxMail.kind.like("sla_%")).order_by(OutboxMail.id)))


def notices(app) -> list[tuple[str, int, str]]:
    with transaction(app.engine) as s:
        return [(n.clock_kind, n.clock_id, n.level) for n in s.exec(select(SlaNotice).order_by(SlaNotice.id))]


def new_request(app, clock, at: datetime) -> int:
    clock.now = at
    return commands.add_request(app, "ana@example.net", "acc_1", "moving on", "staff:test")["id"]


def check_at(app, clock, at: datetime) -> dict[str, int]:
    clock.now = at
    return app.check_sla()


def test_friday_16h_request_reminded_monday_14h_and_escalated_monday_16h(make_app, clock) -> None:
    app = make_app(sla=SLA)
    rid = new_request(app, clock, FRIDAY_16)
    quiet = [berlin(2026, 12, 4, 16, 30), berlin(2026, 12, 4, 23, 0), berlin(2026, 12, 5, 12, 0),
             berlin(2026, 12, 7, 9, 0), berlin(2026, 12, 7, 13, 59)]
    for at in quiet:
        assert check_at(app, clock, at) == {"reminder": 0, "escalation": 0}, at
    assert check_at(app, clock, berlin(2026, 12, 7, 14, 0)) == {"reminder": 1, "escalation": 0}
    for at in (berlin(2026, 12, 7, 14, 1), berlin(2026, 12, 7, 15, 59)):
        assert check_at(app, clock, at) == {"reminder": 0, "escalation": 0}
    assert check_at(app, clock, berlin(2026, 12, 7, 16, 0)) == {"reminder": 0, "escalation": 1}
    for at in (berlin(2026, 12, 7, 16, 1), berlin(2026, 12, 8, 10, 0)):
        assert check_at(app, clock, at) == {"reminder": 0, "escalation": 0}

    assert notices(app) == [("request", rid, "reminder"), ("request", rid, "escalation")]
    reminder, escalation = staff_mails(app)
    assert (reminder.kind, escalation.kind) == ("sla_reminder", "sla_escalation")
    assert reminder.to_addr == escalation.to_addr == app.cfg.staff_address
    assert reminder.request_id == escalation.request_id == rid
    msg = email.message_from_bytes(reminder.raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == ("[inbox-bot] SLA reminder: Request #1: reply to the new request, "
                              "due Mon 7 Dec 2026, 16:00 CET")
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    for part in (text, html):
        assert "75% of the one-business-day reply time is used up" in part
        assert "2 h business time left" in part
        assert "ana@example.net" in part and "inbox-bot request ask 1" in part
        assert "Fri 4 Dec 2026, 16:00 CET" in part
    esc = email.message_from_bytes(escalation.raw, policy=email.policy.default)
    assert esc["Subject"].startswith("[inbox-bot] SLA BREACHED: Request #1")
    assert "has been broken" in esc.get_body(preferencelist=("plain",)).get_content()
    with transaction(app.engine) as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.request_id == rid, AuditEvent.actor == "sla-watch"))
        assert [e.event for e in events] == ["sla_reminder", "sla_escalation"]


def test_a_restart_sends_nothing_twice(make_app, clock) -> None:
    app = make_app(sla=SLA)
    new_request(app, clock, FRIDAY_16)
    assert check_at(app, clock, berlin(2026, 12, 7, 14, 30))["reminder"] == 1
    restarted = make_app(sla=SLA)  # a new process: new engine, same database
    assert restarted.engine is not app.engine
    assert check_at(restarted, clock, berlin(2026, 12, 7, 14, 31)) == {"reminder": 0, "escalation": 0}
    assert check_at(restarted, clock, berlin(2026, 12, 7, 16, 0))["escalation"] == 1
    again = make_app(sla=SLA)
    assert check_at(again, clock, berlin(2026, 12, 8, 9, 0)) == {"reminder": 0, "escalation": 0}
    assert [m.kind for m in staff_mails(again)] == ["sla_reminder", "sla_escalation"]


def test_a_clock_first_seen_breached_gets_only_the_escalation(make_app, clock) -> None:
    app = make_app(sla=SLA)
    new_request(app, clock, FRIDAY_16)
    assert check_at(app, clock, berlin(2026, 12, 8, 9, 0)) == {"reminder": 0, "escalation": 1}
    assert check_at(app, clock, berlin(2026, 12, 8, 9, 1)) == {"reminder": 0, "escalation": 0}
    assert [m.kind for m in staff_mails(app)] == ["sla_escalation"]


def test_the_ask_stops_the_arrival_clock(make_app, clock) -> None:
    app = make_app(sla=SLA)
    rid = new_request(app, clock, FRIDAY_16)
    clock.now = berlin(2026, 12, 7, 10, 0)
    commands.staff_transition(app, "ask", rid, "staff:kim", "")
    for at in (berlin(2026, 12, 7, 14, 0), berlin(2026, 12, 8, 10, 0)):
        assert check_at(app, clock, at) == {"reminder": 0, "escalation": 0}
    assert staff_mails(app) == []


def test_a_flag_has_its_own_clock_which_resolving_stops(make_app, clock) -> None:
    app = make_app(sla=SLA, workflow={"auto_ask": True})  # the arrival clock is met at once
    rid = new_request(app, clock, berlin(2026, 12, 7, 9, 30))
    clock.now = berlin(2026, 12, 7, 10, 0)
    with transaction(app.engine) as s:
        flag_id = app.workflow.flag(s, s.get(DeletionRequest, rid), reason="reply asks a question", now=clock.now,
                                    reply_text="Can I keep my invoices?")
    assert check_at(app, clock, berlin(2026, 12, 7, 15, 59)) == {"reminder": 0, "escalation": 0}
    assert check_at(app, clock, berlin(2026, 12, 7, 16, 0)) == {"reminder": 1, "escalation": 0}
    text = email.message_from_bytes(staff_mails(app)[0].raw, policy=email.policy.default).get_body(
        preferencelist=("plain",)).get_content()
    assert f"Flag #{flag_id} on request #{rid}" in text and "reply asks a question" in text
    assert f"inbox-bot flags show {flag_id}" in text
    clock.now = berlin(2026, 12, 8, 9, 0)
    commands.resolve_flag(app, flag_id, "dismiss", "staff:kim", "answered by phone")
    assert check_at(app, clock, berlin(2026, 12, 8, 11, 0)) == {"reminder": 0, "escalation": 0}
    assert notices(app) == [("flag", flag_id, "reminder")]


def test_a_flag_without_a_request_is_watched_too(make_app, clock) -> None:
    app = make_app(sla=SLA)
    clock.now = berlin(2026, 12, 7, 10, 0)
    with transaction(app.engine) as s:
        flag_id = app.workflow.flag(s, None, reason="intake notification failed verification", now=clock.now)
    assert check_at(app, clock, berlin(2026, 12, 8, 10, 0)) == {"reminder": 0, "escalation": 1}
    mail = staff_mails(app)[0]
    assert mail.request_id is None
    assert f"Flag #{flag_id} (message matched no request)" in mail.raw.decode()


def test_business_time_not_wall_time_across_a_dst_change(make_app, clock) -> None:
    """Fri 23 Oct 2026 16:00 CEST; clocks go back on Sunday; the reminder is Mon 14:00 CET all the same."""
    app = make_app(sla=SLA)
    new_request(app, clock, berlin(2026, 10, 23, 16, 0))
    assert check_at(app, clock, berlin(2026, 10, 26, 13, 59)) == {"reminder": 0, "escalation": 0}
    assert check_at(app, clock, berlin(2026, 10, 26, 14, 0))["reminder"] == 1
    assert check_at(app, clock, berlin(2026, 10, 26, 16, 0))["escalation"] == 1


def test_holidays_and_closed_dates_do_not_count(make_app, clock) -> None:
    """Wed 23 Dec 16:00: 24 Dec closed, 25/26 Dec holidays, weekend: reminder Mon 28 Dec 14:00."""
    app = make_app(sla=SLA)
    new_request(app, clock, berlin(2026, 12, 23, 16, 0))
    assert check_at(app, clock, berlin(2026, 12, 24, 16, 0)) == {"reminder": 0, "escalation": 0}
    assert check_at(app, clock, berlin(2026, 12, 28, 13, 59)) == {"reminder": 0, "escalation": 0}
    assert check_at(app, clock, berlin(2026, 12, 28, 14, 0))["reminder"] == 1


def test_reminder_share_is_configurable(make_app, clock) -> None:
    app = make_app(sla={**SLA, "reminder_share": 0.5})
    new_request(app, clock, FRIDAY_16)
    assert check_at(app, clock, berlin(2026, 12, 7, 11, 59))["reminder"] == 0
    assert check_at(app, clock, berlin(2026, 12, 7, 12, 0))["reminder"] == 1
    text = staff_mails(app)[0].raw.decode()
    assert "50% of the one-business-day reply time" in text


def test_sla_policy_keys_share_the_table_with_the_calendar() -> None:
    section = {**SLA, "reminder_share": 0.8, "digest_time": "07:45"}
    assert BusinessCalendar.from_config(section).timezone == "Europe/Berlin"
    assert SlaPolicy.from_config(section) == SlaPolicy(reminder_share=0.8, digest_time=time(7, 45))
    assert SlaPolicy.from_config({}) == SlaPolicy(reminder_share=0.75, digest_time=time(8, 30))
    with pytest.raises(ValueError, match=r"^sla\.reminder_shares: unknown key"):
        BusinessCalendar.from_config({"reminder_shares": 0.8})


@pytest.mark.parametrize(("section", "key"), [
    ({"reminder_share": 1.0}, "sla.reminder_share"), ({"reminder_share": 0}, "sla.reminder_share"),
    ({"reminder_share": "75%"}, "sla.reminder_share"), ({"reminder_share": True}, "sla.reminder_share"),
    ({"digest_time": "8:30am"}, "sla.digest_time"), ({"digest_time": "24:00"}, "sla.digest_time"),
])
def test_a_bad_policy_value_is_a_config_error_naming_the_key(make_app, section: dict, key: str) -> None:
    app = make_app(sla=section)
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        app.check_sla()
