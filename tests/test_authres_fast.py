"""The Authentication-Results fast path against authres, its reference: wherever the fast path answers, it
answers exactly what authres does (and declines wherever authres fails); it does answer for the shapes real
MXes stamp; and the Sender check judges every header as before, whichever path read it."""

from __future__ import annotations

import re
from pathlib import Path

import authres
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbox_bot.mail.parse import parse_mail
from inbox_bot.mail.samples import PASS as SAMPLE_PASS
from inbox_bot.triage import authres_fast
from inbox_bot.triage.authres_fast import Parsed, parse_fast, parse_reference
from inbox_bot.triage.base import TriageContext
from inbox_bot.triage.sender import Sender
from inbox_bot.types import Evidence, Facts, RequestSnapshot, State

DATA = Path(__file__).parent / "data"
OURS = "mx.clickport.io"
FAILED = "authres raised"

# Shapes real MX software stamps (folding already undone, as parse_mail hands them over): all on the fast path.
REALISTIC = [
    f"{OURS}; dkim=pass header.d=example.org header.s=s1; spf=pass smtp.mailfrom=example.org; "
    "dmarc=pass header.from=example.org",
    f"{OURS}; dkim=pass header.d=example.org header.s=s1; spf=pass smtp.mailfrom=example.org; "
    "dmarc=pass (p=none dis=none) header.from=example.org",
    SAMPLE_PASS.format(d="customer.example"),
    # Gmail
    "mx.google.com;       dkim=pass header.i=@example.com header.s=20230601 header.b=AbC+/12x;       "
    "spf=pass (google.com: domain of alice@example.com designates 209.85.220.41 as permitted sender) "
    "smtp.mailfrom=alice@example.com;       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.com",
    "mx.google.com;       dkim=pass header.i=@github.com header.s=pf2023 header.b=Xk9/aB1c;       "
    "arc=pass (i=1 spf=pass spfdomain=github.com dkim=pass dkdomain=github.com dmarc=pass fromdomain=github.com);"
    "       spf=pass (google.com: domain of noreply@github.com designates 192.30.252.201 as permitted sender) "
    "smtp.mailfrom=noreply@github.com;       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=github.com",
    "mx.google.com;       spf=softfail (google.com: domain of transitioning bob@example.net does not designate "
    "198.51.100.7 as permitted sender) smtp.mailfrom=bob@example.net;       dmarc=fail (p=QUARANTINE sp=QUARANTINE "
    "dis=QUARANTINE) header.from=example.net",
    # OpenDKIM / OpenDMARC / policyd-spf behind Postfix (header.b unquoted; quoted is in FALLBACK)
    "mail.example.org; dkim=pass (1024-bit key) header.d=example.com header.i=@example.com",
    "mail.example.org; dkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com "
    "header.a=rsa-sha256 header.s=default",
    "mail.example.org; dkim=fail reason=signature_verification_failed (2048-bit key; secure) header.d=example.com",
    "mail.example.org; dmarc=pass (p=none dis=none) header.from=example.com",
    "mail.example.org; dmarc=fail (p=reject dis=quarantine) header.from=example.com",
    "mail.example.org; spf=pass (sender SPF authorized) smtp.mailfrom=alice@example.com",
    "mail.example.org; spf=none (no SPF record) smtp.mailfrom=alice@example.com smtp.helo=mail.example.com",
    # Rspamd
    "mx.example.org;\tdkim=pass header.d=example.com header.s=dkim header.b=AbCdEf12;\tdmarc=pass (policy=none) "
    "header.from=example.com;\tspf=pass (mx.example.org: domain of alice@example.com designates 192.0.2.1 as "
    "permitted sender) smtp.mailfrom=alice@example.com",
    # Exim
    "mx.example.org; iprev=pass (mail.example.com) smtp.remote-ip=192.0.2.1; spf=pass smtp.mailfrom=example.com; "
    "dkim=pass header.d=example.com header.s=s1 header.a=rsa-sha256; dmarc=pass header.from=example.com; arc=none",
    # Microsoft's ARC stamp (version 1), without its action= property
    "mx.microsoft.com 1; spf=pass smtp.mailfrom=example.com; dmarc=pass header.from=example.com; "
    "dkim=pass header.d=example.com; arc=none",
    # submission server with SMTP AUTH (Dovecot/Postfix), RFC 8601 examples
    "imap.example.org; auth=pass (plain) smtp.auth=alice@example.org",
    "example.com; auth=pass (cram-md5) smtp.auth=sender@example.net; spf=pass smtp.mailfrom=example.net",
    "example.com; sender-id=fail header.from=example.com; dkim=pass (good signature) header.i=sender@example.com",
    "example.com; dkim/1=pass header.d=example.com; spf/2=pass smtp.mailfrom=example.com",
    # case, trailing white space, no space after ";"
    "MX.Example.ORG; DKIM=Pass Header.D=Example.ORG; Dmarc=FAIL HEADER.FROM=Example.ORG  ",
    f"{OURS};dkim=none;spf=pass smtp.mailfrom=bounces+123=example.com@mailer.example;dmarc=none header.from=x.example",
    f"{OURS}; dkim=pass header.d=a.example header.d=b.example",
    f"{OURS}; dkim=pass header.b=abc/DEF+gh= body.hash=x policy.dkim-rules=none",
]

