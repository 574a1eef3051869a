"""Outgoing mail: every template renders, threads, carries anti-loop headers and treats customer text
as data (threats rows 4, 11 and 17)."""

from __future__ import annotations

import email
import html
import re
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import UndefinedError
from markupsafe import escape

from inbox_bot.mail.compose import REPLY_MARKER, Composer, known_kinds

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
CUSTOMER_KINDS = ("received", "ask", "cancelled", "erasure_scheduled", "erased", "link_expired")
ALL_KINDS = (*CUSTOMER_KINDS, "address_change_alert", "staff_flag")
LANGUAGES = ("en", "de")
NOW = datetime(2026, 5, 12, 10, 15, tzinfo=UTC)
CUSTOMER = "alice@customer.example"
STAFF = "support-staff@clickport.io"
INJECTION = "{{ ''.__class__.__mro__[1].__subclasses__()|length }} {{7*7}} <script>alert(1)</script>"

SIGNATURE = {"en": "The Clickport team", "de": "Ihr Clickport-Team"}
MUST_SAY: dict[tuple[str, str], tuple[str, ...]] = {
    ("received", "en"): ("received your request", "Nothing has been deleted yet", "one business day",
                         "only deleted after you confirm", "changed your mind"),
    ("received", "de"): ("Anfrage erhalten", "Bisher wurde nichts gelöscht", "eines Werktags",
                         "erst gelöscht, wenn Sie es bestätigen", "anders überlegt"),
    ("ask", "en"): ("Reports panel", "CSV", "PDF", "Cancel your subscription", "Make.com", "Zapier",
                    "API keys", "tracking script", "yes, delete my account", "we will cancel the request",
                    "Nothing is erased until you confirm"),
    ("ask", "de"): ("Reports-Bereich", "CSV", "PDF", "Kündigen Sie Ihr Abonnement", "Make.com", "Zapier",
                    "API-Schlüssel", "Tracking-Skript", "ja, mein Konto löschen", "wir brechen die Anfrage ab",
                    "Es wird nichts gelöscht, bevor Sie bestätigen"),
    ("cancelled", "en"): ("has been cancelled", "Nothing was deleted", "sign in as usual"),
    ("cancelled", "de"): ("wurde abgebrochen", "Es wurde nichts gelöscht", "wie gewohnt anmelden"),
    ("erasure_scheduled", "en"): ("Wednesday, 13 May 2026, 11:15 UTC", "cancel", "before then"),
    ("erasure_scheduled", "de"): ("Mittwoch, 13. Mai 2026, 11:15 Uhr UTC", "abbrechen", "vorher"),
    ("erased", "en"): ("has been deleted", "every login session", "API keys", "Invoices and payment receipts",
                       "Paddle transaction ID", "7 years", "no longer visible", "24 hours", "30 days",
                       "cannot be recovered"),
    ("erased", "de"): ("wurde gelöscht", "alle Login-Sitzungen", "API-Schlüssel", "Rechnungen und Zahlungsbelege",
                       "Paddle-Transaktions-ID", "7 Jahre", "nicht mehr sichtbar", "24 Stunden", "30 Tage",
                       "nicht mehr wiederherstellbar"),
    ("link_expired", "en"): ("has expired", "did not confirm", "Nothing has been deleted", "one business day"),
    ("link_expired", "de"): ("abgelaufen", "nicht bestätigt", "Es wurde nichts gelöscht", "eines Werktags"),
}
STAFF_MUST_SAY = ("Request #12", CUSTOMER, "awaiting_confirmation", "acc_8812", "Moving to another tool",
                  "reply asks a question", "Can I keep my invoices for the tax office?",
                  "sender: HIT - dmarc=pass aligned", "classify: miss - question",
                  "Answer the question by hand, then ask again.", "<reply-77@customer.example>",
                  "inbox-bot request show 12", 'inbox-bot request confirm 12 --reason "..."',
                  'inbox-bot request cancel 12 --reason "..."')


