"""The ``reply`` check: the customer's new words, with quotes, signatures and disclaimers cut.

The intent classifier must judge only what the customer wrote now. Our own quoted mail says
"confirm" and "cancel", a legal disclaimer says "please delete it", a signature may say "Yes, we're
hiring!": each is cut here, and every cut is listed in words so that staff can see what was dropped.

The patterns (per language, each with examples) are data in ``rules/reply.toml``; this module is the
engine. Where a cut could swallow the customer's own words it errs towards keeping them: a sign-off
is only cut together with a name-like line, a signature block only when every line of it looks like
a name, a title or contact details. Pure: no file, network or clock access.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import lxml.etree
import lxml.html
from inscriptis import Inscriptis
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import Evidence, Facts, InboundMail

RULES_FILE = "reply.toml"
_LINE_SECTIONS = (
    "marker",
    "separator",
    "quote_header",
    "device",
    "signature_separator",
    "weak_separator",
    "sign_off",
    "disclaimer",
)
_FIELD_KINDS = ("from", "date", "to", "cc", "subject")

# Private-use sentinels that survive HTML rendering: a hidden element (numbered), a removed HTML quote.
_HIDDEN_OPEN, _HIDDEN_CLOSE, _HTML_QUOTE = "\ue000", "\ue001", "\ue002"
_HIDDEN_RE = re.compile(f"{_HIDDEN_OPEN}(\\d+){_HIDDEN_CLOSE}")

_SENTENCE_END = (".", "!", "?")
_OPEN_END = (".", "!", "?", "<", "(", "[")
_TIME = re.compile(r"\d{1,2}[:.h]\d{2}")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)")
_NUMERIC_DATE = re.compile(r"(?<!\d)\d{1,4}[./-]\d{1,2}[./-]\d{1,4}(?!\d)")
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_CONTACT = re.compile(
    r"[\w.+-]+@[\w-]+\.\w|https?://|www\.|\+?\(?\d[\d ()./-]{6,}\d|^(?:t|tel|phone|mobile|m|f|fax|skype)\b\.?\s*:?",
    re.IGNORECASE,
)
_DECORATION = re.compile(r"^[\s\-_=*~.•·—–#+]+$")
_FRAMED = re.compile(r"^-{2,}.*-{2,}$")
_BULLET = re.compile(r"^\s*(?:[-–—*•+]|\d+[.)])\s")
_POSTSCRIPT = re.compile(r"^\s*p\.?\s?p?\.?\s?s\b", re.IGNORECASE)
_DASH_NAME = re.compile(r"^[-–—~/]\s?(?P<name>\S.*)$")
_LINK_TAIL = re.compile(r"\s*(?:<[^<>]*>|\([^()]*\)|\[[^\[\]]*\])\s*$")
_LONE_QUOTED_END = re.compile(r">\s*(\S{0,12}\s*:)")
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")
_NAME_PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "del", "della", "di", "da", "du", "dos", "das", "la", "le", "el", "y"}
    | {"bin", "al", "ibn", "ter", "te", "zu", "and", "&", "of"}
)

_HIDING_STYLE = re.compile(
    r"display:none|visibility:hidden|mso-hide:all|font-size:0(?:[a-z%]*)?(?:;|$|!)|opacity:0(?:\.0+)?(?:;|$|!)"
    r"|(?:^|;)color:(?:#fff(?:fff)?|white|rgb\(255,255,255\))(?:;|$|!)|max-height:0(?:[a-z]*)?(?:;|$)"
)
_OUTLOOK_RULE = re.compile(r"border-top:solid#(?:e1e1e1|b5c4df)")
_CUT_TO_END_IDS = frozenset({"divrplyfwdmsg", "appendonsend", "stopspelling", "olk_src_body_section", "zwchr"})
_CUT_TO_END_CLASSES = ("outlookmessageheader", "moz-forward-container")
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "gmail_attr")
_DROP_TAGS = ("head", "script", "style", "title", "template", "noscript", "object", "iframe")
_INSCRIPTIS_CONFIG = ParserConfig(css=CSS_PROFILES["strict"])


class ReplyRulesError(ValueError):
    """``rules/reply.toml`` is malformed; the message names the rule and the key."""


@dataclass(frozen=True)
class Rule:
    """One pattern of ``rules/reply.toml``, matched case-insensitively against a folded line."""

    id: str
    section: str
    language: str
    pattern: re.Pattern[str]
    inline: bool = False


@dataclass(frozen=True)
class ReplyRules:
    """The compiled ``rules/reply.toml``. The empty default still removes '>' quotes and HTML quotes."""

    markers: tuple[Rule, ...] = ()
    separators: tuple[Rule, ...] = ()
    quote_headers: tuple[Rule, ...] = ()
    devices: tuple[Rule, ...] = ()
    signature_separators: tuple[Rule, ...] = ()
    weak_separators: tuple[Rule, ...] = ()
    sign_offs: tuple[Rule, ...] = ()
    disclaimers: tuple[Rule, ...] = ()
    field_labels: dict[str, tuple[str, str]] = field(default_factory=dict)
    field_start: re.Pattern[str] | None = None
    field_anywhere: re.Pattern[str] | None = None
    header_max_lines: int = 3
    signature_max_lines: int = 8
    signature_line_max_chars: int = 72
    never_names: frozenset[str] = frozenset()


@dataclass
class ReplyResult:
    """The visible reply, what was cut and why (one line each), and whether it may be acted on."""

    text: str
    cut: list[str] = field(default_factory=list)
    readable: bool = True
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- compiling the rules


def _compile_section(data: dict, section: str, seen: set[str]) -> tuple[Rule, ...]:
    rules = []
    for entry in data.get(section, []):
        rule_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(rule_id, str) or not rule_id:
            raise ReplyRulesError(f"reply.toml: every [[{section}]] needs an 'id'")
        if rule_id in seen:
            raise ReplyRulesError(f"reply.toml: duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        pattern = entry.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ReplyRulesError(f"reply.toml: rule {rule_id!r}: 'pattern' must be a non-empty string")
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ReplyRulesError(f"reply.toml: rule {rule_id!r}: bad pattern: {exc}") from exc
        rules.append(Rule(rule_id, section, str(entry.get("language", "")), compiled, bool(entry.get("inline", False))))
    return tuple(rules)


def _compile_fields(data: dict, seen: set[str]) -> dict[str, tuple[str, str]]:
    """Header-block field labels ("Von", "Envoyé") mapped to (field kind, rule id)."""
    labels: dict[str, tuple[str, str]] = {}
    for entry in data.get("header_block", []):
        rule_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(rule_id, str) or not rule_id:
            raise ReplyRulesError("reply.toml: every [[header_block]] needs an 'id'")
        if rule_id in seen:
            raise ReplyRulesError(f"reply.toml: duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        for kind in _FIELD_KINDS:
            names = entry.get(kind, [])
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                raise ReplyRulesError(f"reply.toml: rule {rule_id!r}: {kind!r} must be a list of labels")
            for name in names:
                labels.setdefault(_fold(name).casefold(), (kind, rule_id))
    return labels


def _positive_int(limits: dict, key: str, default: int) -> int:
    value = limits.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ReplyRulesError(f"reply.toml: [limits] {key} must be a positive integer")
    return value


def compile_rules(files: dict[str, dict]) -> ReplyRules:
    """Compile ``rules/reply.toml`` (no such file: the empty rule set, which still removes '>' quotes)."""
    data = files.get(RULES_FILE)
    if not data:
        return ReplyRules()
    seen: set[str] = set()
    sections = {name: _compile_section(data, name, seen) for name in _LINE_SECTIONS}
    labels = _compile_fields(data, seen)
    start = anywhere = None
    if labels:
        alternation = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
        start = re.compile(rf"^[\s>]*(?P<label>{alternation})\s?:", re.IGNORECASE)
        anywhere = re.compile(rf"(?:^|(?<=[\s\d\]>\"]))(?P<label>{alternation})\s?:", re.IGNORECASE)
    limits = data.get("limits", {})
    if not isinstance(limits, dict):
        raise ReplyRulesError("reply.toml: [limits] must be a table")
    never = limits.get("never_names", [])
    if not isinstance(never, list) or not all(isinstance(n, str) for n in never):
        raise ReplyRulesError("reply.toml: [limits] never_names must be a list of words")
    return ReplyRules(
        markers=sections["marker"],
        separators=sections["separator"],
        quote_headers=sections["quote_header"],
        devices=sections["device"],
        signature_separators=sections["signature_separator"],
        weak_separators=sections["weak_separator"],
        sign_offs=sections["sign_off"],
        disclaimers=sections["disclaimer"],
        field_labels=labels,
        field_start=start,
        field_anywhere=anywhere,
        header_max_lines=_positive_int(limits, "header_max_lines", 3),
        signature_max_lines=_positive_int(limits, "signature_max_lines", 8),
        signature_line_max_chars=_positive_int(limits, "signature_line_max_chars", 72),
        never_names=frozenset(_fold(n).casefold() for n in never),
    )


# ---------------------------------------------------------------- small text helpers


def _fold(line: str) -> str:
    """The form every pattern sees: NFKC, no format characters or sentinels, single spaces, stripped."""
    text = _HIDDEN_RE.sub("", unicodedata.normalize("NFKC", line))
    text = "".join(
        ch for ch in text if unicodedata.category(ch) != "Cf" and ch not in (_HIDDEN_OPEN, _HIDDEN_CLOSE, _HTML_QUOTE)
    )
    return " ".join(text.split())


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _first_match(rules: Iterable[Rule], text: str) -> Rule | None:
    return next((rule for rule in rules if rule.pattern.search(text)), None)


def _whole_match(rule: Rule, text: str) -> bool:
    found = rule.pattern.search(text)
    return bool(found and found.start() == 0 and found.end() == len(text.rstrip()))


def _name_tokens(text: str) -> set[str]:
    """Lower-case, accent-free words of two letters or more: how a sender's name is compared."""
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return {t for t in re.split(r"[\W\d_]+", plain.casefold()) if len(t) >= 2}


