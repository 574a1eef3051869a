"""Our own DKIM check (security.verify_dkim): threats rows 2, 3, 9 and 10 with a local key and injected DNS.

The mails are signed here with a throw-away RSA key (openssl, which CI installs for the IMAP tests) and the
DNS function hands dkimpy its TXT record, so nothing leaves the machine. The end-to-end cases go through the
whole pipeline with the helpers of test_threats.py; the control shows that a correctly signed reply still
erases, so the "no action" cases cannot pass on a bot that never acts.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dkim
import pytest

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import ConfigError, build_config
from inbox_bot.mail.dkim_check import MAX_SIGNATURES, verify_dkim
from inbox_bot.mail.parse import parse_mail
from inbox_bot.triage.base import TriageContext
from inbox_bot.triage.sender import Sender
from inbox_bot.types import DkimResult, DkimSignature, Facts, RequestSnapshot, State
from tests.conftest import drop
from tests.test_threats import CONFIRM, CUSTOMER, asked, assert_no_action, jobs, outbox, reply, run, with_headers

SIGNED = ("from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references", "reply-to", "sender",
          "mime-version", "content-type")


@dataclass(frozen=True)
class Key:
    private: bytes  # PEM
    public: str  # base64 DER SubjectPublicKeyInfo, the p= of the TXT record


@pytest.fixture(scope="session")
def key(tmp_path_factory: pytest.TempPathFactory) -> Key:
    folder = tmp_path_factory.mktemp("dkim")
    pem = folder / "key.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(pem), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return Key(pem.read_bytes(), base64.b64encode(der).decode())


def dns_for(key: Key, *domains: str) -> Callable[..., bytes | None]:
    """A DNS function publishing ``key`` at s1._domainkey.DOMAIN for each of ``domains``."""
    records = {f"s1._domainkey.{d}.".encode(): f"v=DKIM1; k=rsa; p={key.public}".encode() for d in domains}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def sign(raw: bytes, key: Key, domain: str = "customer.example", headers: tuple[str, ...] = SIGNED,
         length: bool = False, signer: type[dkim.DKIM] = dkim.DKIM) -> bytes:
    """``raw`` with a DKIM-Signature by ``domain`` (selector s1) on top, as the sender's server adds it."""
    d = signer(raw, linesep=b"\n")
    return d.sign(b"s1", domain.encode(), key.private, include_headers=[h.encode() for h in headers],
                  length=length) + raw


