"""Is the sender the account owner, proven by our own mail server (policy rule 3)?

Verified means all of: exactly one defect-free From and no duplicated identity header (threats
rows 3, 5); that From equal to the request's address (rows 1, 6, 7: only the normalised addr-spec
is compared, never a display name); a From domain that does not mix scripts (row 7); and a trusted
Authentication-Results showing an aligned pass (row 2).

Only Authentication-Results our MX stamped count: those with a trusted authserv-id at the top of
the message, before the first header our MX did not add (another authserv-id, or a Received line
not stamped by our hosts). Anything below that was in the message before it reached us, so the
sender wrote it. Every counted header must show a pass on its own, and a dmarc=fail in any of them
vetoes: a forged "pass" can therefore never outvote a genuine "none" or "fail" (row 2a, 2b).

With ``[security] verify_dkim`` the edge has also checked the DKIM signatures itself (``mail.dkim``); then
a verified sender further needs one of them to count (it verifies, no ``l=``, no unsigned guarded header),
to be aligned with the From domain, and to sign From, To and any Cc: the reply token is read from To/Cc,
so a signature that leaves them open lets anyone who saw a signed mail put a token there (rows 3, 9).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from inbox_bot.addresses import domain_of, mixed_script_labels, normalise_address, normalise_domain
from inbox_bot.triage import authres_fast
from inbox_bot.triage.base import TriageContext
from inbox_bot.types import GUARDED_HEADERS, DkimSignature, Evidence, Facts, InboundMail

_COMMENTS = re.compile(r"^\s*(\([^()]*\)\s*)*")
_AUTHSERV_ID = re.compile(r'"([^"]*)"|([^\s;()"]+)')
_RECEIVED_BY = re.compile(r"\bby\s+([a-z0-9][a-z0-9.\-]*)", re.IGNORECASE)


def _show(text: str) -> str:
    """Text safe to show staff: control and format characters (NUL, bidi, zero-width) escaped."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def authserv_id_of(value: str) -> str | None:
    """The authserv-id an Authentication-Results value starts with (None for an M365-style 'spf=...')."""
    m = _AUTHSERV_ID.match(value, _COMMENTS.match(value).end())
    if m is None:
        return None
    token = (m.group(1) if m.group(1) is not None else m.group(2)).strip().lower()
    return token if token and "=" not in token else None


def aligned(a: str, b: str) -> bool:
    """Relaxed alignment without a suffix list: equal, or one a subdomain of the other at a label boundary.

    The shorter name must have at least two labels, so a bare TLD never aligns with anything.
    """
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    return "." in short and long_.endswith("." + short)


def _is_our_host(host: str, ctx: TriageContext) -> bool:
    host = host.lower().rstrip(".")
    return host in {t.lower() for t in ctx.trusted_authserv_ids} or any(
        host == d or host.endswith("." + d) for d in ctx.own_domains
    )


@dataclass
class AuthFinding:
    """What the trusted Authentication-Results say about the From domain."""

    headers: list[dict] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.headers) and not self.problems


def trusted_headers(mail: InboundMail, ctx: TriageContext) -> tuple[list[tuple[str, str]], list[str]]:
    """(authserv-id, value) of the Authentication-Results our MX stamped, and notes on ignored ones."""
    trusted = {t.lower() for t in ctx.trusted_authserv_ids}
    block: list[tuple[str, str]] = []
    notes: list[str] = []
    stop = len(mail.headers)
    for index, (name, value) in enumerate(mail.headers):
        low = name.lower()
        if low == "received":
            by = _RECEIVED_BY.search(value)
            if by and _is_our_host(by.group(1), ctx):
                continue
            stop = index
            break
        if low != "authentication-results":
            continue
        sid = authserv_id_of(value)
        if sid in trusted:
            block.append((sid, value))
            continue
        notes.append(f"Authentication-Results by {sid or '(no authserv-id)'} ignored: not a trusted server")
        stop = index + 1
        break
    for name, value in mail.headers[stop:]:
        if name.lower() != "authentication-results":
            continue
        sid = authserv_id_of(value)
        if sid in trusted:
            notes.append(f"Authentication-Results by {sid} ignored: below a header our MX did not add")
        else:
            notes.append(f"Authentication-Results by {sid or '(no authserv-id)'} ignored: not a trusted server")
    return block, notes


def _alignment(value: str, from_domain: str) -> str:
    return "" if domain_of(value) == from_domain else f" (aligned with {from_domain})"


def _judge(sid: str, value: str, from_domain: str, finding: AuthFinding) -> None:
    """Add one trusted header's passes and problems to ``finding`` (parsed by authres, or its fast path)."""
    try:
        parsed = authres_fast.parse(value)
    except Exception:  # hostile input must read as "no result", never crash triage
        finding.problems.append(f"unparseable Authentication-Results by {sid}: counts as no result")
        finding.headers.append({"authserv_id": sid, "results": None})
        return
    results = []
    passes = []
    for method, result, props in parsed.results:
        results.append({"method": method, "result": result, **props})
        if method == "dmarc":
            header_from = props.get("header.from")
            if header_from and domain_of(header_from) != from_domain:
                finding.problems.append(
                    f"dmarc by {sid} evaluated header.from={_show(header_from)}, not {_show(from_domain)}")
            elif result == "fail":
                finding.problems.append(f"dmarc=fail by {sid}")
            elif result == "pass":
                passes.append(f"dmarc=pass by {sid}")
        elif method == "dkim" and result == "pass":
            d = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
            if d and aligned(normalise_domain(d), from_domain):
                passes.append(f"dkim=pass header.d={d}{_alignment(d, from_domain)} by {sid}")
        elif method == "spf" and result == "pass":
            mailfrom = props.get("smtp.mailfrom", "")
            if mailfrom and aligned(domain_of(mailfrom), from_domain):
                passes.append(f"spf=pass smtp.mailfrom={mailfrom}{_alignment(mailfrom, from_domain)} by {sid}")
    finding.headers.append({"authserv_id": sid, "results": results})
    if passes:
        finding.passes += passes
    else:
        finding.problems.append(f"no aligned dmarc/dkim/spf pass in Authentication-Results by {sid}")