def _lines(count: int) -> str:
    return f"{count} line" if count == 1 else f"{count} lines"


# ---------------------------------------------------------------- the plain-text engine


class _Text:
    """One plain-text body being cut: its lines, their folded forms, and what is kept.

    Three steps: (1) find '>' quotes with their attribution lines, and the first line from which
    everything is an earlier message (``find_quotes``); (2) split what is left into segments at
    the removed quotes; (3) cut disclaimers, signatures and sign-offs from each segment.
    """

    def __init__(self, text: str, rules: ReplyRules, sender_tokens: set[str]) -> None:
        self.rules = rules
        self.sender_tokens = sender_tokens
        self.lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.folded = [_fold(line) for line in self.lines]
        self.header_form = [f.replace("*", "").strip() for f in self.folded]
        self.quoted = [f.startswith(">") or _HTML_QUOTE in raw for f, raw in zip(self.folded, self.lines, strict=True)]
        self.attached: set[int] = set()
        self.replace: dict[int, str] = {}
        self.cut: list[str] = []
        self.warnings: list[str] = []
        self.header_notes: dict[int, str] = {}
        self._blank = [not f and not _HIDDEN_RE.search(line) for f, line in zip(self.folded, self.lines, strict=True)]
        self._next: list[int | None] = [None] * (len(self.lines) + 1)
        for i in range(len(self.lines) - 1, -1, -1):
            self._next[i] = self._next[i + 1] if self._blank[i] else i
        self._mark_wrapped_quote_lines()

    def blank(self, i: int) -> bool:
        return self._blank[i]

    def next_nonblank(self, i: int) -> int | None:
        """The first non-blank line at or after ``i`` (precomputed: blank-line floods stay linear)."""
        return self._next[min(i, len(self.lines))]

    def _mark_wrapped_quote_lines(self) -> None:
        """A link or fragment squeezed between two quoted lines is a wrapped quote line, not new text.

        Only lines that cannot be an interleaved answer qualify (a link, a bracket, a line starting
        with punctuation): a lone "no" between two quoted lines stays the customer's.
        """
        for i in range(1, len(self.lines) - 1):
            text = self.folded[i]
            if self.quoted[i] or not text or not (self.quoted[i - 1] and self.quoted[i + 1]):
                continue
            if "http" in text or "mailto:" in text or text.endswith(">") or not text[0].isalnum():
                self.quoted[i] = True

    # -- header blocks ("From: … Sent: … To: … Subject: …")

    def field_kind(self, i: int) -> tuple[str, str] | None:
        start = self.rules.field_start
        if start is None or self.quoted[i]:
            return None
        found = start.match(self.header_form[i])
        return self.rules.field_labels.get(found.group("label").casefold()) if found else None

    def header_block_at(self, i: int) -> str | None:
        """The rule id when a header block starts at line ``i``: two fields incl. sender or date, or three."""
        first = self.field_kind(i)
        if first is None:
            return self._one_line_header_block(i)
        kinds = {first[0]}
        spare, blanks = 2, 0
        for j in range(i + 1, min(len(self.lines), i + 11)):
            if self.blank(j):
                blanks += 1
                if blanks > 1:
                    break
            elif (found := self.field_kind(j)) is not None:
                kinds.add(found[0])
                blanks = 0
            elif blanks or spare == 0 or self.quoted[j]:
                break
            else:
                spare -= 1
        if len(kinds) >= 3 or (len(kinds) == 2 and kinds & {"from", "date"}):
            return first[1]
        return None

    def _one_line_header_block(self, i: int) -> str | None:
        """A header block squashed onto one line ("… Von: x Datum: y An: z Betreff: …")."""
        anywhere = self.rules.field_anywhere
        if anywhere is None or self.quoted[i]:
            return None
        labels = (m.group("label").casefold() for m in anywhere.finditer(self.header_form[i]))
        hits = [self.rules.field_labels[label] for label in labels if label in self.rules.field_labels]
        if "from" in {kind for kind, _ in hits} and len({kind for kind, _ in hits}) >= 3:
            return hits[0][1]
        return None

    # -- quote headers ("On Tue, 1 Dec 2026 at 10:02, X <x@y.z> wrote:")

    @staticmethod
    def _header_evidence(text: str, above_quote: bool) -> bool:
        """Whether a line that matched a quote-header pattern carries the date or address a client adds.

        A dash frame ("---- X wrote ----") suffices; with a closing colon a digit or an address does;
        without either the line needs an e-mail address, unless it sits right above '>' lines. A
        line that ends a sentence is the customer's ("Am 3. März schrieb ich Ihnen, dass …").
        """
        if text.endswith(_OPEN_END):
            return False
        if above_quote:
            return True
        if _FRAMED.match(text):
            return True
        if text.endswith((":", "：")):
            return bool(re.search(r"\d|@", text))
        return bool(_EMAIL.search(text))

    def _may_wrap(self, i: int, above_quote: bool) -> bool:
        """Whether line ``i`` can begin a header wrapped over several lines: it carries the date.

        So a customer's line just above a one-line header ("Please hurry" / "X schrieb am …:")
        is never joined to it.
        """
        text = self.header_form[i]
        if text.endswith(_SENTENCE_END):
            return False
        if _TIME.search(text) or _YEAR.search(text) or _NUMERIC_DATE.search(text):
            return True
        return above_quote and any(ch.isdigit() for ch in text)

    def _continuation(self, j: int) -> str | None:
        """Line ``j`` as the next line of a wrapped header (a lone quoted ">:" counts), or None."""
        if j >= len(self.lines) or self.blank(j):
            return None
        if self.quoted[j]:
            lone = _LONE_QUOTED_END.fullmatch(self.header_form[j])
            return lone.group(1) if lone else None
        return self.header_form[j]

    def quote_header_at(self, i: int, above_quote: bool = False) -> tuple[str, int, str] | None:
        """(rule, lines it spans, text kept before it on its line) for an attribution starting at ``i``."""
        if not self.rules.quote_headers or self.quoted[i] or not self.header_form[i]:
            return None
        parts: list[str] = []
        for span in range(1, self.rules.header_max_lines + 1):
            line = self.header_form[i] if span == 1 else self._continuation(i + span - 1)
            if line is None or (span == 2 and not self._may_wrap(i, above_quote)):
                break
            parts.append(line)
            candidate = " ".join(parts)
            if len(candidate) > 400:
                break
            for rule in self.rules.quote_headers:
                found = rule.pattern.search(candidate)
                if not found or found.end() != len(candidate.rstrip()):
                    continue
                if span > 1 and _whole_match(rule, " ".join(parts[1:])):
                    continue  # the lines below already form the header: the first line is the customer's
                prefix = candidate[: found.start()].rstrip(" -")
                if found.start() > 0 and not (rule.inline and span == 1 and prefix):
                    continue
                if self._header_evidence(candidate[found.start() :], above_quote):
                    return f"rule {rule.id}", span, prefix
        if above_quote and self._date_and_address(i):
            return "a date and an address right above a quote", 1, ""
        return None

    def _date_and_address(self, i: int) -> bool:
        """An attribution no pattern knows ("2011/4/7 Nathan <n@example.com>") directly above '>' lines."""
        text = self.header_form[i]
        if text.endswith(_SENTENCE_END) or len(text) > 200 or not _EMAIL.search(text):
            return False
        return bool(_NUMERIC_DATE.search(text) or _YEAR.search(text) or _TIME.search(text))

    # -- step 1: quotes and the first line of an unprefixed earlier message

    def find_quotes(self) -> int:
        """Mark quoted runs with their attributions; return where the unprefixed earlier message starts."""
        i = 0
        while i < len(self.lines):
            if self.quoted[i] or self.blank(i):
                i += 1
                continue
            text = self.header_form[i]
            for rules, label in (
                (self.rules.markers, "reply-above marker"),
                (self.rules.separators, "quoted-message line"),
            ):
                if rule := _first_match(rules, text):
                    return self._hard_cut(i, f"{label} {_snippet(self.folded[i])!r} (rule {rule.id})")
            if rule_id := self.header_block_at(i):
                return self._hard_cut(i, f"header block {_snippet(self.folded[i])!r} (rule {rule_id})")
            next_line = self.next_nonblank(i + 1)
            above_quote = next_line is not None and self.quoted[next_line]
            found = self.quote_header_at(i) or (self.quote_header_at(i, above_quote=True) if above_quote else None)
            if found is None:
                i += 1
                continue
            why, span, prefix = found
            note = f"quote header {_snippet(' '.join(self.folded[i : i + span]))!r} ({why})"
            if prefix:
                self.replace[i] = prefix
            after = self.next_nonblank(i + span)
            if after is not None and self.quoted[after]:
                header_lines = range(i + 1 if prefix else i, i + span)
                self.attached.update(header_lines)
                for j in header_lines:
                    self.quoted[j] = True
                self.header_notes[after] = note
                i = after
                continue
            if prefix:
                below = sum(1 for j in range(i + 1, len(self.lines)) if not self.blank(j))
                self.cut.append(f"{note} and {_lines(below)} below")
                return i + 1
            return self._hard_cut(i, note)
        return len(self.lines)

    def _hard_cut(self, i: int, note: str) -> int:
        """Cut from line ``i`` down, with the rules, blank lines and attribution right above it."""
        start = i
        while start > 0 and not self.quoted[start - 1]:
            j = start - 1
            decoration = self.blank(j) or _DECORATION.match(self.folded[j])
            if not (decoration or (not self.blank(start) and self._bare_attribution(j))):
                break
            start = j
        below = sum(1 for j in range(i + 1, len(self.lines)) if not self.blank(j))
        above = [self.folded[j] for j in range(start, i) if not self.blank(j)]
        with_above = f", with {_snippet(' / '.join(above), 40)!r} above it" if above else ""
        self.cut.append(f"{note}{with_above} and {_lines(below)} below")
        return start

    def _bare_attribution(self, j: int) -> bool:
        """A colon-less attribution ("Am 20.06.24 um 16:20 schrieb X") directly above a header block."""
        text = self.header_form[j]
        return not text.endswith(_SENTENCE_END) and any(_whole_match(r, text) for r in self.rules.quote_headers)

    # -- step 2: what is left, in segments between removed quotes

    def segments(self, end: int) -> list[list[int]]:
        """Kept line indices before ``end``, split where a quoted run (and the blank lines after it) went."""
        segments: list[list[int]] = [[]]
        i = 0
        while i < end:
            if not self.quoted[i]:
                segments[-1].append(i)
                i += 1
                continue
            start = i
            while i < end and (self.quoted[i] or self._blank_inside_quote(i, end)):
                i += 1
            while i < end and self.blank(i):
                i += 1
            self._note_quote(start, i)
            segments.append([])
        return [s for s in segments if s]

    def _blank_inside_quote(self, i: int, end: int) -> bool:
        nxt = self.next_nonblank(i)
        return self.blank(i) and nxt is not None and nxt < end and self.quoted[nxt]

    def _note_quote(self, start: int, stop: int) -> None:
        notes = [self.header_notes.pop(j) for j in range(start, stop) if j in self.header_notes]
        count = sum(
            1
            for j in range(start, stop)
            if self.quoted[j] and j not in self.attached and _HTML_QUOTE not in self.lines[j]
        )
        body = f"{count} quoted '>' {'line' if count == 1 else 'lines'}" if count else ""
        if notes:
            self.cut.append(f"{notes[0]} and {body} below it" if body else f"{notes[0]} above an HTML quote")
        elif body:
            self.cut.append(body)

    # -- step 3: disclaimers, signatures and sign-offs at the end of each segment

    def signature_like(self, i: int) -> bool:
        """A short line of a name, a title, a company or contact details; never a sentence.

        "Head of Digital | Lloyd & Pryce", "+44 20 7946 0321" and "Kühn Steuerberatung" qualify;
        "On second thought keep it" (mostly lower-case words), questions and "P.S. …" do not.
        """
        text = self.folded[i]
        if (
            len(text) > self.rules.signature_line_max_chars
            or text.endswith("?")
            or _POSTSCRIPT.match(text)
            or _HIDDEN_RE.search(self.lines[i])
        ):
            return False
        if _CONTACT.search(text):
            return True
        words = [w for w in _WORD.findall(text) if len(w) > 2 and w.casefold() not in _NAME_PARTICLES]
        return not words or sum(1 for w in words if w[0].isupper()) * 2 > len(words)

    def name_like(self, text: str) -> bool:
        """One to four capitalised words ("Anna", "Jan van Dijk", "U. Maier"), never one like "Yes"."""
        text = _LINK_TAIL.sub("", text).strip(" ,.;")
        words = text.split()
        if not 1 <= len(words) <= 4 or text.endswith((":", "?", "!")):
            return False
        if words[0].casefold() in _NAME_PARTICLES:
            return False
        for word in words:
            bare = word.strip(",.()'\"")
            if not bare or bare.casefold() in self.rules.never_names:
                return False
            if bare.casefold() in _NAME_PARTICLES:
                continue
            if not bare[0].isalpha() or bare[0].islower() or any(ch.isdigit() for ch in bare):
                return False
        return True

    def tail_is_signature(self, lines: Sequence[int]) -> bool:
        body = [i for i in lines if not self.blank(i)]
        return len(body) <= self.rules.signature_max_lines and all(self.signature_like(i) for i in body)

    def trim_segment(self, seg: list[int], text_before: bool) -> list[int]:
        seg = self._cut_disclaimers(seg)
        seg = self._cut_at_separator(seg, text_before)
        while (trimmed := self._cut_tail(seg, text_before)) is not None:
            seg = trimmed
        return seg

    def _has_text(self, seg: Sequence[int], pos: int, text_before: bool) -> bool:
        return text_before or any(not self.blank(i) for i in seg[:pos])

    def _cut_disclaimers(self, seg: list[int]) -> list[int]:
        drop: set[int] = set()
        paragraph: list[int] = []
        for i in [*seg, None]:
            if i is not None and not self.blank(i):
                paragraph.append(i)
            elif paragraph:
                drop |= self._disclaimer_in(paragraph)
                paragraph = []
        return [i for i in seg if i not in drop]

    def _disclaimer_in(self, paragraph: list[int]) -> set[int]:
        """The lines of ``paragraph`` from where a disclaimer starts; a sentence before it on its line stays."""
        starts, offset = [], 0
        for i in paragraph:
            starts.append(offset)
            offset += len(self.folded[i]) + 1
        joined = " ".join(self.folded[i] for i in paragraph)
        for rule in self.rules.disclaimers:
            found = rule.pattern.search(joined)
            if not found:
                continue
            k = max(n for n, s in enumerate(starts) if s <= found.start())
            first = paragraph[k]
            before = self.folded[first][: found.start() - starts[k]].rstrip()
            touched = len(paragraph) - k
            if before.endswith(_SENTENCE_END):
                self.replace[first] = before
                k += 1
            self.cut.append(f"disclaimer {_snippet(joined[found.start() :])!r} (rule {rule.id}), {_lines(touched)}")
            return set(paragraph[k:])
        return set()

    def _cut_at_separator(self, seg: list[int], text_before: bool) -> list[int]:
        """Cut at a '-- ' line, or at a "Sent from my phone" line with text above it, and all below.

        A device line above all text ("Sent from iPhone" put on top by a client) goes alone.
        """
        for pos, i in enumerate(seg):
            if self.blank(i):
                continue
            text = self.folded[i]
            rule = _first_match(self.rules.signature_separators, text)
            label = "signature separator"
            if rule is None:
                rule, label = _first_match(self.rules.devices, _LINK_TAIL.sub("", text)), "device line"
                if rule is not None and not self._has_text(seg, pos, text_before):
                    self.cut.append(f"device line {_snippet(text)!r} (rule {rule.id}) above the text")
                    return self._cut_at_separator(seg[:pos] + seg[pos + 1 :], text_before)
            if rule is not None:
                below = [j for j in seg[pos + 1 :] if not self.blank(j)]
                extra = f" and {_lines(len(below))} below" if below else ""
                self.cut.append(f"{label} {_snippet(text)!r} (rule {rule.id}){extra}")
                if label == "device line" and not self.tail_is_signature(below):
                    first = _snippet(self.folded[below[0]], 40)
                    self.warnings.append(f"text below {_snippet(text, 30)!r} was cut as quoted mail: {first!r}")
                return seg[:pos]
        return seg

    def _cut_tail(self, seg: list[int], text_before: bool) -> list[int] | None:
        """``seg`` without one signature block at its end, or None when it ends in none."""
        body = [pos for pos, i in enumerate(seg) if not self.blank(i)]
        for pos in body[-(self.rules.signature_max_lines + 1) :]:
            if self._has_text(seg, pos, text_before) and (note := self._signature_at(seg[pos], seg[pos + 1 :])):
                self.cut.append(note)
                return seg[:pos]
        return None

    def _signature_at(self, i: int, tail: list[int]) -> str | None:
        """Why line ``i`` and the lines ``tail`` after it are a signature block, or None."""
        text = self.folded[i]
        below = [j for j in tail if not self.blank(j)]
        extra = f" and {_lines(len(below))} below" if below else ""
        if below and (rule := _first_match(self.rules.weak_separators, text)) and self.tail_is_signature(tail):
            return f"signature separator {_snippet(text)!r} (rule {rule.id}){extra}"
        if (
            below
            and (rule := _first_match(self.rules.sign_offs, text))
            and self.name_like(self.folded[below[0]])
            and self.tail_is_signature(tail)
        ):
            return f"sign-off {_snippet(text)!r} (rule {rule.id}){extra}"
        dash = _DASH_NAME.match(text)
        if dash and not below and self.name_like(dash.group("name").title()) and not self._after_list(i):
            return f"signature {_snippet(text)!r} (a dash and a name)"
        if not self.name_like(text) or not self.tail_is_signature(tail):
            return None
        tokens = _name_tokens(text)
        from_sender = self.sender_tokens and len(below) <= 4 and tokens & self.sender_tokens
        if from_sender and (self._after_blank(i) or tokens <= self.sender_tokens):
            return f"name {_snippet(text)!r} (the sender's name){extra}"
        if self._after_blank(i) and sum(1 for j in below if _CONTACT.search(self.folded[j])) >= 2:
            return f"signature block {_snippet(text)!r} (a name and contact details){extra}"
        return None

    def _after_blank(self, i: int) -> bool:
        return i == 0 or self.blank(i - 1) or (i - 1) in self.replace

    def _after_list(self, i: int) -> bool:
        """Whether the line above ``i`` is a list item or introduces one ("Keep these:")."""
        above = next((j for j in range(i - 1, -1, -1) if not self.blank(j)), None)
        return above is not None and (bool(_BULLET.match(self.folded[above])) or self.folded[above].endswith(":"))

    def extract(self) -> str:
        end = self.find_quotes()
        kept: list[int] = []
        for seg in self.segments(end):
            kept += self.trim_segment(seg, text_before=any(not self.blank(i) for i in kept))
        text = "\n".join(self.replace.get(i, self.lines[i]).rstrip() for i in kept)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# ---------------------------------------------------------------- the HTML part