# Shapes the fast path leaves to authres (some authres rejects too).
FALLBACK = [
    f"{OURS}; none",
    f"{OURS} 1; none",
    f"{OURS}; none (a=b; dmarc=pass)",
    f"{OURS}; spf=pass smtp.mailfrom=customer.example;",  # authres: "Expected method"
    f"{OURS};",
    OURS,
    f"{OURS} 2; spf=pass",
    f"{OURS} 01; spf=pass",
    # OpenDKIM quotes header.b; authres keeps a quoted value only when it ends the resinfo
    "mail.example.org; dkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com "
    'header.b="AbCd1234"',
    'mail.example.org; dkim=pass header.b="AbCd1234" header.d=example.com',
    'mx.google.com; spf=pass (google.com: domain of x@example.com designates 192.0.2.1 as permitted sender) '
    'smtp.mailfrom="x@example.com"',
    '"mx.clickport.io"; dmarc=pass',
    # M365: no authserv-id, and an action= property
    "spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=customer.example; dkim=pass (signature was verified) "
    "header.d=customer.example;dmarc=pass action=none header.from=customer.example;compauth=pass reason=100",
    "mx.microsoft.com 1; spf=pass smtp.mailfrom=example.com; dmarc=pass action=none header.from=example.com",
    # Fastmail: properties of types authres drops (x-bits=, score=)
    "mx3.messagingengine.com;    dkim=pass (2048-bit rsa key sha256) header.d=example.com header.i=@example.com "
    "header.b=AbCdEfGh header.a=rsa-sha256 header.s=fm1 x-bits=2048;    dmarc=pass policy.published-domain-policy=none "
    "(p=none,d=none,d.eval=none) policy.policy-from=p header.from=example.com;    iprev=pass smtp.remote-ip=192.0.2.1 "
    "(mail.example.com);    spf=pass smtp.mailfrom=bounce@example.com smtp.helo=mail.example.com;    "
    "x-aligned-from=pass (Address match);    x-me-sender=none;    x-vs=clean score=0 state=0",
    # comments: nested, two in one gap, before the authserv-id, with a backslash or a quote
    f"{OURS}; dmarc=fail (a (dmarc=pass) b) header.from=customer.example",
    f"{OURS}; dmarc=pass (a) (b) header.from=customer.example",
    f"(c) {OURS}; dmarc=pass",
    f"{OURS}; dmarc=pass (a\\) b) header.from=customer.example",
    f'{OURS}; dmarc=pass (say "hi") header.from=customer.example',
    f"{OURS}; dmarc=pass (unbalanced header.from=customer.example",
    f"{OURS}; dmarc=pass unbalanced) header.from=customer.example",
    # reason: quoted, or not first
    f'{OURS}; dkim=pass reason="good signature" header.i=@customer.example',
    f"{OURS}; dkim=pass header.d=customer.example reason=x",
    # white space where the subset has none, line breaks, other white space
    f"{OURS}; dkim = pass header.d=customer.example",
    f"{OURS}; dkim=pass header.d= customer.example",
    f"{OURS}; dkim=pass header . d=customer.example",
    f"{OURS};\r\n dkim=pass header.d=customer.example",
    f"{OURS};\n\tdkim=pass header.d=customer.example",
    f"{OURS}; dkim=pass\u00a0header.d=customer.example",
    f"{OURS}; dkim=pass\x0bheader.d=customer.example",
    # values authres reads oddly
    f"{OURS}; dkim=pass header.d=",
    f"{OURS}; dkim=pass header.d=customer.example header.i=@",
    f"{OURS}; dkim=pass header.i=@customer.example.",
    f"{OURS}; iprev=pass smtp.remote-ip=2001:db8::1",
    f"{OURS}; dkim=pass x.d=customer.example",
    f"{OURS}; nonesuch=pass",
    f"{OURS}; dkim=pass; ; spf=pass",
    # non-ASCII and confusables
    f"{OURS}; dkim=pa\u017fs header.d=customer.example",
    f"{OURS}; dmarc=pass header.from=\u0441ustomer.example",
    f"{OURS}; dmarc=pass header.from=customer.example\u200b",
    f"{OURS}\uff1b dmarc=pass header.from=customer.example",
    f"{OURS}; \u212adkim=pass",
]

