"""The staff digest: its content in text and HTML, once per business day, and `inbox-bot digest`."""

from __future__ import annotations

import email
import email.policy
import html
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from inbox_bot import cli, commands
from inbox_bot.digest import digest_day, render_digest
from inbox_bot.store.db import make_engine, transaction
from inbox_bot.store.models import DeletionRequest, Flag, OutboxMail, StaffDigest

BERLIN = ZoneInfo("Europe/Berlin")
SLA = {"timezone": "Europe/Berlin", "business_hours": ["09:00", "17:00"],
       "holidays": {"country": "DE", "subdivision": "BE"}, "closed_dates": ["2026-12-24"]}
WORDS = "Can I keep my invoices? <b>Thanks</b> & bye"


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def flat(s: str, *, markup: bool = False) -> str:
    """The words a reader sees: whitespace collapsed; for HTML also tags dropped and entities decoded."""
    if markup:
        s = html.unescape(re.sub(r"<[^>]+>", " ", s))
    return " ".join(s.split())


def add(app, clock, at: datetime, addr: str) -> int:
    clock.now = at
    return commands.add_request(app, addr, None, "", "staff:test")["id"]


def busy_day(app, clock) -> dict[str, int]:
    """Four requests: one breached and flagged, one still in time, one asked, one cancelled."""
    old = add(app, clock, berlin(2026, 12, 3, 10, 0), "old@example.net")  # due Fri 10:00: breached
    with transaction(app.engine) as s:
        flag_id = app.workflow.flag(s, s.get(DeletionRequest, old), reason="reply asks a question",
                                    now=clock.now, suggestion="Answer the question by hand, then ask again.",
                                    evidence=["sender: HIT - dmarc=pass aligned", "classify: miss - question"],
                                    reply_text=WORDS)
    fresh = add(app, clock, berlin(2026, 12, 7, 8, 0), "fresh@example.net")  # due Mon 17:00
    asked = add(app, clock, berlin(2026, 12, 7, 8, 5), "asked@example.net")
    commands.staff_transition(app, "ask", asked, "staff:kim", "")
    gone = add(app, clock, berlin(2026, 12, 7, 8, 10), "gone@example.net")
    commands.staff_transition(app, "cancel", gone, "staff:kim", "changed their mind")
    clock.now = berlin(2026, 12, 7, 11, 0)
    return {"old": old, "fresh": fresh, "flag": flag_id}


def test_a_busy_digest_in_text(make_app, clock) -> None:
    app = make_app(sla=SLA)
    ids = busy_day(app, clock)
    parts = render_digest(app.engine, app.sla_watch, clock.now)
    assert parts["subject"] == ("[inbox-bot] Digest Monday 7 December 2026: 2 breached, "
                                "3 running clocks, 1 open flag")
    text = parts["txt"]
    assert "Daily digest for Monday 7 December 2026 (as of Mon 7 Dec 2026, 11:00 CET)" in text
    assert "2 clocks breached" in text
    states = text.split("Requests by state (4 in all):")[1].split("Running SLA clocks")[0]
    assert [line.split() for line in states.strip().splitlines()] == [
        ["received", "2"], ["awaiting_confirmation", "1"], ["cancelled", "1"]]
    clocks = text.split("Running SLA clocks")[1].split("Open flags")[0]
    rows = [line for line in clocks.splitlines() if "due " in line]
    # breached first (the request's and the flag's clock, both due Fri 10:00), then the fresh one
    assert rows[0].lstrip().startswith(f"!! Flag #{ids['flag']} on request #1")
    assert rows[1].lstrip().startswith("!! Request #1: reply to the new request")
    assert all("overdue by 9 h business time, due Fri 4 Dec 2026, 10:00 CET" in row for row in rows[:2])
    assert f"Request #{ids['fresh']}: reply to the new request" in rows[2]
    assert "6 h business time left, due Mon 7 Dec 2026, 17:00 CET" in rows[2]
    flags = text.split("Open flags (1):")[1]
    assert f"Flag #{ids['flag']}, request #1, old@example.net (received)" in flags
    assert "Reason:     reply asks a question" in flags
    assert "Suggestion: Answer the question by hand, then ask again." in flags
    assert f"    | {WORDS}" in flags  # the customer's words, verbatim in the text part
    assert "- sender: HIT - dmarc=pass aligned" in flags and "- classify: miss - question" in flags
    assert "inbox-bot flags resolve ID --action confirm|cancel|reply|dismiss" in text
    assert "{{" not in text and "{%" not in text