def _classes(el: lxml.html.HtmlElement) -> str:
    return (el.get("class") or "").casefold()


def _style(el: lxml.html.HtmlElement) -> str:
    return re.sub(r"\s+", "", (el.get("style") or "").casefold())


def _hidden_how(el: lxml.html.HtmlElement) -> str | None:
    """How an element hides its text from the reader (threats row 14), or None when it does not."""
    if found := _HIDING_STYLE.search(_style(el)):
        return found.group(0).strip(";!")
    if el.get("hidden") is not None:
        return "hidden attribute"
    if el.tag == "font" and (el.get("color") or "").casefold() in ("#fff", "#ffffff", "white"):
        return "white text"
    return None


def _elements(root: lxml.html.HtmlElement) -> list[lxml.html.HtmlElement]:
    return [el for el in root.iter() if isinstance(el.tag, str)]


def _outermost(elements: list[lxml.html.HtmlElement]) -> list[lxml.html.HtmlElement]:
    chosen = set(elements)
    return [el for el in elements if not any(a in chosen for a in el.iterancestors())]


def _replace_with_text(el: lxml.html.HtmlElement, text: str, block: bool) -> None:
    new = lxml.html.Element("div" if block else "span")
    new.text = text
    new.tail = el.tail
    el.getparent().replace(el, new)