# Every Authentication-Results value of the existing tests (test_sender, test_threats, test_pipeline, test_dkim).
FROM_TESTS = [
    f"{OURS}; dkim=pass header.d=customer.example header.s=s1; spf=pass smtp.mailfrom=customer.example; "
    "dmarc=pass (p=none) header.from=customer.example",
    f"{OURS}; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=evil.example; dmarc=none "
    "header.from=customer.example",
    f"{OURS}; dkim=none; spf=softfail smtp.mailfrom=customer.example; dmarc=fail header.from=customer.example",
    f"{OURS}; dmarc=pass header.from=customer.example",
    f"{OURS}; dmarc=fail header.from=customer.example",
    f"{OURS}; dkim=none; spf=none; dmarc=none header.from=customer.example",
    "evil.example; dmarc=pass header.from=customer.example",
    f"{OURS}; dmarc=fail (dmarc=pass) header.from=customer.example",
    f"{OURS}; none (a=b; dmarc=pass)",
    "spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=customer.example; dkim=pass header.d=customer.example;"
    "dmarc=pass action=none header.from=customer.example;compauth=pass reason=100",
    "mx.other.example; dmarc=none",
    "spf=pass smtp.mailfrom=customer.example",
    "valid.com; dmarc=fail", "valid.com; dmarc=pass", "valid.com; dmarc=error", "invalid.com; dmarc=pass",
    "valid.com; dmarc=foobar", "valid.com 1; none",
    "valid.com (foobar) 1 (baz);\tdkim (Because I like it) / 1 (One yay) = (wait for it) fail\t"
    "policy (A dot can go here) . (like that) expired\t(this surprised me) = (as I wasn't expecting it) 1362471462",
    "valid.com;\tdkim=pass (good signature) header.d=customer.example",
    "valid.com;\tauth=pass (cram-md5) smtp.auth=alice@customer.example;\tspf=pass smtp.mailfrom=customer.example",
    "valid.com;\tauth=pass (cram-md5) smtp.auth=alice@customer.example;\tspf=fail smtp.mailfrom=customer.example",
    'valid.com;\tdkim=pass reason="good signature" header.i=@mail-router.example.net;'
    '\tdkim=fail reason="bad signature" header.i=@newyork.customer.example',
    "valid.com; dkim=pass header.i=@newyork.customer.example header.s=20111006 header.b=URn9MW+F",
    f"{OURS}; dmarc=pass header.from=customer.example; garbage",
    "mx.clickport.io; dmarc=pass", "  (comment) MX.clickport.io 1; none", '"mx.clickport.io"; dmarc=pass', "",
    f"{OURS}; dkim=pass header.d=mail.customer.example; dmarc=none header.from=customer.example",
    f"{OURS}; spf=pass smtp.mailfrom=bounces@customer.example",
    f"{OURS}; spf=pass smtp.helo=mail.customer.example",
    f"{OURS}; dkim=pass header.d=customer.example.evil.com",
    f"{OURS}; dkim=pass header.d=evil-customer.example",
    f"{OURS}; spf=pass smtp.mailfrom=customer.example.evil.com",
    f"{OURS}; dmarc=pass header.from=evil.example",
    f"{OURS}; dkim=pass header.d=customer.example; dmarc=fail header.from=customer.example",
    f"{OURS}; dkim=pass header.d=customer.example",
    f"{OURS}; spf=fail smtp.mailfrom=customer.example",
    f"{OURS}; dkim=pass header.d=xn--ustomer-xjg.example; dmarc=pass header.from=xn--ustomer-xjg.example",
    f"{OURS}; dmarc=pass header.from=xn--ustomer-xjg.example",
    f"{OURS}; dkim=pass header.d=evil.example; spf=pass smtp.mailfrom=evil.example; dmarc=fail",
    f"{OURS}; dkim=pass header.d=evil.example; spf=fail smtp.mailfrom=evil.example; dmarc=fail",
    f"{OURS}; spf=fail smtp.mailfrom=x; dmarc=none",
    f"{OURS}; dkim=pass header.d=customer.example; dmarc=pass header.from=customer.example",
]


