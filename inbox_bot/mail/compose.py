"""Outgoing mail: Jinja2 templates -> a threaded multipart/alternative ``EmailMessage``.

Layout of ``templates/``: each kind has ``KIND.subject.j2``, ``KIND.txt.j2`` and ``KIND.html.j2`` at
the top level (English); a language folder such as ``de/`` may hold a full translated set, used when
the customer's language is known. A kind missing any part in that folder falls back to English as a
whole, so a mail is never half translated. Files starting with ``_`` are layouts and partials.

Context variables the templates use (the caller passes them in ``context``):

- ``request``: dict with ``id``, ``email``, ``account_id`` (may be None), ``note`` (may be empty),
  ``state``, ``created_at`` (datetime); None only for a ``staff_flag`` about an unmatched message
- ``run_after``: datetime when erasure starts (``erasure_scheduled`` only)
- ``restore_hours`` (24), ``backup_days`` (30), ``invoice_years`` (7): customer kinds
- ``support_address``: our mailbox address
- ``flag`` (``staff_flag`` only): dict with ``reason``, ``suggestion``, ``evidence`` (list of str),
  ``reply_text`` (the customer's extracted words), ``message_id`` (str or None), optionally ``id``

The Composer adds ``lang`` (the language actually rendered), ``subject`` (the rendered subject, for
the HTML title; text and HTML only), the global ``reply_marker`` and the
filters ``when`` (date and time, UTC), ``day`` (date) and ``oneline`` (whitespace collapsed, for
subjects). Customer text only ever arrives as such a variable, never as template source (threats
row 17), and a missing variable raises instead of rendering empty (``StrictUndefined``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context

REPLY_MARKER = "## Please type your reply above this line ##"
"""First line of every customer mail; the reply extractor cuts the quoted rest at it."""

DEFAULT_LANGUAGE = "en"
PARTS = ("subject", "txt", "html")
AUTO_SUBMITTED = frozenset({"auto-replied", "auto-generated", "auto-notified"})

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_MSGID = re.compile(r"^<[!-;=?-~]+>$")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_BREAKS = frozenset("\u0085\u2028\u2029")

_DAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
}
_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
           "Oktober", "November", "Dezember"),
}


def known_kinds(templates_dir: Path) -> list[str]:
    """Kinds with all three English parts at the top level of ``templates_dir``."""
    kinds = []
    for path in Path(templates_dir).glob("*.subject.j2"):
        kind = path.name.removesuffix(".subject.j2")
        if not kind.startswith("_") and all((path.parent / f"{kind}.{p}.j2").is_file() for p in PARTS[1:]):
            kinds.append(kind)
    return sorted(kinds)


def check_header_value(name: str, value: str) -> str:
    """Refuse a non-string, line breaks and control characters in a header value.

    Python 3.11 lacks ``policy.verify_generated_headers`` (CVE-2024-6923), so a CR/LF smuggled in
    here could add a ``Bcc:`` to our own mail (threats row 4); we refuse rather than clean it up.
    """
    if not isinstance(value, str):
        raise ValueError(f"{name}: header value must be a string, got {value!r}")
    if any(c in _BREAKS or unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{name}: line break or control character in header value {value!r}")
    return value


def _single_address(name: str, value: str) -> str:
    """Exactly one well-formed address, no parser defects (CVE-2023-27043 style confusion)."""
    check_header_value(name, value)
    header = policy.default.header_factory(name, value)
    addresses = getattr(header, "addresses", ())
    if len(addresses) != 1 or header.defects or "@" not in addresses[0].addr_spec:
        raise ValueError(f"{name}: need exactly one valid address, got {value!r}")
    return value


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes come from the store and are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _lang_of(ctx: Context) -> str:
    lang = ctx.get("lang", DEFAULT_LANGUAGE)
    return lang if lang in _DAYS else DEFAULT_LANGUAGE


@pass_context
def _when(ctx: Context, value: datetime) -> str:
    """'Tuesday, 12 May 2026, 14:00 UTC' / 'Dienstag, 12. Mai 2026, 14:00 Uhr UTC': one zone for all."""
    lang, v = _lang_of(ctx), _as_utc(value)
    clock = f"{v:%H:%M} Uhr" if lang == "de" else f"{v:%H:%M}"
    return f"{_DAYS[lang][v.weekday()]}, {_day(ctx, v)}, {clock} UTC"


@pass_context
def _day(ctx: Context, value: datetime) -> str:
    lang, v = _lang_of(ctx), _as_utc(value)
    month = _MONTHS[lang][v.month - 1]
    return f"{v.day}. {month} {v.year}" if lang == "de" else f"{v.day} {month} {v.year}"


def _oneline(value: Any) -> str:
    """Whitespace (line breaks included) collapsed and other control/format characters (NUL, bidi) shown
    as ``\\uXXXX``, so data can sit in a subject line: a refused subject would make the message that
    caused it fail on every pass (found by tests/test_fuzz.py)."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in " ".join(str(value).split()))