def _cut_to_end(el: lxml.html.HtmlElement) -> None:
    """Remove ``el`` and everything after it in document order (an Outlook reply header and below)."""
    node = el
    while node.getparent() is not None:
        for sibling in list(node.itersiblings()):
            node.getparent().remove(sibling)
        node.tail = None
        node = node.getparent()
    el.drop_tree()


def _is_quote(el: lxml.html.HtmlElement) -> bool:
    return el.tag == "blockquote" or (el.tag == "div" and any(c in _classes(el) for c in _QUOTE_CLASSES))


def _is_reply_header(el: lxml.html.HtmlElement) -> bool:
    if (el.get("id") or "").casefold() in _CUT_TO_END_IDS or any(c in _classes(el) for c in _CUT_TO_END_CLASSES):
        return True
    return el.tag == "div" and bool(_OUTLOOK_RULE.search(_style(el)))


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _html_to_text(html: str) -> tuple[str, list[str], dict[int, tuple[str, str]]]:
    """(visible text, cut notes, hidden texts by sentinel number) of an HTML body, quote markup removed.

    A removed quote leaves a '>' line so that the text engine still knows where it was (and keeps
    what the customer wrote below it); a hidden element leaves a numbered sentinel so that the
    engine can tell whether it sat inside the customer's new text.
    """
    html = _NOT_XML.sub("\ufffd", html)  # lxml refuses NUL/control characters later, mid-tree (a poison message)
    try:
        root = lxml.html.document_fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", html))
    except (lxml.etree.ParserError, ValueError):
        return "", [], {}
    for node in list(root.iter(lxml.etree.Comment, lxml.etree.ProcessingInstruction, *_DROP_TAGS)):
        if node.getparent() is not None:
            node.drop_tree()
    notes: list[str] = []
    for el in _outermost([el for el in _elements(root) if _is_quote(el)]):
        label = " ".join(filter(None, [el.tag, el.get("class"), el.get("type")]))
        notes.append(f"HTML quote <{label}> ({len(el.text_content().split())} words)")
        _replace_with_text(el, ">" + _HTML_QUOTE, block=True)
    if (header := next((el for el in _elements(root) if _is_reply_header(el)), None)) is not None:
        label = header.get("id") or header.get("class") or "border-top"
        notes.append(f"HTML reply header <{header.tag} {label}> and all below")
        _cut_to_end(header)
    hidden: dict[int, tuple[str, str]] = {}
    for el in _outermost([el for el in _elements(root) if _hidden_how(el)]):
        text = " ".join(el.text_content().split())
        if any(ch.isalnum() for ch in text):
            hidden[len(hidden)] = (text, _hidden_how(el) or "hidden")
            _replace_with_text(el, f"{_HIDDEN_OPEN}{len(hidden) - 1}{_HIDDEN_CLOSE}", block=False)
        else:
            el.drop_tree()
    for el in list(root.iter("hr")):
        _replace_with_text(el, "________________________________", block=True)
    return Inscriptis(root, _INSCRIPTIS_CONFIG).get_text(), notes, hidden