def make_context(note: str = "Moving to another tool, thanks for everything.",
                 reply_text: str = "Can I keep my invoices for the tax office?", **flag: Any) -> dict[str, Any]:
    """What the workflow passes: the request view, the promises' numbers and, for staff, the flag."""
    return {
        "request": {"id": 12, "email": CUSTOMER, "account_id": "acc_8812", "note": note,
                    "state": "awaiting_confirmation", "language": "en",
                    "created_at": datetime(2026, 5, 11, 8, 30, tzinfo=UTC)},
        "run_after": datetime(2026, 5, 13, 11, 15, tzinfo=UTC),
        "changed_at": datetime(2026, 5, 9, 17, 0, tzinfo=UTC),
        "restore_hours": 24,
        "backup_days": 30,
        "invoice_years": 7,
        "support_address": "support@clickport.io",
        "flag": {"id": 3, "reason": "reply asks a question",
                 "suggestion": "Answer the question by hand, then ask again.",
                 "evidence": ["sender: HIT - dmarc=pass aligned", "classify: miss - question"],
                 "reply_text": reply_text, "message_id": "<reply-77@customer.example>", **flag},
    }


@pytest.fixture(scope="module")
def composer() -> Composer:
    return Composer(TEMPLATES, "support@clickport.io", message_id_domain="reply.clickport.io")


def compose(composer: Composer, kind: str, lang: str | None = "en", context: dict[str, Any] | None = None,
            **kw: Any) -> EmailMessage:
    """Compose, serialise and parse back, so the tests see what a mail client sees."""
    to = STAFF if kind == "staff_flag" else CUSTOMER
    msg = composer.compose(kind, to, context or make_context(), language=lang, now=NOW, **kw)
    return email.message_from_bytes(msg.as_bytes(), policy=policy.default)


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",)).get_content()
    page = msg.get_body(preferencelist=("html",)).get_content()
    return text, page


def flat(s: str, *, markup: bool = False) -> str:
    """The words a reader sees: whitespace collapsed; for HTML also tags dropped and entities decoded."""
    if markup:
        s = html.unescape(re.sub(r"<[^>]+>", " ", s))
    return " ".join(s.split())


def test_known_kinds() -> None:
    assert known_kinds(TEMPLATES) == sorted((*ALL_KINDS, "digest", "sla_escalation", "sla_reminder"))  # staff: issue 5


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_is_a_valid_alternative_mail(composer: Composer, kind: str, lang: str) -> None:
    msg = compose(composer, kind, lang)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in msg.iter_parts())
    assert msg["From"].addresses[0].addr_spec == "support@clickport.io"
    assert msg["From"].addresses[0].display_name == "Clickport Support"
    assert msg["To"] == (STAFF if kind == "staff_flag" else CUSTOMER)
    assert msg["Subject"] and "\n" not in msg["Subject"]
    assert msg["Date"] == format_datetime(NOW)
    assert re.fullmatch(r"<[^<>@\s]+@reply\.clickport\.io>", msg["Message-ID"])
    assert msg["X-Inbox-Bot-Kind"] == kind
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Bcc"] is None and msg["Cc"] is None
    text, page = parts(msg)
    assert page.lstrip().startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "{{" not in text + page and "{%" not in text + page


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", CUSTOMER_KINDS)
def test_customer_mail_says_what_the_customer_must_know(composer: Composer, kind: str, lang: str) -> None:
    msg = compose(composer, kind, lang)
    text, page = parts(msg)
    assert msg["Content-Language"] == lang
    assert text.splitlines()[0] == REPLY_MARKER
    assert REPLY_MARKER in page
    for phrase in (*MUST_SAY[kind, lang], SIGNATURE[lang], "Moving to another tool", "#12"):
        assert phrase in flat(text), phrase
        assert phrase in flat(page, markup=True), phrase


@pytest.mark.parametrize(("lang", "phrases"), [
    ("en", ("until 9 May 2026", "Nothing has been deleted", "reply to this email at once", "#12")),
    ("de", ("bis zum", "9. Mai 2026", "Es wurde nichts gelöscht", "antworten Sie bitte sofort", "#12")),
])
def test_the_alert_to_a_previous_address_gives_nothing_of_the_account_away(composer: Composer, lang: str,
                                                                          phrases: tuple[str, ...]) -> None:
    """Threats row 22: the previous address may belong to someone else by now; it learns that a request
    exists and how to stop it, never the new address or the customer's note."""
    text, page = parts(compose(composer, "address_change_alert", lang))
    for phrase in phrases:
        assert phrase in flat(text) and phrase in flat(page, markup=True), phrase
    for secret in (CUSTOMER, "Moving to another tool", "acc_8812"):
        assert secret not in text and secret not in page, secret