class Composer:
    """Renders one kind of mail into a ready-to-queue message with threading and anti-loop headers."""

    def __init__(self, templates_dir: Path, from_address: str, from_name: str = "Clickport Support",
                 message_id_domain: str | None = None) -> None:
        self.templates_dir = Path(templates_dir)
        self.kinds = known_kinds(self.templates_dir)
        if not self.kinds:
            raise ValueError(f"no mail templates in {self.templates_dir}")
        check_header_value("From", from_name)
        self.sender = Address(display_name=from_name, addr_spec=_single_address("From", from_address))
        self.message_id_domain = message_id_domain or self.sender.domain
        if not _DOMAIN.match(self.message_id_domain):
            raise ValueError(f"message_id_domain: not a domain name: {self.message_id_domain!r}")
        # Escaping belongs to the HTML part only: in the text part or subject it would show '&amp;'.
        self.env = Environment(
            loader=FileSystemLoader(self.templates_dir),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False,
                                         default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["reply_marker"] = REPLY_MARKER
        self.env.filters.update(when=_when, day=_day, oneline=_oneline)

    def language_for(self, kind: str, language: str | None) -> str:
        """The language whose complete set exists for ``kind``: the customer's, else English."""
        lang = (language or "").strip().lower().replace("_", "-").partition("-")[0]
        if lang == DEFAULT_LANGUAGE or not _LANGUAGE.match(lang):
            return DEFAULT_LANGUAGE
        if all((self.templates_dir / lang / f"{kind}.{p}.j2").is_file() for p in PARTS):
            return lang
        return DEFAULT_LANGUAGE

    def _templates(self, kind: str, lang: str) -> dict[str, Template]:
        prefix = "" if lang == DEFAULT_LANGUAGE else f"{lang}/"
        try:
            return {p: self.env.get_template(f"{prefix}{kind}.{p}.j2") for p in PARTS}
        except TemplateNotFound as exc:
            raise ValueError(f"mail kind {kind!r}: template {exc.name} missing") from exc

    def render(self, kind: str, context: dict[str, Any], language: str | None = None) -> dict[str, str]:
        """Subject, text and HTML of one mail, without headers (previews and tests)."""
        if kind not in self.kinds:
            raise ValueError(f"unknown mail kind {kind!r}; known kinds: {', '.join(self.kinds)}")
        lang = self.language_for(kind, language)
        templates = self._templates(kind, lang)
        variables = {**context, "lang": lang}
        subject = templates["subject"].render(variables).strip()
        variables["subject"] = subject
        return {"subject": subject, "txt": templates["txt"].render(variables),
                "html": templates["html"].render(variables), "lang": lang}

    def compose(self, kind: str, to: str, context: dict[str, Any], *, reply_to: str | None = None,
                thread: Sequence[str] = (), language: str | None = None,
                auto_submitted: str = "auto-replied", now: datetime | None = None) -> EmailMessage:
        """One mail of ``kind`` to ``to``; ``thread`` is the conversation's Message-IDs, oldest first.

        Raises ValueError for an unknown kind, a bad address, or any header value with a line break,
        rather than sending a mail that could carry a smuggled header.
        """
        if auto_submitted not in AUTO_SUBMITTED:
            raise ValueError(f"Auto-Submitted must be one of {sorted(AUTO_SUBMITTED)}, got {auto_submitted!r}")
        parts = self.render(kind, context, language)
        refs = [check_header_value("References", ref) for ref in dict.fromkeys(thread)]
        # A malformed id (non-ASCII, no brackets) from a customer's mailer only costs threading, so it
        # is left out rather than failing the state change that sends this mail.
        refs = [ref for ref in refs if _MSGID.match(ref)]

        msg = EmailMessage(policy=policy.default)
        msg["From"] = self.sender
        msg["To"] = _single_address("To", to)
        msg["Subject"] = check_header_value("Subject", parts["subject"])
        msg["Date"] = format_datetime(_as_utc(now or datetime.now(UTC)))
        msg["Message-ID"] = make_msgid(domain=self.message_id_domain)
        if refs:
            msg["In-Reply-To"] = refs[-1]
            msg["References"] = " ".join(refs)
        if reply_to is not None:
            msg["Reply-To"] = _single_address("Reply-To", reply_to)
        msg["Auto-Submitted"] = auto_submitted
        msg["X-Auto-Response-Suppress"] = "All"
        msg["X-Inbox-Bot-Kind"] = kind
        msg.set_content(parts["txt"])
        msg.add_alternative(parts["html"], subtype="html")
        msg["Content-Language"] = parts["lang"]  # after the body: set_content drops Content-* headers
        return msg