# ---------------------------------------------------------------- putting it together


def _run_engine(text: str, rules: ReplyRules, sender: str) -> tuple[str, list[str], list[str]]:
    """(reply, cut notes, warnings) of one plain text."""
    engine = _Text(text, rules, _name_tokens(sender))
    return engine.extract(), engine.cut, engine.warnings


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", _fold(text).casefold()) if len(w) >= 2 and not w.isdigit()}


def _format_characters(text: str) -> list[str]:
    found = sorted({ch for ch in text if unicodedata.category(ch) == "Cf"})
    return [f"U+{ord(ch):04X} {unicodedata.name(ch, 'FORMAT CHARACTER')}" for ch in found]


def _html_reply(html: str, rules: ReplyRules, sender: str) -> tuple[str, list[str], list[str]]:
    """(reply text, cut notes, warnings) of the HTML part."""
    rendered, notes, hidden = _html_to_text(html)
    reply, cut, warnings = _run_engine(rendered, rules, sender)
    warnings += [
        f"hidden HTML text {_snippet(hidden[int(n)][0], 50)!r} ({hidden[int(n)][1]}) in the reply"
        for n in _HIDDEN_RE.findall(reply)
        if int(n) in hidden
    ]
    reply = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", _HIDDEN_RE.sub("", reply)).strip("\n")
    return reply, notes + cut, warnings


