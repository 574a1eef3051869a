"""The sender check: threats.md rows 1, 2a-f, 3, 5, 6 and 7, alignment, Discourse's
Authentication-Results vectors, and the sender/verified cases of both development corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inbox_bot import addresses
from inbox_bot.mail import parse
from inbox_bot.mail.parse import parse_mail
from inbox_bot.triage.base import TriageContext
from inbox_bot.triage.sender import Sender, aligned, authserv_id_of
from inbox_bot.types import Evidence, Facts, RequestSnapshot, State

CORPUS = Path(__file__).parent / "data" / "corpus"
OURS = "mx.clickport.io"
ALICE = "alice@customer.example"
PASS = f"{OURS}; dkim=pass header.d=customer.example header.s=s1; spf=pass smtp.mailfrom=customer.example; " \
       "dmarc=pass (p=none) header.from=customer.example"


def eml(auth: tuple[str, ...] = (PASS,), from_: str = f"Alice <{ALICE}>", top: tuple[str, ...] = (),
        extra: tuple[str, ...] = (), body: str = "Yes, delete it.") -> bytes:
    """A reply; ``top`` header lines go above the Authentication-Results ones, ``extra`` below From."""
    lines = [*top, *(f"Authentication-Results: {a}" for a in auth), f"From: {from_}", "To: support@clickport.io",
             "Subject: Re: Please confirm", "Date: Tue, 01 Dec 2026 14:34:00 +0100",
             "Message-ID: <r1@customer.example>", "In-Reply-To: <ask-1@reply.clickport.io>", *extra,
             "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode()


def check(raw: bytes, email: str | None = ALICE, **ctx: object) -> tuple[Facts, Evidence]:
    facts = Facts(request=RequestSnapshot(7, email, State.AWAITING_CONFIRMATION) if email else None)
    return facts, Sender().run(parse_mail(raw, "t"), TriageContext(**ctx), facts)


def verified(raw: bytes, email: str | None = ALICE, **ctx: object) -> bool:
    facts, ev = check(raw, email, **ctx)
    assert facts.sender_verified is ev.hit
    return ev.hit


def test_verified_reply_reads_well_for_staff() -> None:
    facts, ev = check(eml())
    assert ev.hit and facts.sender_verified
    assert facts.sender_reasons[0] == f"From {ALICE} equals the account address"
    assert f"dmarc=pass by {OURS}" in facts.sender_reasons
    assert ev.data["from"] == ALICE and ev.data["verified"] is True and ev.data["problems"] == []


def test_address_comparison_ignores_case() -> None:
    assert verified(eml(from_="Alice <Alice@Customer.EXAMPLE>"), email="ALICE@customer.example")


# --- row 1: a plain forged From --------------------------------------------------------------------


@pytest.mark.parametrize("auth", [
    (),
    (f"{OURS}; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=evil.example; "
     "dmarc=none header.from=customer.example",),
    (f"{OURS}; dkim=none; spf=softfail smtp.mailfrom=customer.example; dmarc=fail header.from=customer.example",),
])
def test_forged_from_is_not_verified(auth: tuple[str, ...]) -> None:
    assert not verified(eml(auth=auth))


# --- row 2: forged Authentication-Results ----------------------------------------------------------

FORGED_PASS = f"{OURS}; dmarc=pass header.from=customer.example"


@pytest.mark.parametrize(("auth", "why"), [
    ((f"{OURS}; dmarc=fail header.from=customer.example", FORGED_PASS), "dmarc=fail"),
    ((f"{OURS}; dkim=none; spf=none; dmarc=none header.from=customer.example", FORGED_PASS), "no aligned"),
    (("evil.example; dmarc=pass header.from=customer.example",), "not a trusted server"),
    ((f"{OURS}; dmarc=fail (dmarc=pass) header.from=customer.example",), "dmarc=fail"),
    ((f"{OURS}; none (a=b; dmarc=pass)",), "no aligned"),
    (("spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=customer.example; dkim=pass header.d=customer.example;"
      "dmarc=pass action=none header.from=customer.example;compauth=pass reason=100",), "no authserv-id"),
], ids=["2a-fail-on-top", "2b-none-on-top", "2c-other-id", "2d-comment", "2e-none-comment", "2f-m365"])
def test_forged_authentication_results_never_verify(auth: tuple[str, ...], why: str) -> None:
    facts, ev = check(eml(auth=auth))
    assert not ev.hit
    assert any(why in r for r in facts.sender_reasons), facts.sender_reasons


def test_trusted_header_below_an_untrusted_one_is_ignored() -> None:
    facts, ev = check(eml(auth=("mx.other.example; dmarc=none", PASS)))
    assert not ev.hit and "no trusted Authentication-Results" in facts.sender_reasons


def test_m365_style_header_above_ours_hides_ours() -> None:
    assert not verified(eml(auth=("spf=pass smtp.mailfrom=customer.example", PASS)))


def test_trusted_header_below_a_foreign_received_line_was_written_by_the_sender() -> None:
    raw = eml(auth=(), extra=("Received: from laptop by smtp.evil.example; Tue, 1 Dec 2026 14:30:00 +0100",
                              f"Authentication-Results: {PASS}"))
    facts, ev = check(raw)
    assert not ev.hit
    assert any("below a header our MX did not add" in r for r in facts.sender_reasons)


def test_our_received_line_above_our_result_is_fine() -> None:
    top = ("Received: from mail.customer.example (mail.customer.example [198.51.100.1])\tby mx.clickport.io "
           "(Postfix) with ESMTPS id 1; Tue, 1 Dec 2026 14:34:00 +0100",)
    assert verified(eml(top=top))


def test_received_line_from_outside_above_our_result_hides_it() -> None:
    top = ("Received: from mx.clickport.io by imap.elsewhere.example; Tue, 1 Dec 2026 14:34:00 +0100",)
    assert not verified(eml(top=top))


def test_internal_hop_of_our_own_domain_is_ours() -> None:
    top = ("Received: from mx.clickport.io by store1.clickport.io; Tue, 1 Dec 2026 14:34:01 +0100",)
    assert verified(eml(top=top))


def test_other_trusted_server_ids_come_from_the_config() -> None:
    assert not verified(eml(), trusted_authserv_ids=("mx.elsewhere.example",))
    assert verified(eml(auth=(PASS.replace(OURS, "MX.Elsewhere.Example"),)),
                    trusted_authserv_ids=("mx.elsewhere.example",))


# Discourse spec/lib/email/authentication_results_spec.rb vectors, with "valid.com" as our server.

@pytest.mark.parametrize(("auth", "ok"), [
    (("valid.com; dmarc=fail",), False),
    (("valid.com; dmarc=pass",), True),
    (("valid.com; dmarc=error",), False),
    (("valid.com; dmarc=fail", "invalid.com; dmarc=pass"), False),
    (("valid.com; dmarc=fail", "valid.com; dmarc=pass"), False),
    (("valid.com; dmarc=foobar", "valid.com; dmarc=pass"), False),
    (("valid.com 1; none",), False),
    (("valid.com (foobar) 1 (baz);\tdkim (Because I like it) / 1 (One yay) = (wait for it) fail\t"
      "policy (A dot can go here) . (like that) expired\t(this surprised me) = (as I wasn't expecting it) "
      "1362471462",), False),
    (("valid.com;\tdkim=pass (good signature) header.d=customer.example",
      "valid.com;\tauth=pass (cram-md5) smtp.auth=alice@customer.example;\tspf=pass smtp.mailfrom=customer.example"),
     True),
    (("valid.com;\tdkim=pass (good signature) header.d=customer.example",
      "valid.com;\tauth=pass (cram-md5) smtp.auth=alice@customer.example;\tspf=fail smtp.mailfrom=customer.example"),
     False),
    (("valid.com;\tdkim=pass reason=\"good signature\" header.i=@mail-router.example.net;"
      "\tdkim=fail reason=\"bad signature\" header.i=@newyork.customer.example",), False),
    (("valid.com; dkim=pass header.i=@newyork.customer.example header.s=20111006 header.b=URn9MW+F",), True),
])
def test_discourse_vectors(auth: tuple[str, ...], ok: bool) -> None:
    assert verified(eml(auth=auth), trusted_authserv_ids=("valid.com",)) is ok


def test_unparseable_trusted_header_counts_as_no_result() -> None:
    facts, ev = check(eml(auth=(f"{OURS}; dmarc=pass header.from=customer.example; garbage",)))
    assert not ev.hit and any("unparseable" in r for r in facts.sender_reasons)


@pytest.mark.parametrize(("value", "expected"), [
    ("mx.clickport.io; dmarc=pass", "mx.clickport.io"),
    ("  (comment) MX.clickport.io 1; none", "mx.clickport.io"),
    ('"mx.clickport.io"; dmarc=pass', "mx.clickport.io"),
    ("spf=pass smtp.mailfrom=x.example", None),
    ("", None),
])
def test_authserv_id_extraction(value: str, expected: str | None) -> None:
    assert authserv_id_of(value) == expected


# --- alignment ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "ok"), [
    ("example.com", "example.com", True),
    ("a.example.com", "example.com", True),
    ("example.com", "mail.a.example.com", True),
    ("evil-example.com", "example.com", False),
    ("example.com.evil.com", "example.com", False),
    ("com", "example.com", False),
    ("", "example.com", False),
])
def test_alignment_is_at_a_label_boundary(a: str, b: str, ok: bool) -> None:
    assert aligned(a, b) is ok


@pytest.mark.parametrize(("auth", "ok"), [
    (f"{OURS}; dkim=pass header.d=mail.customer.example; dmarc=none header.from=customer.example", True),
    (f"{OURS}; spf=pass smtp.mailfrom=bounces@customer.example", True),
    (f"{OURS}; spf=pass smtp.helo=mail.customer.example", False),
    (f"{OURS}; dkim=pass header.d=customer.example.evil.com", False),
    (f"{OURS}; dkim=pass header.d=evil-customer.example", False),
    (f"{OURS}; spf=pass smtp.mailfrom=customer.example.evil.com", False),
    (f"{OURS}; dmarc=pass header.from=evil.example", False),
    (f"{OURS}; dkim=pass header.d=customer.example; dmarc=fail header.from=customer.example", False),
])
def test_aligned_passes(auth: str, ok: bool) -> None:
    assert verified(eml(auth=(auth,))) is ok


def test_every_trusted_header_must_pass() -> None:
    dkim = f"{OURS}; dkim=pass header.d=customer.example"
    assert verified(eml(auth=(dkim, f"{OURS}; dmarc=pass header.from=customer.example")))
    assert not verified(eml(auth=(dkim, f"{OURS}; spf=fail smtp.mailfrom=customer.example")))


# --- row 3: duplicate headers ------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    "From: Alice <alice@customer.example>", "Sender: x@customer.example\r\nSender: y@customer.example",
    "Reply-To: a@customer.example\r\nReply-To: b@customer.example", "To: other@clickport.io",
    "Cc: a@x.example\r\nCc: b@x.example", "Subject: CONFIRM", "Date: Wed, 02 Dec 2026 10:00:00 +0100",
    "Message-ID: <r2@customer.example>", "In-Reply-To: <ask-2@reply.clickport.io>",
    "References: <a@x>\r\nReferences: <b@x>",
])
def test_duplicate_identity_headers_are_rejected(extra: str) -> None:
    facts, ev = check(eml(extra=(extra,)))
    assert not ev.hit and any(r.startswith("duplicate ") for r in facts.sender_reasons)


def test_duplicate_received_and_authentication_results_are_normal() -> None:
    assert verified(eml(auth=(PASS, PASS)))


# --- rows 5 and 6: address parsing and display names -----------------------------------------------------


@pytest.mark.parametrize("from_", [
    "alice@customer.example <attacker@evil.example>",
    "alice@customer.example)<bob@evil.example>",
    "A <alice@customer.example>, B <bob@evil.example>",
    "undisclosed:;",
    "Alice <alice@customer.example\x00>",
])
def test_ambiguous_from_is_rejected(from_: str) -> None:
    assert not verified(eml(from_=from_))


@pytest.mark.parametrize("from_", [
    '"alice@customer.example" <m@evil.example>',
    "=?utf-8?q?alice=40customer=2Eexample?= <m@evil.example>",
])
def test_display_name_spoofing_is_not_the_account(from_: str) -> None:
    auth = (f"{OURS}; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=evil.example; "
            "dmarc=pass header.from=evil.example",)
    facts, ev = check(eml(auth=auth, from_=from_))
    assert not ev.hit and "From m@evil.example is not the account address alice@customer.example" in \
        facts.sender_reasons


# --- row 7: lookalikes -------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["xn--ustomer-xjg.example", "customer-example.com", "customer.example.evil.com"])
def test_lookalike_domain_with_its_own_passing_dmarc_is_not_the_account(domain: str) -> None:
    auth = (f"{OURS}; dkim=pass header.d={domain}; dmarc=pass header.from={domain}",)
    facts, ev = check(eml(auth=auth, from_=f"Alice <alice@{domain}>"))
    assert not ev.hit and ev.data["auth_ok"] is True
    assert f"From alice@{domain} is not the account address {ALICE}" in facts.sender_reasons


def test_raw_utf8_lookalike_from_is_not_verified() -> None:
    auth = (f"{OURS}; dmarc=pass header.from=xn--ustomer-xjg.example",)
    assert not verified(eml(auth=auth, from_="Alice <alice@\u0441ustomer.example>"))


def test_mixed_script_domain_is_flagged_even_when_equal() -> None:
    lookalike = "alice@xn--ustomer-xjg.example"
    auth = (f"{OURS}; dmarc=pass header.from=xn--ustomer-xjg.example",)
    facts, ev = check(eml(auth=auth, from_=f"Alice <{lookalike}>"), email="alice@\u0441ustomer.example")
    assert not ev.hit and ev.data["auth_ok"] is True
    assert f"From {lookalike} equals the account address" in facts.sender_reasons
    assert "mixed-script domain: \u0441ustomer in alice@xn--ustomer-xjg.example" in facts.sender_reasons


def test_normalisation_is_shared_with_the_parser() -> None:
    assert parse.normalise_address is addresses.normalise_address
    assert addresses.normalise_address(" Alice@\u0421USTOMER.example ") == "alice@xn--ustomer-xjg.example"
    assert addresses.mixed_script_labels("xn--ustomer-xjg.example") == ["\u0441ustomer"]
    assert addresses.mixed_script_labels("\u043f\u0440\u0438\u043c\u0435\u0440.example") == []


# --- no matched request ----------------------------------------------------------------------------------


def test_unmatched_mail_still_reports_its_authentication() -> None:
    facts, ev = check(eml(), email=None)
    assert not ev.hit and not facts.sender_verified
    assert ev.data["auth_ok"] is True and f"dmarc=pass by {OURS}" in ev.data["passes"]
    assert "no matched request to compare the From with" in facts.sender_reasons


# --- the development corpora ---------------------------------------------------------------------------


def _cases() -> list[tuple[str, dict]]:
    cases = []
    for name in ("sample", "sample2"):
        labels = CORPUS / name / "labels.jsonl"
        if labels.exists():
            cases += [(name, json.loads(line)) for line in labels.read_text("utf-8").splitlines() if line.strip()]
    return cases


CASES = [(c, case) for c, case in _cases()
         if case["category"] == "sender" or case["expected_action"] in ("queue_erasure", "cancel")]


@pytest.mark.skipif(not CASES, reason="corpus not present")
@pytest.mark.parametrize(("corpus", "case"), CASES, ids=[c["id"] for _, c in CASES])
def test_corpus_sender_verification(corpus: str, case: dict) -> None:
    raw = (CORPUS / corpus / case["file"]).read_bytes()
    for placeholder, value in ((b"{{IN_REPLY_TO}}", b"<ask-1@reply.clickport.io>"),
                               (b"{{REFERENCES}}", b"<ask-1@reply.clickport.io>"),
                               (b"{{TO}}", b"support@clickport.io")):
        raw = raw.replace(placeholder, value)
    facts, ev = check(raw, email=case["request"]["email"])
    expected = case["expected_action"] in ("queue_erasure", "cancel") and case["category"] != "sender"
    assert ev.hit is expected, facts.sender_reasons
