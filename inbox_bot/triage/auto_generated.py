"""Auto-reply, mailing-list and bounce detection, driven by the data in rules/autoreply.toml.

Two errors matter: a missed out-of-office can read as "confirm" to the classifier, and a person
taken for a machine is ignored (an ignored "please cancel" can let an erasure go ahead). So strong
markers (RFC 3834 headers, DSN structure) always decide, while weak ones (subjects, bodies,
Precedence, List-*) yield to a cancel-like phrase in the new text. A bounce beats an auto-reply.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import AutoKind, Evidence, Facts, InboundMail

RULES_FILE = "autoreply.toml"
PSEUDO_FIELDS = (":from", ":part")
_KINDS = {"auto_reply": AutoKind.AUTO_REPLY, "bounce": AutoKind.BOUNCE, "list": AutoKind.LIST}
_PRIORITY = (AutoKind.BOUNCE, AutoKind.AUTO_REPLY, AutoKind.LIST)
_FLAGS = re.IGNORECASE | re.UNICODE


@dataclass(frozen=True)
class Rule:
    """One compiled heuristic; ``conditions`` are (field, pattern) pairs that must all match."""

    id: str
    section: str
    kind: AutoKind
    conditions: tuple[tuple[str, re.Pattern[str]], ...]
    weak: bool = False
    language: str = ""
    examples: tuple[str, ...] = ()
    counter_examples: tuple[str, ...] = ()


OWN_MAILBOX = Rule("own-mailbox", "from", AutoKind.AUTO_REPLY, ())


@dataclass(frozen=True)
class Hit:
    rule: Rule
    matched: str

    def line(self) -> str:
        return f"{self.rule.section} rule {self.rule.id}: {self.matched}"


@dataclass(frozen=True)
class AutoRules:
    """Everything compiled from autoreply.toml; the empty default detects nothing from content."""

    rules: tuple[Rule, ...] = ()
    overrides: tuple[re.Pattern[str], ...] = ()
    quote_starts: tuple[re.Pattern[str], ...] = ()
    body_lines: int = 8
    override_examples: tuple[str, ...] = ()
    override_counter_examples: tuple[str, ...] = ()


@dataclass
class Verdict:
    """What ``evaluate`` found: the kind, the rules that fired and the weak ones a phrase overrode."""

    kind: AutoKind = AutoKind.HUMAN
    hits: list[Hit] = field(default_factory=list)
    overridden: list[Hit] = field(default_factory=list)
    override_phrase: str = ""


def _compile(pattern: Any, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"{RULES_FILE}: {where}: pattern must be a non-empty string")
    try:
        return re.compile(pattern, _FLAGS)
    except re.error as exc:
        raise ValueError(f"{RULES_FILE}: {where}: bad pattern: {exc}") from exc


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{RULES_FILE}: {where}: expected a list of strings")
    return tuple(value)


def _rule(section: str, entry: dict, seen: set[str]) -> Rule:
    rid = entry.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"{RULES_FILE}: a [[{section}]] rule has no id")
    if rid in seen:
        raise ValueError(f"{RULES_FILE}: duplicate rule id {rid!r}")
    seen.add(rid)
    where = f"[[{section}]] {rid}"
    kind = _KINDS.get(entry.get("kind", ""))
    if kind is None:
        raise ValueError(f"{RULES_FILE}: {where}: kind must be one of {sorted(_KINDS)}")
    if section == "header":
        match = entry.get("match")
        if not isinstance(match, dict) or not match:
            raise ValueError(f"{RULES_FILE}: {where}: match must be a table of header = pattern")
        conditions = tuple((name, _compile(p, f"{where} {name}")) for name, p in match.items())
    else:
        conditions = ((section, _compile(entry.get("pattern"), where)),)
    examples = _strings(entry.get("examples", []), f"{where} examples")
    if not examples:
        raise ValueError(f"{RULES_FILE}: {where}: needs at least one example")
    return Rule(
        id=rid,
        section=section,
        kind=kind,
        conditions=conditions,
        weak=bool(entry.get("weak", False)),
        language=str(entry.get("language", "")),
        examples=examples,
        counter_examples=_strings(entry.get("counter_examples", []), f"{where} counter_examples"),
    )


def compile_rules(files: dict[str, dict]) -> AutoRules:
    """Compile autoreply.toml (absent: an empty rule set); raise ValueError naming the bad rule."""
    data = files.get(RULES_FILE)
    if data is None:
        return AutoRules()
    seen: set[str] = set()
    rules = [_rule(section, entry, seen) for section in ("header", "subject", "body")
             for entry in data.get(section, [])]
    override = data.get("human_override", {})
    quotes = data.get("new_text", {}).get("quote_starts", [])
    body_lines = data.get("body_lines", 8)
    if not isinstance(body_lines, int) or body_lines < 1:
        raise ValueError(f"{RULES_FILE}: body_lines must be a positive integer")
    return AutoRules(
        rules=tuple(rules),
        overrides=tuple(_compile(p, "human_override") for p in _strings(override.get("patterns", []),
                                                                         "human_override.patterns")),
        quote_starts=tuple(_compile(p, "new_text.quote_starts") for p in _strings(quotes, "new_text")),
        body_lines=body_lines,
        override_examples=_strings(override.get("examples", []), "human_override.examples"),
        override_counter_examples=_strings(override.get("counter_examples", []),
                                           "human_override.counter_examples"),
    )


_TAGS = re.compile(r"<[^>]*>")
_DROP = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h\d)\b[^>]*>", re.IGNORECASE)
_QUOTE_TAG = re.compile(r"<\s*blockquote\b[^>]*>", re.IGNORECASE)


def _html_text(markup: str) -> str:
    """A crude visible text of HTML, enough to read the first lines (a blockquote becomes '>')."""
    markup = _QUOTE_TAG.sub("\n> ", _DROP.sub(" ", markup))
    return html.unescape(_TAGS.sub("", _BREAKS.sub("\n", markup)))


def new_text(mail: InboundMail, rules: AutoRules) -> str:
    """The text above the first quote marker (the Reply check runs later; this only needs the top)."""
    lines = []
    for line in (mail.text or _html_text(mail.html)).splitlines():
        if any(p.search(line) for p in rules.quote_starts):
            break
        lines.append(line)
    return "\n".join(lines)


def _first_lines(text: str, count: int) -> str:
    """The first ``count`` non-empty lines, whitespace collapsed, joined with spaces."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return " ".join(lines[:count])