def reference(value: str) -> Parsed | str:
    try:
        return parse_reference(value)
    except Exception:  # noqa: BLE001 - any failure is a result here: the fast path must then decline
        return FAILED


def same(value: str) -> Parsed | None:
    """The fast path's answer, after checking that it is authres's (or that it declined)."""
    fast = parse_fast(value)
    if fast is not None:
        assert fast == reference(value), value
    return fast


def _data_values() -> list[str]:
    values: dict[str, None] = {}
    for path in sorted(DATA.rglob("*.eml")):
        mail = parse_mail(path.read_bytes(), path.name)
        values.update((v, None) for k, v in mail.headers if k.lower() == "authentication-results")
    return list(values)


DATA_VALUES = _data_values()


@pytest.mark.parametrize("value", REALISTIC)
def test_realistic_headers_take_the_fast_path(value: str) -> None:
    assert same(value) is not None


def test_every_header_in_the_test_data_takes_the_fast_path() -> None:
    assert len(DATA_VALUES) >= 50, "tests/data lost its mails"
    assert [v for v in DATA_VALUES if same(v) is None] == []


@pytest.mark.parametrize("value", FALLBACK)
def test_unusual_headers_are_left_to_authres(value: str) -> None:
    assert parse_fast(value) is None


@pytest.mark.parametrize("value", FROM_TESTS)
def test_the_existing_test_vectors_agree(value: str) -> None:
    same(value)


def test_the_neutral_form() -> None:
    assert parse_fast("MX.Example.ORG 1 (c); DKIM/1=Pass (k) reason=OK Header.I=@Example.ORG (x); "
                      "spf=pass smtp.mailfrom=Bob@Example.ORG header.d=a header.d=b") == Parsed("mx.example.org", [
        authres_fast.Result("dkim", "pass", {"header.i": "@Example.ORG"}),
        authres_fast.Result("spf", "pass", {"smtp.mailfrom": "Bob@Example.ORG", "header.d": "b"}),
    ])


# Every white-space and comment shape in every gap of a header, the rest of it plain.
SLOTS = "{0}mx.example.org{1}1{2};{3}dkim=pass{4}reason=ok{5}header.d=example.org{6};{7}spf=pass{8}"
GAPS = ["", " ", "\t", "  \t ", "(c)", " (c)", "(c) ", " (c) ", "\t(a; b=c)\t", "()", " (a) (b) ", "(a)(b)",
        " (a (b)) ", " (a\\)) ", ' ("q") ', " ;", "\r\n ", "\n\t", "\u00a0"]


@pytest.mark.parametrize("slot", range(9))
@pytest.mark.parametrize("gap", GAPS)
def test_every_gap_shape_in_every_place(slot: int, gap: str) -> None:
    plain = ["", " ", " ", " ", " ", " ", " ", " ", ""]
    value = SLOTS.format(*(gap if i == slot else g for i, g in enumerate(plain)))
    fast = same(value)
    subset = GAPS[:10] if slot else GAPS[:4]  # white space and at most one flat comment; only white space in front
    if gap in subset and not (gap == "" and slot in (4, 5)):  # there it would glue two tokens
        assert fast is not None, value