def test_german_mails_are_german_and_english_mails_are_not(composer: Composer) -> None:
    for kind in CUSTOMER_KINDS:
        en, de = parts(compose(composer, kind, "en"))[0], parts(compose(composer, kind, "de"))[0]
        assert "Hallo," in de and "Sie" in de and "Hello," not in de
        assert "Hello," in en and "Hallo," not in en


@pytest.mark.parametrize("lang", LANGUAGES)
def test_staff_flag_has_the_evidence_and_the_commands_in_english(composer: Composer, lang: str) -> None:
    msg = compose(composer, "staff_flag", lang, auto_submitted="auto-generated")
    text, page = parts(msg)
    assert msg["Content-Language"] == "en"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == "[inbox-bot] Request #12 needs a person: reply asks a question"
    assert REPLY_MARKER not in text
    for phrase in STAFF_MUST_SAY:
        assert phrase in flat(text), phrase
        assert phrase in flat(page, markup=True), phrase


def test_staff_flag_for_an_unmatched_message(composer: Composer) -> None:
    context = make_context(evidence=[], suggestion="", message_id=None) | {"request": None}
    msg = compose(composer, "staff_flag", context=context)
    text, page = parts(msg)
    assert msg["Subject"].startswith("[inbox-bot] Unmatched message needs a person")
    for part in (flat(text), flat(page, markup=True)):
        assert "matched no deletion request" in part
        assert "may be forged" in part
        assert "request confirm" not in part
        assert "(none)" in part


@pytest.mark.parametrize(("language", "expected"), [
    (None, "en"), ("", "en"), ("en", "en"), ("de", "de"), ("DE", "de"), ("de-AT", "de"), ("de_CH", "de"),
    ("fr", "en"), ("../de", "en"), ("de/../..", "en"),
])
def test_language_falls_back_to_english(composer: Composer, language: str | None, expected: str) -> None:
    assert composer.language_for("ask", language) == expected
    assert compose(composer, "ask", language)["Content-Language"] == expected


def test_an_incomplete_translation_falls_back_to_english_as_a_whole(tmp_path: Path) -> None:
    for part in ("subject", "txt", "html"):
        (tmp_path / f"hello.{part}.j2").write_text(f"english {part}\n")
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "hello.subject.j2").write_text("deutsch\n")
    (tmp_path / "_partial.subject.j2").write_text("x\n")
    (tmp_path / "lonely.subject.j2").write_text("x\n")
    assert known_kinds(tmp_path) == ["hello"]
    msg = Composer(tmp_path, "support@clickport.io").compose("hello", CUSTOMER, {}, language="de")
    assert msg["Subject"] == "english subject"
    assert msg["Content-Language"] == "en"
    assert msg["Message-ID"].endswith("@clickport.io>")


def test_threading_headers_follow_the_thread(composer: Composer) -> None:
    thread = ["<receipt-1@reply.clickport.io>", "<ask-2@reply.clickport.io>", "<reply-3@customer.example>"]
    msg = compose(composer, "erasure_scheduled", thread=thread)
    assert msg["In-Reply-To"] == "<reply-3@customer.example>"
    assert msg["References"].split() == thread


def test_no_thread_no_threading_headers(composer: Composer) -> None:
    msg = compose(composer, "received")
    assert msg["In-Reply-To"] is None and msg["References"] is None and msg["Reply-To"] is None


def test_malformed_thread_ids_are_left_out(composer: Composer) -> None:
    msg = compose(composer, "cancelled", thread=["<a@x.example>", "<ünicode@x.example>", "no-brackets",
                                                 "<a@x.example>"])
    assert msg["References"] == "<a@x.example>"
    assert msg["In-Reply-To"] == "<a@x.example>"


def test_reply_to_is_as_given(composer: Composer) -> None:
    token_address = "support+abcdefghijklmnopqrstuvwxyz@clickport.io"
    msg = compose(composer, "ask", reply_to=token_address)
    assert msg["Reply-To"] == token_address
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == [token_address]


def test_message_ids_are_unique(composer: Composer) -> None:
    assert compose(composer, "ask")["Message-ID"] != compose(composer, "ask")["Message-ID"]