def extract_reply(text: str, html: str, rules: ReplyRules | None = None, *, sender: str = "") -> ReplyResult:
    """The customer's visible new text: from the plain part when there is one, else the HTML part.

    When both parts exist the HTML part is still read, to warn (and mark the reply unreadable) when
    it hides text in the reply or says something else than the plain part (threats row 14).
    Format characters in the reply also make it unreadable (row 15): never silently stripped.
    ``sender`` (From display name and address, optional) lets a bare name line be cut as a
    signature. The text is not NFKC-normalised here (``Reply.run`` does), so that a benchmark can
    compare it with other libraries' output character for character.
    """
    rules = rules or ReplyRules()
    warnings: list[str] = []
    if text.strip() or not html.strip():
        reply, cut, warnings = _run_engine(text, rules, sender)
        if html.strip():
            html_text, _, html_warnings = _html_reply(html, rules, sender)
            warnings += [f"HTML part: {w}" for w in html_warnings if w.startswith("hidden HTML text")]
            plain_words, html_words = _words(reply), _words(html_text)
            union = plain_words | html_words
            if plain_words and html_words and len(plain_words ^ html_words) * 2 > len(union):
                plain, other = _snippet(reply, 40), _snippet(html_text, 40)
                warnings.append(f"the HTML part says something else: plain {plain!r}, HTML {other!r}")
    else:
        reply, cut, warnings = _html_reply(html, rules, sender)
    if found := _format_characters(reply):
        warnings.append("format characters in the reply (zero-width, bidi or BOM): " + ", ".join(found))
    return ReplyResult(text=reply, cut=cut, readable=not warnings, warnings=warnings)