# --- generated headers -------------------------------------------------------------------------------------

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = LETTERS + "0123456789_-"


def _case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.swapcase() if f else c for c, f in zip(word, flips, strict=True))


@st.composite
def gaps(draw: st.DrawFn, required: bool = True) -> str:
    ws = st.sampled_from([" ", "  ", "\t", " \t "])
    text = st.text(alphabet="".join(chr(c) for c in range(0x20, 0x7f) if chr(c) not in '()\\"') + "\t", max_size=20)
    shapes = ["w", "wc", "wcw", "c", "cw"] + ([] if required else [""])
    shape = draw(st.sampled_from(shapes))
    return "".join(draw(ws) if s == "w" else f"({draw(text)})" for s in shape)


@st.composite
def plain_headers(draw: st.DrawFn) -> str:
    """A header inside the fast path's subset (with any case, spacing and flat comments)."""
    token = st.text(alphabet=TOKEN, min_size=1, max_size=8)
    domain = st.lists(token, min_size=1, max_size=4).map(".".join)
    value = st.one_of(
        domain.map(lambda d: "@" + d),
        st.sampled_from(["pass", "example.org", "a@b.example", "bounces+x=y.example@m.example", "AbC+/12=", "1.2"]),
        st.text(alphabet=TOKEN + "._+/=", min_size=1, max_size=6).flatmap(
            lambda head: st.text(alphabet=TOKEN + "._@+/=", max_size=12).map(lambda tail: head + tail)),
    )
    out = draw(st.sampled_from(["", " ", "\t"])) + draw(domain)
    if draw(st.booleans()):
        out += draw(gaps()) + "1"
    for _ in range(draw(st.integers(1, 4))):
        out += draw(gaps(required=False)) + ";" + draw(gaps(required=False))
        method = draw(st.sampled_from(["dkim", "spf", "dmarc", "arc", "iprev", "auth", "x-aligned-from"]) | token)
        if method.lower().startswith("none"):
            method = "x" + method
        out += _case(draw, method) + draw(st.sampled_from(["", "/1", "/22"])) + "="
        out += _case(draw, draw(st.sampled_from(["pass", "fail", "none", "softfail", "temperror"]) | token))
        if draw(st.booleans()):
            out += draw(gaps()) + _case(draw, "reason") + "=" + draw(st.text(alphabet=TOKEN + ".", min_size=1,
                                                                               max_size=8))
        for _ in range(draw(st.integers(0, 4))):
            ptype = _case(draw, draw(st.sampled_from(["smtp", "header", "body", "policy"])))
            name = draw(st.sampled_from(["d", "i", "s", "b", "from", "mailfrom", "helo", "remote-ip"]) | token)
            out += draw(gaps()) + f"{ptype}.{name}={draw(value)}"
    return out + draw(gaps(required=False))


SPICE = [";", '"', "\\", "(", ")", "((", "=", "@", ".", "/", " ", "\t", "\r\n ", "\n", "\x00", "\x7f", "none",
         "reason=", "x.y=z", "header.d=", ' "q" ', "(a(b)c)", "\u017f", "\u212a", "\u0130", "\u0131", "\u0430",
         "\u00a0", "\u200b", "\uff1b", "\uff1d", "\u2024", "1", " 1 ", "/", "@@", ".."]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    value = draw(plain_headers() | st.sampled_from(REALISTIC + FALLBACK + FROM_TESTS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(value)))
        j = draw(st.integers(i, min(len(value), i + 12)))
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "swapcase", "truncate", "replace"]))
        if op == "insert":
            value = value[:i] + draw(st.sampled_from(SPICE)) + value[i:]
        elif op == "delete":
            value = value[:i] + value[j:]
        elif op == "duplicate":
            value = value[:j] + value[i:j] + value[j:]
        elif op == "swapcase":
            value = value[:i] + value[i:j].swapcase() + value[j:]
        elif op == "truncate":
            value = value[:i]
        else:
            value = value[:i] + draw(st.sampled_from(SPICE)) + value[j:]
    return value


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_headers())
def test_generated_plain_headers_take_the_fast_path_and_agree(value: str) -> None:
    assert same(value) is not None, value