def test_a_busy_digest_in_html(make_app, clock) -> None:
    app = make_app(sla=SLA)
    ids = busy_day(app, clock)
    page = render_digest(app.engine, app.sla_watch, clock.now)["html"]
    assert page.lstrip().startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<b>Thanks</b>" not in page and "&lt;b&gt;Thanks&lt;/b&gt; &amp; bye" in page  # data, escaped
    words = flat(page, markup=True)
    assert "Daily digest for Monday 7 December 2026" in words
    assert "2 clocks breached the one-business-day promise." in words
    assert "received 2 awaiting_confirmation 1 cancelled 1 in all 4" in words
    table = flat(page.split("Running SLA clocks")[1].split("Open flags")[0], markup=True)
    assert table.index(f"Flag #{ids['flag']} (request #1)") < table.index("Request #1 (new)") < table.index(
        f"Request #{ids['fresh']} (new)")
    assert table.count("overdue 9 h") == 2 and "6 h" in table
    assert page.count("background:#fef3f2;") >= 3  # the banner and both breached rows
    flags = flat(page.split("Open flags")[1], markup=True)
    assert f"Flag #{ids['flag']} · request #1 · old@example.net ( received )" in flags
    assert "The customer's words " + WORDS in flags
    assert "Suggestion Answer the question by hand, then ask again." in flags
    assert "sender: HIT - dmarc=pass aligned" in flags


def test_an_empty_day_says_so_in_one_line(make_app, clock) -> None:
    app = make_app(sla=SLA)
    rid = add(app, clock, berlin(2026, 12, 4, 10, 0), "ana@example.net")
    commands.staff_transition(app, "ask", rid, "staff:kim", "")
    clock.now = berlin(2026, 12, 7, 8, 30)
    parts = render_digest(app.engine, app.sla_watch, clock.now)
    assert parts["subject"] == "[inbox-bot] Digest Monday 7 December 2026: nothing needs a person"
    body = [line for line in parts["txt"].splitlines() if line.strip()]
    assert body == ["Daily digest for Monday 7 December 2026 (as of Mon 7 Dec 2026, 08:30 CET)",
                    "Nothing needs a person today: no running SLA clocks and no open flags.",
                    "-- ", "inbox-bot at support@clickport.io"]
    page = parts["html"]
    assert "<table" not in page
    assert "Nothing needs a person today: no running SLA clocks and no open flags." in page


def test_a_flag_on_a_lone_message_and_long_evidence(make_app, clock) -> None:
    app = make_app(sla=SLA)
    clock.now = berlin(2026, 12, 7, 10, 0)
    evidence = [f"check {i}: HIT" for i in range(12)]
    with transaction(app.engine) as s:
        flag_id = app.workflow.flag(s, None, reason="intake notification failed verification", now=clock.now,
                                    evidence=evidence, reply_text="")
    text = render_digest(app.engine, app.sla_watch, clock.now)["txt"]
    assert f"Flag #{flag_id}, message matched no request" in text
    assert "The sender's words:" in text and "(empty)" in text
    assert "Suggestion: Read the evidence and decide: inbox-bot flags show" in text
    assert "check 7: HIT" in text and "check 8: HIT" not in text
    assert f"... and 4 more: inbox-bot flags show {flag_id}" in text


def digests(app) -> list[OutboxMail]:
    with transaction(app.engine) as s:
        return list(s.exec(select(OutboxMail).where(OutboxMail.kind == "digest").order_by(OutboxMail.id)))


@pytest.mark.parametrize(("at", "day"), [
    (berlin(2026, 12, 7, 8, 29), None),  # Monday, too early
    (berlin(2026, 12, 7, 8, 30), "2026-12-07"),
    (berlin(2026, 12, 7, 23, 59), "2026-12-07"),  # late, the same day
    (berlin(2026, 12, 5, 9, 0), None),  # Saturday
    (berlin(2026, 12, 24, 9, 0), None),  # closed date
    (berlin(2026, 12, 25, 9, 0), None),  # Christmas Day
    (berlin(2026, 3, 29, 8, 30), None),  # Sunday, the DST change
    (berlin(2026, 3, 30, 8, 30), "2026-03-30"),  # CEST now: 06:30 UTC
])
def test_the_digest_day(make_app, at: datetime, day: str | None) -> None:
    app = make_app(sla=SLA)
    result = digest_day(app.sla_watch, at)
    assert (result.isoformat() if result else None) == day