class Expired(dkim.DKIM):
    """dkimpy cannot write x=; this signer adds one that passed two days ago (and t= before it)."""

    def gen_header(self, fields, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201 - dkimpy's own signature
        old = str(int(time.time()) - 5 * 86400).encode()
        past = str(int(time.time()) - 2 * 86400).encode()
        fields = [(k, old) if k == b"t" else (k, v) for k, v in fields]
        return super().gen_header([*fields[:-1], (b"x", past), fields[-1]], *args, **kw)


# --- through the whole pipeline ----------------------------------------------------------------------

@pytest.fixture
def dkim_app(make_app, key: Key) -> tuple[App, int, int]:
    """verify_dkim on; DNS publishes the test key for the customer's domain and for evil.example."""
    app = make_app(security={"verify_dkim": True})
    app.pipeline.dkim_dns = dns_for(key, "customer.example", "evil.example")
    rid = asked(app)
    return app, rid, len(outbox(app))


def last(app: App) -> dict:
    return commands.list_messages(app)[-1]


def reasons(app: App) -> str:
    return "\n".join(last(app)["reasons"])


def test_control_a_correctly_signed_reply_erases(dkim_app, key: Key) -> None:
    app, rid, _ = dkim_app
    counts = run(app, sign(reply(app), key))
    assert counts.get("error") is None
    assert last(app)["action"] == "queue_erasure"
    assert commands.show_request(app, rid)["state"] == "erasure_queued" and len(jobs(app)) == 1


def test_a_second_unaligned_signature_does_not_spoil_the_genuine_one(dkim_app, key: Key) -> None:
    """A relay or list may add its own signature: one signature that counts is enough."""
    app, rid, _ = dkim_app
    run(app, sign(sign(reply(app), key), key, domain="evil.example"))
    assert commands.show_request(app, rid)["state"] == "erasure_queued" and len(jobs(app)) == 1


def test_signed_by_an_unaligned_domain_with_a_forged_trusted_pass(dkim_app, key: Key) -> None:
    """Row 1/2: the Authentication-Results on top say pass for customer.example (the MX was fooled or
    bypassed); our own check sees only evil.example's valid signature."""
    app, rid, before = dkim_app
    run(app, sign(reply(app), key, domain="evil.example"))
    assert_no_action(app, rid, before)
    assert last(app)["action"] == "flag_human"
    assert "d=evil.example is not aligned with the From domain customer.example" in reasons(app)


def test_a_suffix_lookalike_domain_is_not_aligned(make_app, key: Key) -> None:
    app = make_app(security={"verify_dkim": True})
    app.pipeline.dkim_dns = dns_for(key, "tomer.example", "customer.example.evil.com")
    rid = asked(app)
    before = len(outbox(app))
    run(app, sign(reply(app), key, domain="tomer.example"), "1.suffix")
    run(app, sign(reply(app), key, domain="customer.example.evil.com"), "2.parent")
    assert_no_action(app, rid, before)
    assert [m["action"] for m in commands.list_messages(app)[-2:]] == ["flag_human", "flag_human"]


def test_l_tag_signature_with_appended_text(dkim_app, key: Key) -> None:
    app, rid, before = dkim_app
    raw = sign(reply(app, quote=False), key, length=True) + b"\nAppended after signing by someone else.\n"
    assert dkim.verify(raw, dnsfunc=dns_for(key, "customer.example")), "dkimpy alone accepts it"
    run(app, raw)
    assert_no_action(app, rid, before)
    assert "l= body length limit" in reasons(app)


@pytest.mark.parametrize(("extra", "dkimpy_passes"), [
    ("Subject: Re: I confirm, delete everything", True),  # threats row 3 [tried]
    ("From: alice@customer.example", False),  # dkimpy counts From twice itself
])
def test_an_unsigned_extra_identity_header(dkim_app, key: Key, extra: str, dkimpy_passes: bool) -> None:
    app, rid, before = dkim_app
    raw = with_headers(sign(reply(app), key), extra)
    assert bool(dkim.verify(raw, dnsfunc=dns_for(key, "customer.example"))) is dkimpy_passes
    run(app, raw)
    assert_no_action(app, rid, before)
    name = extra.partition(":")[0]
    assert f"2 {name} headers but 1 signed (an unsigned extra {name})" in reasons(app)


def test_tampered_body(dkim_app, key: Key) -> None:
    """A genuine signed "do not delete" turned into a confirm."""
    app, rid, before = dkim_app
    raw = sign(reply(app, "Please do not delete my account, I changed my mind."), key)
    run(app, raw.replace(b"Please do not delete my account, I changed my mind.", CONFIRM.encode()))
    assert_no_action(app, rid, before)
    assert "body hash mismatch" in reasons(app)


def test_a_signature_that_does_not_cover_to_cannot_carry_the_token(dkim_app, key: Key) -> None:
    """Row 9: with To unsigned, anyone holding one of the customer's signed mails could put a token there."""
    app, rid, before = dkim_app
    run(app, sign(reply(app), key, headers=tuple(h for h in SIGNED if h != "to")))
    assert_no_action(app, rid, before)
    assert "does not sign To: a token there cannot be trusted" in reasons(app)


def test_an_unsigned_cc_is_not_trusted(dkim_app, key: Key) -> None:
    app, rid, before = dkim_app
    raw = sign(reply(app), key, headers=tuple(h for h in SIGNED if h != "cc"))
    run(app, with_headers(raw, "Cc: support@clickport.io"))
    assert_no_action(app, rid, before)
    assert "does not sign Cc" in reasons(app)


def test_an_expired_signature_x_tag(dkim_app, key: Key) -> None:
    """Row 10: a replay of an old signed mail whose signature carried x= (dkimpy honours it)."""
    app, rid, before = dkim_app
    run(app, sign(reply(app), key, signer=Expired))
    assert_no_action(app, rid, before)
    assert "x= value is past" in reasons(app)


def test_dns_failure_is_not_verified_and_the_bot_goes_on(dkim_app, key: Key) -> None:
    app, rid, before = dkim_app

    def broken(name: bytes, timeout: int = 5) -> bytes:
        raise OSError("resolver unreachable")

    app.pipeline.dkim_dns = broken
    drop(app, sign(reply(app), key), "1.dns-down")
    drop(app, sign(reply(app, "Yes, delete my account please."), key), "2.next")
    counts = app.poll_once()
    assert counts.get("error") is None and counts["flag_human"] == 2, counts  # both handled, none left pending
    assert_no_action(app, rid, before)
    first = commands.list_messages(app)[-2]["reasons"]
    assert "DNS lookup of s1._domainkey.customer.example. failed (OSError: resolver unreachable)" in "\n".join(first)


def test_unsigned_reply_is_not_verified_when_on(dkim_app) -> None:
    app, rid, before = dkim_app
    run(app, reply(app))
    assert_no_action(app, rid, before)
    assert "own DKIM check: no DKIM-Signature" in reasons(app)


def test_off_by_default_behaves_as_before(app: App, key: Key) -> None:
    """Without verify_dkim the trusted Authentication-Results decide alone, as they did."""
    assert app.cfg.verify_dkim is False
    rid = asked(app)
    run(app, sign(reply(app), key, domain="evil.example"))  # no DNS is consulted: the signature is not read
    assert last(app)["action"] == "queue_erasure"
    assert commands.show_request(app, rid)["state"] == "erasure_queued" and len(jobs(app)) == 1


# --- verify_dkim on its own ----------------------------------------------------------------------------

def test_verify_dkim_reports_each_signature(key: Key) -> None:
    raw = sign(sign(_mail(), key), key, domain="evil.example", headers=("from", "to"))
    result = verify_dkim(raw, dns_for(key, "customer.example", "evil.example"))
    assert result.problem is None
    evil, good = result.signatures
    assert good == DkimSignature(domain="customer.example", selector="s1", signed_headers=SIGNED, passed=True)
    assert good.counts
    assert evil.passed and not evil.counts
    assert evil.problems == ("Subject not signed", "Date not signed", "Message-ID not signed")


def test_verify_dkim_extra_subject_that_dkimpy_passes(key: Key) -> None:
    raw = b"Subject: I confirm\n" + sign(_mail(), key)
    dns = dns_for(key, "customer.example")
    assert dkim.verify(raw, dnsfunc=dns)
    (sig,) = verify_dkim(raw, dns).signatures
    assert sig.passed and not sig.counts
    assert sig.problems == ("2 Subject headers but 1 signed (an unsigned extra Subject)",)


def test_verify_dkim_oversigned_subject_breaks_on_an_added_one(key: Key) -> None:
    raw = b"Subject: I confirm\n" + sign(_mail(), key, headers=(*SIGNED, "subject"))
    (sig,) = verify_dkim(raw, dns_for(key, "customer.example")).signatures
    assert not sig.passed and sig.signed_headers.count("subject") == 2


def test_verify_dkim_l_tag(key: Key) -> None:
    (sig,) = verify_dkim(sign(_mail(), key, length=True), dns_for(key, "customer.example")).signatures
    assert sig.passed and sig.body_limit and not sig.counts
    assert sig.problems == ("l= body length limit: text may have been appended after signing",)


def test_verify_dkim_missing_key_and_no_signature(key: Key) -> None:
    (sig,) = verify_dkim(sign(_mail(), key), dns_for(key, "other.example")).signatures
    assert not sig.passed and sig.problems == ("no DKIM key published at s1._domainkey.customer.example.",)
    assert verify_dkim(_mail(), dns_for(key, "customer.example")) == DkimResult(problem="no DKIM-Signature")


@pytest.mark.parametrize("raw", [
    b"DKIM-Signature: garbage without tags\nFrom: a@customer.example\n\nhi\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=customer.example; s=s1; h=from; bh=AAAA; b=!!!!\n"
    b"From: a@customer.example\n\nhi\n",
    b"DKIM-Signature: v=1; d=x; d=y\nFrom: a@customer.example\n\nhi\n",
    b"\x00\xff not a mail at all \r\n\x01: \n",
    b"",
])
def test_verify_dkim_never_raises(key: Key, raw: bytes) -> None:
    result = verify_dkim(raw, dns_for(key, "customer.example"))
    assert result.problem or all(not s.counts for s in result.signatures)


def test_verify_dkim_checks_at_most_a_few_signatures(key: Key) -> None:
    calls: list[bytes] = []
    dns = dns_for(key, "customer.example")

    def counting(name: bytes, timeout: int = 5) -> bytes | None:
        calls.append(name)
        return dns(name, timeout)

    raw = _mail()
    for _ in range(MAX_SIGNATURES + 3):
        raw = sign(raw, key)
    assert len(verify_dkim(raw, counting).signatures) == MAX_SIGNATURES == len(calls)


def _mail() -> bytes:
    return (b"From: Alice <alice@customer.example>\nTo: support+tok@clickport.io\nSubject: Re: delete\n"
            b"Date: Tue, 01 Dec 2026 14:34:00 +0100\nMessage-ID: <r1@customer.example>\n"
            b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\nYes, delete it.\n")


# --- Sender reads the verdict (pure) ---------------------------------------------------------------------

def _sender(dkim_result: DkimResult | None, raw: bytes | None = None) -> tuple[bool, list[str]]:
    auth = (b"Authentication-Results: mx.clickport.io; dkim=pass header.d=customer.example; "
            b"dmarc=pass header.from=customer.example\n")
    mail = parse_mail(auth + (raw or _mail()), "t")
    facts = Facts(request=RequestSnapshot(7, CUSTOMER, State.AWAITING_CONFIRMATION))
    Sender().run(replace(mail, dkim=dkim_result), TriageContext(), facts)
    return facts.sender_verified, facts.sender_reasons


def _sig(domain: str = "customer.example", headers: tuple[str, ...] = SIGNED, **kw: object) -> DkimSignature:
    return DkimSignature(domain=domain, selector="s1", signed_headers=headers, passed=True, **kw)


@pytest.mark.parametrize(("result", "ok"), [
    (None, True),  # off: unchanged
    (DkimResult(signatures=(_sig(),)), True),
    (DkimResult(signatures=(_sig("mail.customer.example"),)), True),  # a subdomain aligns at a label boundary
    (DkimResult(signatures=(_sig("CUSTOMER.example."),)), True),
    (DkimResult(signatures=(_sig("example"),)), False),  # a bare TLD never aligns
    (DkimResult(signatures=(_sig("tomer.example"),)), False),
    (DkimResult(signatures=(_sig(problems=("x",)),)), False),
    (DkimResult(signatures=(DkimSignature("customer.example", signed_headers=SIGNED),)), False),  # did not verify
    (DkimResult(signatures=(_sig(headers=("from", "subject")),)), False),
    (DkimResult(signatures=(_sig(headers=("to", "subject")),)), False),
    (DkimResult(problem="no DKIM-Signature"), False),
    (DkimResult(), False),
])
def test_sender_with_own_dkim_verdict(result: DkimResult | None, ok: bool) -> None:
    verified, why = _sender(result)
    assert verified is ok, why


def test_sender_reasons_name_the_signature() -> None:
    verified, why = _sender(DkimResult(signatures=(_sig("evil.example", headers=("from",)),)))
    assert not verified
    assert ("own DKIM check: no signature that verifies, is aligned with customer.example and signs From, To"
            in why)
    assert ("own DKIM check: signature d=evil.example s=s1 does not count: d=evil.example is not aligned with "
            "the From domain customer.example; does not sign To: a token there cannot be trusted") in why


def test_sender_needs_cc_signed_when_there_is_one() -> None:
    raw = _mail().replace(b"Subject:", b"Cc: bob@customer.example\nSubject:")
    assert _sender(DkimResult(signatures=(_sig(),)), raw)[0]
    assert not _sender(DkimResult(signatures=(_sig(headers=("from", "to")),)), raw)[0]


# --- configuration -------------------------------------------------------------------------------------

def test_config_key(tmp_path: Path) -> None:
    assert build_config({}, tmp_path).verify_dkim is False
    assert build_config({"security": {"verify_dkim": True}}, tmp_path).verify_dkim is True
    with pytest.raises(ConfigError, match=r"^security\.verify_dkim: must be true or false, got 'yes'$"):
        build_config({"security": {"verify_dkim": "yes"}}, tmp_path)