@settings(max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_headers_agree_or_fall_back(value: str) -> None:
    same(value)


@settings(max_examples=1000, deadline=None, database=None)
@given(st.text(alphabet="mx.; dkimpasfr=(h)e@\"\\/1\tn\u017f", max_size=60))
def test_arbitrary_text_agrees_or_falls_back(value: str) -> None:
    same(value)


def test_a_long_hostile_header_is_declined_quickly() -> None:
    for value in (f"{OURS}; dkim=pass" + " " * 100_000 + "x", f"{OURS}; dkim=pass" + " header.d=a.b" * 20_000 + " (",
                  f"{OURS}; spf=pass smtp.mailfrom=" + "a." * 50_000 + '"'):
        assert parse_fast(value) is None  # a backtracking blow-up would hang here


# --- the Sender judges as before ---------------------------------------------------------------------------

ALICE = "alice@customer.example"


def _judged(auth: str) -> tuple[Evidence, list[str]]:
    raw = (f"Authentication-Results: {auth}\r\nFrom: Alice <{ALICE}>\r\nTo: support@clickport.io\r\n"
           "Subject: Re: Please confirm\r\nMessage-ID: <r1@customer.example>\r\n\r\nYes, delete it.\r\n").encode()
    facts = Facts(request=RequestSnapshot(7, ALICE, State.AWAITING_CONFIRMATION))
    ev = Sender().run(parse_mail(raw, "t"), TriageContext(trusted_authserv_ids=(OURS, "valid.com")), facts)
    return ev, facts.sender_reasons


def _ours(value: str) -> list[str]:
    """``value`` as if our MX had stamped it (so that the Sender reads it), as it is and about customer.example."""
    value = re.sub(r"^[ \t]*[^ \t;(]+", OURS, value, count=1)
    return [value, re.sub(r"example\.(com|org|net)", "customer.example", value)]


@pytest.mark.parametrize("auth", [v for r in REALISTIC + FALLBACK + DATA_VALUES for v in _ours(r)] + FROM_TESTS)
def test_the_verdict_is_the_same_on_either_path(auth: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _judged(auth)
    monkeypatch.setattr(authres_fast, "parse_fast", lambda value: None)
    slow = _judged(auth)
    assert (fast[0].hit, fast[0].detail, fast[0].data, fast[1]) == (slow[0].hit, slow[0].detail, slow[0].data, slow[1])


def test_the_sender_uses_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(value: str) -> None:
        raise AssertionError("authres was asked")

    monkeypatch.setattr(authres.AuthenticationResultsHeader, "parse_value", refuse)
    ev, reasons = _judged(f"{OURS}; dkim=pass (2048-bit key) header.d=customer.example header.s=s1; "
                          "dmarc=pass (p=none dis=none) header.from=customer.example")
    assert ev.hit and f"dmarc=pass by {OURS}" in reasons


def test_a_header_the_fast_path_declines_is_judged_by_authres() -> None:
    opendkim = (f"{OURS}; dkim=pass (2048-bit key; unprotected) header.d=customer.example header.i=@customer.example "
                'header.b="AbCd1234"; dmarc=pass (p=none dis=none) header.from=customer.example')
    assert parse_fast(opendkim) is None
    ev, reasons = _judged(opendkim)
    assert ev.hit
    assert reasons[1:3] == [f"dkim=pass header.d=customer.example by {OURS}", f"dmarc=pass by {OURS}"]
    assert ev.data["trusted_results"] == [{"authserv_id": OURS, "results": [
        {"method": "dkim", "result": "pass", "header.d": "customer.example", "header.i": "@customer.example",
         "header.b": "AbCd1234"},
        {"method": "dmarc", "result": "pass", "header.from": "customer.example"}]}]


def test_a_header_authres_rejects_still_counts_as_no_result() -> None:
    trailing = f"{OURS}; dmarc=pass header.from=customer.example;"
    assert parse_fast(trailing) is None
    ev, reasons = _judged(trailing)
    assert not ev.hit
    assert f"unparseable Authentication-Results by {OURS}: counts as no result" in reasons