def authenticate(mail: InboundMail, ctx: TriageContext, from_domain: str | None) -> AuthFinding:
    """Judge the trusted Authentication-Results for ``from_domain`` (None: there is no usable From)."""
    block, notes = trusted_headers(mail, ctx)
    finding = AuthFinding(notes=notes)
    if not block:
        finding.problems.append("no trusted Authentication-Results")
        return finding
    for sid, value in block:
        if from_domain is None:
            finding.headers.append({"authserv_id": sid, "results": None})
        else:
            _judge(sid, value, from_domain, finding)
    if from_domain is None:
        finding.problems.append("no single From domain to align with")
    return finding


def header_problems(mail: InboundMail) -> list[str]:
    """Why the From cannot be trusted at all: duplicates, defects, not exactly one address."""
    problems = []
    counts: dict[str, int] = {}
    for name, _ in mail.headers:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    problems += [f"duplicate {name} header" for name in GUARDED_HEADERS if counts.get(name.lower(), 0) > 1]
    problems += [f"From defect: {d}" for d in dict.fromkeys(mail.from_defects) if not d.startswith("duplicate")]
    if len(mail.from_addrs) != 1:
        problems.append(f"From has {len(mail.from_addrs)} addresses, not exactly one")
    return problems


def _dkim_rejection(sig: DkimSignature, from_domain: str | None, needed: list[str]) -> list[str]:
    """Why one of our own DKIM verdicts does not prove the From (empty: it does)."""
    why = list(sig.problems) or ([] if sig.passed else ["does not verify"])
    if from_domain is None or not aligned(normalise_domain(sig.domain), from_domain):
        why.append(f"d={_show(sig.domain) or '(none)'} is not aligned with the From domain {_show(from_domain or '?')}")
    if "From" not in _signed(sig):
        why.append("does not sign From")
    if missing := [h for h in needed if h != "From" and h not in _signed(sig)]:
        why.append(f"does not sign {', '.join(missing)}: a token there cannot be trusted")
    return why


def _signed(sig: DkimSignature) -> set[str]:
    return {h.title() for h in sig.signed_headers}


def own_dkim(mail: InboundMail, from_domain: str | None) -> tuple[list[str], list[str]]:
    """(passes, problems) of our own DKIM check; both empty when it was not run (verify_dkim off)."""
    result = mail.dkim
    if result is None:
        return [], []
    if result.problem or not result.signatures:
        return [], [f"own DKIM check: {_show(result.problem or 'no DKIM-Signature')}"]
    needed = ["From", "To"] + (["Cc"] if mail.header("Cc") is not None else [])
    notes = []
    for sig in result.signatures:
        why = _dkim_rejection(sig, from_domain, needed)
        label = f"d={_show(sig.domain) or '(none)'} s={_show(sig.selector) or '(none)'}"
        if not why:
            return [f"own DKIM check: pass {label} aligned with {from_domain}, signs {', '.join(needed)}"], []
        notes.append(f"own DKIM check: signature {label} does not count: {'; '.join(why)}")
    head = (f"own DKIM check: no signature that verifies, is aligned with {_show(from_domain or '?')} "
            f"and signs {', '.join(needed)}")
    return [], [head, *notes]


class Sender:
    name = "sender"
    description = (
        "Is the From the account address, proven by a trusted, aligned authentication pass? Needs one "
        "defect-free From equal to the request's address and a dmarc/dkim/spf pass aligned with its "
        "domain in the Authentication-Results our own MX stamped; with security.verify_dkim also our own "
        "passing DKIM signature, aligned, signing From, To and Cc."
    )

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        problems = header_problems(mail)
        from_addr = mail.from_addr
        facts_lines: list[str] = []
        from_domain = domain_of(from_addr) if from_addr else None
        if from_domain and (mixed := mixed_script_labels(from_domain)):
            problems.append(f"mixed-script domain: {'.'.join(mixed)} in {_show(from_addr)}")
        request_email = normalise_address(facts.request.email) if facts.request else None
        if request_email is None:
            problems.append("no matched request to compare the From with")
        elif from_addr is not None and from_addr != request_email:
            problems.append(f"From {_show(from_addr)} is not the account address {_show(request_email)}")
        elif from_addr is not None:
            facts_lines.append(f"From {_show(from_addr)} equals the account address")
        auth = authenticate(mail, ctx, from_domain)
        dkim_passes, dkim_problems = own_dkim(mail, from_domain)
        verified = not problems and auth.ok and not dkim_problems
        facts.sender_verified = verified
        facts.sender_reasons = [*problems, *facts_lines, *auth.passes, *dkim_passes, *auth.problems, *dkim_problems,
                                *auth.notes]
        detail = ("verified: " + "; ".join([*facts_lines, *auth.passes, *dkim_passes]) if verified
                  else "not verified: " + "; ".join([*problems, *auth.problems, *dkim_problems][:3]))
        data = {
            "from": from_addr,
            "request_email": request_email,
            "verified": verified,
            "auth_ok": auth.ok,
            "passes": auth.passes,
            "problems": [*problems, *auth.problems, *dkim_problems],
            "own_dkim": None if mail.dkim is None else {"passes": dkim_passes, "problems": dkim_problems},
            "ignored": auth.notes,
            "trusted_results": auth.headers,
        }
        return Evidence(self.name, verified, detail, data)