def test_naive_datetimes_are_utc(composer: Composer) -> None:
    context = make_context()
    context["run_after"] = datetime(2026, 5, 13, 11, 15)
    msg = composer.compose("erasure_scheduled", CUSTOMER, context, now=datetime(2026, 5, 12, 10, 15))
    assert msg["Date"] == format_datetime(NOW)
    assert "Wednesday, 13 May 2026, 11:15 UTC" in parts(msg)[0]


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if k != "address_change_alert"])  # it shows none
def test_customer_text_is_data_never_template_source(composer: Composer, kind: str, lang: str) -> None:
    context = make_context(note=INJECTION, reply_text=INJECTION, reason=INJECTION, suggestion=INJECTION,
                           evidence=[INJECTION])
    msg = compose(composer, kind, lang, context=context)
    text, page = parts(msg)
    assert INJECTION in text
    assert str(escape(INJECTION)) in page
    assert "<script>" not in page
    for rendered in (text, page, msg["Subject"]):
        assert "49" not in rendered


def test_html_escapes_and_text_does_not(composer: Composer) -> None:
    text, page = parts(compose(composer, "received", context=make_context(note="Tom & Jerry <b>bold</b>")))
    assert "Tom & Jerry <b>bold</b>" in text
    assert "Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;" in page


BCC = "\r\nBcc: x@evil.example"


@pytest.mark.parametrize("field", ["to", "reply_to", "thread"])
def test_crlf_in_a_header_value_raises(composer: Composer, field: str) -> None:
    value = CUSTOMER + BCC
    kw: dict[str, Any] = {"thread": ["<a@x.example>", f"<b@x.example>{BCC}"]} if field == "thread" else {}
    to = value if field == "to" else CUSTOMER
    if field == "reply_to":
        kw["reply_to"] = value
    with pytest.raises(ValueError):
        composer.compose("ask", to, make_context(), **kw)


@pytest.mark.parametrize("bad", [
    "alice@customer.example <attacker@evil.example>", "a@customer.example, b@evil.example", "undisclosed:;",
    "not an address", "alice@customer.example\nBcc: x@evil.example", "alice@customer.example\x00",
])
def test_to_must_be_exactly_one_clean_address(composer: Composer, bad: str) -> None:
    with pytest.raises(ValueError):
        composer.compose("ask", bad, make_context())


@pytest.mark.parametrize("kw", [
    {"from_name": "Clickport" + BCC}, {"from_name": "Clickport\nBcc: x@evil.example"},
    {"from_address": "support@clickport.io" + BCC}, {"message_id_domain": "clickport.io" + BCC},
])
def test_crlf_in_the_sender_raises(kw: dict[str, str]) -> None:
    args = {"from_address": "support@clickport.io", **kw}
    with pytest.raises(ValueError):
        Composer(TEMPLATES, **args)


def test_line_breaks_in_data_never_become_headers(composer: Composer) -> None:
    context = make_context(note="bye" + BCC, reply_text="yes" + BCC, reason="question" + BCC)
    msg = compose(composer, "staff_flag", context=context)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "[inbox-bot] Request #12 needs a person: question Bcc: x@evil.example"
    head = composer.compose("staff_flag", STAFF, context, now=NOW).as_bytes().split(b"\n\n", 1)[0]
    assert not re.search(rb"^Bcc:", head, re.MULTILINE | re.IGNORECASE)
    assert b"Bcc: x@evil.example" in head  # folded into the one-line subject


def test_unknown_kind_names_the_known_kinds(composer: Composer) -> None:
    with pytest.raises(ValueError, match=r"unknown mail kind 'goodbye'.*ask.*staff_flag"):
        composer.compose("goodbye", CUSTOMER, make_context())
    with pytest.raises(ValueError, match="unknown mail kind"):
        composer.compose("../templates/ask", CUSTOMER, make_context())


def test_bad_auto_submitted_raises(composer: Composer) -> None:
    with pytest.raises(ValueError, match="Auto-Submitted"):
        composer.compose("ask", CUSTOMER, make_context(), auto_submitted="no")


@pytest.mark.parametrize(("kind", "missing"), [
    ("erasure_scheduled", "run_after"), ("erased", "restore_hours"), ("received", "request"),
    ("staff_flag", "flag"), ("ask", "support_address"),
])
def test_a_missing_variable_raises(composer: Composer, kind: str, missing: str) -> None:
    context = make_context()
    del context[missing]
    with pytest.raises(UndefinedError):
        composer.compose(kind, CUSTOMER, context)


def test_a_missing_key_raises(composer: Composer) -> None:
    context = make_context()
    del context["request"]["created_at"]
    with pytest.raises(UndefinedError):
        composer.compose("received", CUSTOMER, context)