def _sender_of(mail: InboundMail) -> str:
    """The From display name and the address' local part: words a signature name line may repeat."""
    value = mail.header("From") or ""
    display = value.rsplit("<", 1)[0].strip().strip('"') if "<" in value else ""
    return f"{display} {(mail.from_addr or '').split('@')[0]}"


class Reply:
    name = "reply"
    description = "Cuts quotes, quote headers, signatures and disclaimers; keeps the customer's new words."

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        rules = ctx.rules.get(self.name)
        result = extract_reply(
            mail.text, mail.html, rules if isinstance(rules, ReplyRules) else None, sender=_sender_of(mail)
        )
        warnings = result.warnings + [f"unreadable body: {p}" for p in mail.problems if "charset" in p]
        facts.reply_text = unicodedata.normalize("NFKC", result.text)
        facts.cut = result.cut + [f"warning: {w}" for w in warnings]
        facts.readable = not warnings
        chars = len(facts.reply_text)
        detail = f"kept {chars} chars; " + (f"cut {len(result.cut)}: {result.cut[0]}" if result.cut else "nothing cut")
        if warnings:
            detail = f"UNREADABLE ({warnings[0]}); {detail}"
        return Evidence(
            check=self.name,
            hit=bool(result.cut),
            detail=_snippet(detail, 240),
            data={"cut": result.cut, "chars": chars, "readable": facts.readable, "warnings": warnings},
        )