def _values(mail: InboundMail, name: str) -> list[str]:
    if name == ":from":
        return list(mail.from_addrs)
    if name == ":part":
        return list(mail.part_types)
    return mail.header_all(name)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _match(rule: Rule, mail: InboundMail, subject: str, body: str) -> str | None:
    """A short account of what fired, or None when some condition does not hold."""
    shown = []
    for name, pattern in rule.conditions:
        values = {"subject": [subject], "body": [body]}.get(rule.section) or _values(mail, name)
        found = next(((v, m) for v in values if (m := pattern.search(v))), None)
        if found is None:
            return None
        value, m = found
        if rule.section == "header":
            shown.append(f"{name}: {_printable(' '.join(value.split())[:80])}")
        else:
            shown.append(repr((value if rule.section == "subject" else m.group(0))[:80]))
    return "; ".join(shown)


def evaluate(mail: InboundMail, rules: AutoRules, mailbox_address: str = "") -> Verdict:
    """Every rule over ``mail``; the verdict's kind is the strongest surviving one (bounce first)."""
    text = new_text(mail, rules)
    subject = " ".join(mail.subject.split())
    body = _first_lines(text, rules.body_lines)
    verdict = Verdict()
    for rule in rules.rules:
        matched = _match(rule, mail, subject, body)
        if matched is not None:
            verdict.hits.append(Hit(rule, matched))
    if mailbox_address and mailbox_address.lower() in mail.from_addrs:
        verdict.hits.append(Hit(OWN_MAILBOX, f"From is our own mailbox {mailbox_address} (a mail loop)"))
    phrase = next((m.group(0) for p in rules.overrides if (m := p.search(f"{subject}\n{text}"))), "")
    if phrase:
        verdict.override_phrase = phrase
        verdict.overridden = [h for h in verdict.hits if h.rule.weak and h.rule.kind is not AutoKind.BOUNCE]
        verdict.hits = [h for h in verdict.hits if h not in verdict.overridden]
    kinds = {h.rule.kind for h in verdict.hits}
    verdict.kind = next((k for k in _PRIORITY if k in kinds), AutoKind.HUMAN)
    return verdict


class AutoGenerated:
    name = "auto_generated"
    description = (
        "Out-of-office replies, ticket-system acknowledgements, list traffic and bounces, from RFC 3834 "
        "headers, DSN structure and localized subject/body phrases (rules/autoreply.toml)."
    )

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        rules = ctx.rules.get(self.name) or AutoRules()
        verdict = evaluate(mail, rules, ctx.mailbox_address)
        facts.auto_kind = verdict.kind
        facts.auto_reasons = [h.line() for h in verdict.hits if h.rule.kind is verdict.kind]
        data = {
            "kind": verdict.kind.value or "human",
            "rules": [h.rule.id for h in verdict.hits],
            "overridden": [h.rule.id for h in verdict.overridden],
        }
        if verdict.kind is not AutoKind.HUMAN:
            return Evidence(self.name, True, f"{verdict.kind.value}: {'; '.join(facts.auto_reasons)}", data)
        if verdict.overridden:
            ids = ", ".join(h.rule.id for h in verdict.overridden)
            detail = f"person: weak rule(s) {ids} overridden by {verdict.override_phrase!r}"
            return Evidence(self.name, False, detail, data)
        return Evidence(self.name, False, "no auto-reply, bounce or list marker", data)
