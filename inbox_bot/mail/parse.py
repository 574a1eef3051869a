"""Bytes -> InboundMail: decode a message once, defensively, at the edge.

Every address comes from ``email.policy.default`` header objects (never ``parseaddr``,
whose behaviour changed across Python versions, CVE-2023-27043). Bodies are decoded only
from an allow-list of charsets; anything else leaves the text empty and records a problem,
so a UTF-7 "CONFIRM" is unreadable rather than a confirmation. Parser exceptions become
``ParseFailure`` so that the pipeline can quarantine the one message and go on.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message

from inbox_bot.addresses import normalise_address
from inbox_bot.types import InboundMail

MAX_DEPTH = 8
MAX_PARTS = 50
ALLOWED_CHARSETS = re.compile(
    r"^(utf-?8|us-ascii|ascii|iso-8859-\d{1,2}|latin-?1|windows-125\d|cp125\d)$", re.IGNORECASE
)
_MSGID = re.compile(r"<[^<>\s]+>")
EMBEDDED_HEADER_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"})


class ParseFailure(Exception):
    """The message could not be read at all; the reason is the message text."""


def _text(value: object) -> str:
    """A header value as clean Unicode: raw 8-bit bytes (SMTPUTF8 mail, or junk) come out of the parser as
    lone surrogates, which no database or log can encode (a poison message); read them as UTF-8, else U+FFFD.
    """
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _addresses(msg: Message, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(normalised addr-specs, defect names) of every instance of header ``name``."""
    addrs: list[str] = []
    defects: list[str] = []
    values = msg.get_all(name) or []
    if len(values) > 1:
        defects.append(f"duplicate {name} header")
    for value in values:
        try:
            defects += [type(d).__name__ for d in getattr(value, "defects", ())]
            for a in getattr(value, "addresses", ()):
                if isinstance(a, Address) and a.addr_spec and "@" in a.addr_spec:
                    addrs.append(normalise_address(_text(a.addr_spec)))
                else:
                    defects.append("address without a domain")
        except Exception as exc:  # noqa: BLE001 - a hostile header must not stop parsing
            defects.append(f"unparseable {name}: {type(exc).__name__}")
    return tuple(addrs), tuple(defects)


def _msgids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSGID.findall(_text(value))) if value else ()


def _decode_part(part: Message, problems: list[str]) -> str:
    charset = (part.get_content_charset() or "us-ascii").strip()
    if not ALLOWED_CHARSETS.match(charset):
        problems.append(f"charset {charset!r} not allowed for {part.get_content_type()}")
        return ""
    payload = part.get_payload(decode=True) or b""
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        problems.append(f"unknown charset {charset!r}")
        return ""


def _embedded_ids(part: Message) -> list[str]:
    """Message-IDs named in a returned message or its headers (how a bounce says which mail it is about)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [i for sub in payload for i in _msgids(sub.get("Message-ID"))]
    text = payload if isinstance(payload, str) else ""
    if part.get("Content-Transfer-Encoding", "").lower() in ("base64", "quoted-printable"):
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    found = re.search(r"^Message-ID:\s*(<[^<>\s]+>)", text, re.IGNORECASE | re.MULTILINE)
    return [found.group(1)] if found else []


def _walk(msg: Message, problems: list[str], embedded: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(content types, plain texts, html texts), refusing bombs: depth and part-count limits."""
    types: list[str] = []
    plains: list[str] = []
    htmls: list[str] = []

    def visit(part: Message, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ParseFailure(f"MIME nesting deeper than {MAX_DEPTH}")
        if len(types) >= MAX_PARTS:
            raise ParseFailure(f"more than {MAX_PARTS} MIME parts")
        ctype = part.get_content_type()
        types.append(ctype)
        if ctype in EMBEDDED_HEADER_TYPES:
            embedded.extend(_embedded_ids(part))
            return
        if ctype.startswith("message/"):
            return  # delivery reports and attached mails are not the sender's words
        if part.is_multipart():
            for sub in part.get_payload():
                visit(sub, depth + 1)
            return
        if part.get_content_disposition() == "attachment":
            return
        if ctype == "text/plain":
            plains.append(_decode_part(part, problems))
        elif ctype == "text/html":
            htmls.append(_decode_part(part, problems))

    visit(msg, 0)
    return types, plains, htmls


def parse_mail(raw: bytes, source_key: str) -> InboundMail:
    """Decode ``raw``; raise ParseFailure (with a reason) when it cannot be read safely."""
    sha = hashlib.sha256(raw).hexdigest()
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        problems: list[str] = []
        embedded: list[str] = []
        types, plains, htmls = _walk(msg, problems, embedded)
        from_addrs, from_defects = _addresses(msg, "From")
        to_addrs, _ = _addresses(msg, "To")
        cc_addrs, _ = _addresses(msg, "Cc")
        reply_to, _ = _addresses(msg, "Reply-To")
        headers = tuple((_text(k), _text(v)) for k, v in msg.items())
        date = None
        try:
            value = msg.get("Date")
            date = value.datetime if value is not None else None
        except Exception:  # noqa: BLE001 - a bad Date is not a reason to drop the mail
            problems.append("unparseable Date")
        if not isinstance(date, datetime):
            date = None
        return_path = msg.get("Return-Path")
        mid = _msgids(msg.get("Message-ID"))
        return InboundMail(
            source_key=source_key,
            raw_sha256=sha,
            size=len(raw),
            message_id=mid[0] if mid else None,
            in_reply_to=_msgids(msg.get("In-Reply-To")),
            references=_msgids(msg.get("References")),
            from_addrs=from_addrs,
            from_defects=from_defects,
            to_addrs=to_addrs,
            cc_addrs=cc_addrs,
            reply_to=reply_to,
            return_path=_text(return_path).strip() if return_path is not None else None,
            subject=_text(msg.get("Subject") or ""),
            date=date,
            headers=headers,
            content_type=msg.get_content_type(),
            part_types=tuple(types),
            text="\n".join(p for p in plains if p),
            html="\n".join(h for h in htmls if h),
            charsets=tuple(sorted({c for c in (p.get_content_charset() for p in msg.walk()) if c})),
            problems=tuple(problems),
            embedded_ids=tuple(embedded),
        )
    except ParseFailure:
        raise
    except RecursionError as exc:
        raise ParseFailure("MIME structure too deep to parse (recursion limit)") from exc
    except Exception as exc:  # noqa: BLE001 - any parser bug quarantines this one message
        raise ParseFailure(f"parser error: {type(exc).__name__}: {exc}") from exc


def message_id_of(msg: EmailMessage) -> str | None:
    ids = _msgids(msg.get("Message-ID"))
    return ids[0] if ids else None
