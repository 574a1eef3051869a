"""Our own DKIM verification ([security] verify_dkim), done at the edge because it needs DNS.

Authentication-Results can only be as good as our MX; where the bot can reach DNS it re-checks the
signatures itself (threats rows 2, 3, 9, 10) and hands the verdict to the pure triage chain as data
(``InboundMail.dkim``). dkimpy does the cryptography and honours ``x=``; on top of it a signature does
not count when it has ``l=`` (text may be appended after signing) or when a guarded header (From, To,
Subject, ...) occurs more often than ``h=`` lists it: dkimpy verifies the *last* instances while
Python reads the *first*, so an unsigned extra ``Subject`` passes dkimpy alone (row 3). Nothing here
raises: any error is a failed signature with its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import dkim
from dkim.dnsplug import get_txt
from dkim.util import parse_tag_value

from inbox_bot.types import GUARDED_HEADERS, DkimResult, DkimSignature

DnsFunc = Callable[..., bytes | str | None]  # dkimpy's: (name: bytes, timeout=5) -> TXT record or None

MAX_SIGNATURES = 5  # each costs a DNS lookup: a mail with hundreds must not stall the bot
log = logging.getLogger("inbox_bot.dkim")


def _ascii(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class _RecordingDns:
    """Wraps the DNS function so that a failed signature can say whether its key was found."""

    def __init__(self, dnsfunc: DnsFunc | None) -> None:
        self.dnsfunc = dnsfunc or get_txt
        self.outcome = ""

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | str | None:
        try:
            answer = self.dnsfunc(name, timeout=timeout)
        except Exception as exc:
            self.outcome = f"DNS lookup of {_ascii(name)} failed ({_short(exc)})"
            raise
        self.outcome = "" if answer else f"no DKIM key published at {_ascii(name)}"
        return answer


def unsigned_guarded(header_names: list[str], signed: tuple[str, ...]) -> list[str]:
    """Guarded headers with more instances in the message than ``h=`` lists: anyone could have added one."""
    out = []
    for name in GUARDED_HEADERS:
        present, covered = header_names.count(name.lower()), signed.count(name.lower())
        if present > covered:
            out.append(f"{name} not signed" if covered == 0 else
                       f"{present} {name} headers but {covered} signed (an unsigned extra {name})")
    return out


def _verify_one(signer: dkim.DKIM, idx: int, value: bytes, header_names: list[str],
                dnsfunc: DnsFunc | None) -> DkimSignature:
    try:
        tags = parse_tag_value(value)
    except Exception as exc:  # noqa: BLE001 - hostile header: a failed signature, never a crash
        return DkimSignature(domain="", problems=(f"unparseable DKIM-Signature ({_short(exc)})",))
    domain = _ascii(tags.get(b"d", b"")).strip().lower()
    signed = tuple(h for h in (x.strip().lower() for x in _ascii(tags.get(b"h", b"")).split(":")) if h)
    problems: list[str] = []
    dns = _RecordingDns(dnsfunc)
    try:
        passed = bool(signer.verify(idx=idx, dnsfunc=dns))
        if not passed:
            problems.append(dns.outcome or "signature does not verify (signed headers changed, or a bad key)")
    except Exception as exc:  # noqa: BLE001 - dkimpy raises for bad bodies, tags, keys and DNS errors alike
        passed = False
        problems.append(dns.outcome or f"does not verify ({_short(exc)})")
    if b"l" in tags:
        problems.append("l= body length limit: text may have been appended after signing")
    problems += unsigned_guarded(header_names, signed)
    return DkimSignature(domain=domain, selector=_ascii(tags.get(b"s", b"")).strip(), signed_headers=signed,
                         passed=passed, body_limit=b"l" in tags, problems=tuple(problems))


def verify_dkim(raw: bytes, dnsfunc: DnsFunc | None = None) -> DkimResult:
    """Check every DKIM-Signature of ``raw``; ``dnsfunc`` None uses the system resolver (dkimpy's default)."""
    try:
        signer = dkim.DKIM(raw, logger=log)
        header_names = [_ascii(name).strip().lower() for name, _ in signer.headers]
        values = [value for name, value in signer.headers if name.strip().lower() == b"dkim-signature"]
        if not values:
            return DkimResult(problem="no DKIM-Signature")
        sigs = tuple(_verify_one(signer, i, v, header_names, dnsfunc) for i, v in enumerate(values[:MAX_SIGNATURES]))
        return DkimResult(signatures=sigs)
    except Exception as exc:  # noqa: BLE001 - an unreadable message is unverified, not a crash
        return DkimResult(problem=f"message unreadable for DKIM ({_short(exc)})")