def test_sent_once_per_business_day_to_staff(make_app, clock) -> None:
    app = make_app(sla={**SLA, "digest_time": "07:45"})
    busy_day(app, clock)
    clock.now = berlin(2026, 12, 8, 7, 44)
    assert app.send_digest() == {"digest": 0}
    clock.now = berlin(2026, 12, 8, 7, 45)
    assert app.send_digest() == {"digest": 1}
    assert app.send_digest() == {"digest": 0}
    assert make_app(sla=SLA).send_digest() == {"digest": 0}  # a restarted process
    clock.now = berlin(2026, 12, 9, 7, 45)
    assert app.send_digest() == {"digest": 1}
    mails = digests(app)
    assert len(mails) == 2 and all(m.to_addr == app.cfg.staff_address and m.request_id is None for m in mails)
    msg = email.message_from_bytes(mails[0].raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"].startswith("[inbox-bot] Digest Tuesday 8 December 2026:")
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    with transaction(app.engine) as s:
        assert [d.day.isoformat() for d in s.exec(select(StaffDigest).order_by(StaffDigest.id))] == [
            "2026-12-08", "2026-12-09"]


def test_digest_print_and_html_send_nothing(tmp_path: Path, capsys) -> None:
    config = tmp_path / "inbox-bot.toml"
    config.write_text('[sla]\ntimezone = "Europe/Berlin"\n', encoding="utf-8")
    assert cli.main(["--config", str(config), "digest", "--print"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Subject: [inbox-bot] Digest ") and "Daily digest for " in out
    assert "Nothing needs a person today" in out
    assert cli.main(["--config", str(config), "digest", "--html"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("<!DOCTYPE html>") and "Daily digest for " in page
    assert cli.main(["--config", str(config), "requests", "list", "--json"]) == 0
    capsys.readouterr()
    assert not (tmp_path / "mail" / "sent").exists()
    with transaction(make_engine(f"sqlite:///{tmp_path / 'state.db'}")) as s:
        assert list(s.exec(select(OutboxMail))) == []


def test_a_bad_digest_time_is_exit_2(tmp_path: Path, capsys) -> None:
    config = tmp_path / "inbox-bot.toml"
    config.write_text('[sla]\ndigest_time = "half past eight"\n', encoding="utf-8")
    assert cli.main(["--config", str(config), "digest", "--print"]) == 2
    assert "sla.digest_time:" in capsys.readouterr().err


def test_urgent_flags_come_first(make_app, clock) -> None:
    app = make_app(sla=SLA)
    ids = busy_day(app, clock)
    with transaction(app.engine) as s:
        late = app.workflow.flag(s, None, reason="a reply after erasure", now=clock.now)
        s.get(Flag, late).urgent = True
    parts = render_digest(app.engine, app.sla_watch, clock.now)
    flags = parts["txt"].split("Open flags (2):")[1]
    urgent = "URGENT (reply inside the restore window): "
    assert flags.index(f"{urgent}Flag #{late}") < flags.index(f"\nFlag #{ids['flag']}, request #1")
    assert f"{urgent}Flag #{ids['flag']}" not in flags
    assert "URGENT (reply inside the restore window)" in parts["html"]


def test_erasures_since_the_last_digest_are_listed_once(make_app, clock) -> None:
    app = make_app(sla=SLA)
    rid = add(app, clock, berlin(2026, 12, 4, 10, 0), "ana@example.net")
    commands.staff_transition(app, "confirm", rid, "staff:kim", "confirmed by phone")
    clock.now = berlin(2026, 12, 5, 11, 0)
    assert app.run_erasures() == {"done": 1}
    clock.now = berlin(2026, 12, 7, 8, 30)
    parts = render_digest(app.engine, app.sla_watch, clock.now)
    assert "Erased since the last digest (1" in parts["txt"]
    assert f"Request #{rid}  ana@example.net" in parts["txt"]
    assert "ana@example.net" in parts["html"] and "Erased since the last digest" in parts["html"]
    app.send_digest()
    clock.now = berlin(2026, 12, 8, 8, 30)
    assert "Erased since the last digest" not in render_digest(app.engine, app.sla_watch, clock.now)["txt"]
