"""Authentication-Results in a few microseconds: a fast path for the plain shapes, authres for the rest.

authres parses by recursive descent, compiling and running a regular expression for every token it
tries (about 300 per header, 0.3 ms): some 5% of a message's time in the throughput benchmark. MX
software stamps a few plain shapes, so ``parse_fast`` reads a strict subset of RFC 8601 with one
precompiled expression and declines (None) anything outside it: quotes, backslashes, nested or
repeated comments, ``none``, a property type authres does not know, line breaks, non-ASCII,
``reason=`` anywhere but first, an empty value. ``parse`` then asks authres, which stays the
reference: within the subset both must give the same result, quirks included, and
tests/test_authres_fast.py holds them equal on real and generated headers. This header decides
whether a sender counts as verified, so when in doubt the fast path declines.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import authres


class Result(NamedTuple):
    """One resinfo: method and result lower-cased; properties as ``{"ptype.property": value}``, the last one wins."""

    method: str
    result: str
    props: dict[str, str]


class Parsed(NamedTuple):
    """One header: its authserv-id lower-cased, and its results (none for ``none``)."""

    authserv_id: str
    results: list[Result]


_WSP = r"[ \t]"
_COMMENT = r"\([\t \x21\x23-\x27\x2a-\x5b\x5d-\x7e]*+\)"  # flat: no parenthesis, quote or backslash inside
# White space with at most one comment. authres reads CFWS in calls that each take at most one run of white
# space (comments around it are fine): every gap below gets two calls or more, which take all of this, except
# the one before the authserv-id, which gets one (so no comment there).
_GAP = rf"(?:{_WSP}++(?:{_COMMENT}{_WSP}*+)?+|{_COMMENT}{_WSP}*+)"
_TOKEN = r"[A-Za-z0-9_-]++"
_DOMAIN = rf"{_TOKEN}(?:\.{_TOKEN})*+"
# authres reads a value after "@" as a dot-atom, any other as a run of its "ptext" (which includes "@" and ".").
_PVALUE = rf"(?:@{_DOMAIN}|[A-Za-z0-9._+/=-][A-Za-z0-9._@+/=-]*+)"
# A method starting "none" would be read as the "none" result; "reason" is only recognised straight after the result.
_RESINFO = (rf"(?![Nn][Oo][Nn][Ee]){_TOKEN}(?:/[0-9]++)?+={_TOKEN}"
            rf"(?:{_GAP}[Rr][Ee][Aa][Ss][Oo][Nn]=[A-Za-z0-9._-]++)?"
            rf"(?:{_GAP}[A-Za-z]++\.{_TOKEN}={_PVALUE})*+")
_HEADER = re.compile(rf"{_WSP}*+{_DOMAIN}(?:{_GAP}1)?+{_GAP}?+(?:;{_GAP}?+{_RESINFO}{_GAP}?+)++")
_COMMENTS = re.compile(_COMMENT)
_PTYPES = frozenset({"smtp", "header", "body", "policy"})  # authres drops a property of any other type


def parse_fast(value: str) -> Parsed | None:
    """``value`` parsed exactly as authres would, or None when it is not in the plain subset."""
    if _HEADER.fullmatch(value) is None:
        return None
    if "(" in value:
        value = _COMMENTS.sub(" ", value)
    head, *infos = value.split(";")
    results = []
    for info in infos:
        spec, *items = info.split()
        method, _, result = spec.partition("=")
        props = {}
        for item in items:
            key, _, pvalue = item.partition("=")
            ptype, dot, name = key.partition(".")
            if not dot:
                continue  # reason=..., which the grammar allows only first
            ptype = ptype.lower()
            if ptype not in _PTYPES:
                return None
            props[f"{ptype}.{name.lower()}"] = pvalue
        results.append(Result(method.partition("/")[0].lower(), result.lower(), props))
    return Parsed(head.split()[0].lower(), results)


def from_authres(header: authres.AuthenticationResultsHeader) -> Parsed:
    """authres's parse in the neutral form."""
    return Parsed(header.authserv_id, [
        Result(r.method.lower(), r.result.lower(),
               {f"{p.type}.{p.name}".lower(): str(p.value or "") for p in r.properties})
        for r in header.results
    ])


def parse_reference(value: str) -> Parsed:
    """authres's reading of ``value``; raises what authres raises."""
    return from_authres(authres.AuthenticationResultsHeader.parse_value(value))


def parse(value: str) -> Parsed:
    """The fast path where it applies, else authres (which raises on a header it cannot read)."""
    parsed = parse_fast(value)
    return parse_reference(value) if parsed is None else parsed
