"""Rules-driven intent classification of the customer's new words (rules/intents/*.toml).

Conservative by construction: a reply is ``confirm`` only when a confirm cue fires and no cue of
another kind does (cancel, hedge, question, meta-instruction). Whatever is in doubt ends as
``none`` or ``question``, which a person answers. The rule files hold the vocabulary of each
language; this module holds the grammar they share: normalisation, negation scope, subordinate
clauses, questions, and how the cues combine. The rules' own header (rules/intents/en.toml)
documents the schema for support staff.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import Evidence, Facts, InboundMail, Intent, RuleHit

ROLES = ("confirm", "cancel", "question", "hedge", "injection", "neutral", "mask")
EFFECTS = ("confirm", "cancel", "question", "hedge", "injection", "neutral")
IGNORED = "ignored"
DEFAULT_NEGATED = {
    "confirm": "cancel",
    "cancel": "hedge",
    "question": "question",
    "hedge": "neutral",
    "injection": "injection",
    "neutral": "neutral",
}
WORD_LISTS = (
    "negators",
    "post_negators",
    "bridges",
    "coordinators",
    "boundaries",
    "interjections",
    "please",
    "thanks",
    "delays",
)
PATTERN_LISTS = ("subordinators", "reversal", "fillers")
MAX_PRE_WORDS = 6
MAX_POST_WORDS = 5
FUZZY_MIN_WORD = 6
MAX_CHARS = 20_000

# --------------------------------------------------------------------------- normalisation

_TRANSLATE = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
        "\u00b4": "'",
        "`": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": " - ",
        "\u2014": " - ",
        "\u2015": " - ",
        "\u2212": "-",
        "\u2010": "-",
        "\u2011": "-",
        "\u0142": "l",
        "\u00f8": "o",
        "\u0111": "d",
        "\u00e6": "ae",
        "\u0153": "oe",
        "\u0131": "i",
        "\u00f0": "d",
        "\u00fe": "th",
    }
)
_UMLAUTS = {"\x01": "(?:ae|a)", "\x02": "(?:oe|o)", "\x03": "(?:ue|u)"}
_RUNS = re.compile(r"([^\W\d_])\1{2,}")
_RUNS_2 = re.compile(r"([^\W\d_])\1")
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w+|\n|[^\w\s]")
_BOUNDARY_PUNCT = frozenset(".!?;:,\n")


def format_chars(text: str) -> bool:
    """True when the text hides format characters (zero-width, bidi controls, BOM: threat 15)."""
    return any(unicodedata.category(c) == "Cf" for c in text)


def fold(text: str) -> str:
    """NFKC, one kind of quote and dash, case-folded, accents off: the form everything is matched in."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_TRANSLATE)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", text)


def _contractions(text: str) -> str:
    text = re.sub(r"\bcan'?t\b", "can not", text)
    text = re.sub(r"\bwon'?t\b", "will not", text)
    text = re.sub(r"(\w)n't\b", r"\1 not", text)
    return text.replace("'", " ")


def normalise(text: str, typos: dict[str, str] | None = None, fuzzy: dict[str, str] | None = None) -> str:
    """The reply as the rules see it: folded, contractions opened, typos repaired, paragraphs kept.

    A blank line becomes the paragraph mark ``\\n`` (a sentence end); a single line break is a
    space, because mail clients wrap sentences and a wrapped "do not / delete" must stay one clause.
    """
    text = _contractions(fold(text))
    text = _RUNS.sub(r"\1\1", text)
    text = re.sub(r"[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)+", "\x00", text)
    text = re.sub(r" +", " ", re.sub(r"\s+", " ", text).replace("\x00", " \n ")).strip()
    if typos or fuzzy:
        table = (typos or {}) if not fuzzy else fuzzy if not typos else {**fuzzy, **typos}
        text = _WORD.sub(lambda m: table.get(m.group(), m.group()), text)
    return text


_SINGLE: dict[str, str] = {}  # word -> its doubled letters single; str to str, so the GC never scans it


def _single(word: str) -> str:
    single = _SINGLE.get(word)
    if single is None:
        if len(_SINGLE) >= 65_536:
            _SINGLE.clear()
        single = _SINGLE[word] = _RUNS_2.sub(r"\1", word)
    return single


def _in(word: str, words: frozenset[str]) -> bool:
    """Membership that forgives stretched letters ("nooo" was shortened to "noo", "no" is meant)."""
    return word in words or _single(word) in words


# --------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True)
class Rule:
    """One rule of a rules/intents file, compiled: what it matches and what a match means."""

    id: str
    role: str
    language: str
    parts: tuple[re.Pattern[str], ...]
    negated: str
    negation: str
    in_question: str
    alone: bool
    particle: bool
    delayable: bool
    reversible: bool
    scope: str
    examples: tuple[str, ...]
    counter_examples: tuple[str, ...]


@dataclass(frozen=True)
class Lexicon:
    """The grammar words of one language (the ``[words]`` table of its file)."""

    language: str
    negators: frozenset[str] = frozenset()
    post_negators: frozenset[str] = frozenset()
    bridges: frozenset[str] = frozenset()
    coordinators: frozenset[str] = frozenset()
    boundaries: frozenset[str] = frozenset()
    interjections: frozenset[str] = frozenset()
    please: frozenset[str] = frozenset()
    thanks: frozenset[str] = frozenset()
    delays: frozenset[str] = frozenset()


@dataclass(frozen=True)
class IntentRules:
    """Everything ``classify_text`` needs, built once from rules/intents/*.toml."""

    rules: tuple[Rule, ...]
    lexicons: dict[str, Lexicon]
    typos: dict[str, str]
    fuzzy: dict[str, str]
    negators: frozenset[str]
    boundaries: frozenset[str]
    interjections: frozenset[str]
    please: frozenset[str]
    thanks: frozenset[str]
    subordinators: dict[str, re.Pattern[str]]
    reversal: re.Pattern[str] | None
    fillers: re.Pattern[str] | None
    samples: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    bridges: frozenset[str] = frozenset()  # every language's
    spelling: dict[str, str] = field(default_factory=dict)  # fuzzy and typos in one table, typos winning
    word_sets: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    mask_filter: PartFilter | None = None  # which parts of the mask rules can match a text (see Prefilter)
    cue_filter: PartFilter | None = None  # the same for every other rule
    filler_union: Union | None = None  # ``fillers`` as alternatives, for the part of it that can match a text

    def lexicon(self, language: str) -> tuple[Lexicon, ...]:
        """The cue's own language plus the language-neutral words (file ``common.toml``)."""
        return tuple(lx for key, lx in self.lexicons.items() if key in (language, "*"))


def _wordish(c: str) -> bool:
    return c.isalnum() or c in _UMLAUTS


def _phrase_pattern(phrase: str, typos: dict[str, str]) -> str:
    """A phrase as regex: whole words, any spacing, stretched letters, ä = a = ae, "..." = a short gap."""
    marked = phrase.casefold().replace("ä", "\x01").replace("ö", "\x02").replace("ü", "\x03")
    words = [w for w in normalise(marked, typos).split(" ") if w]
    if not [w for w in words if w != "..."]:
        raise ValueError(f"empty phrase {phrase!r}")
    body = ""
    previous = ""
    for word in words:
        if word == "...":
            body += r"\s+(?:\w+\s+){0,4}" if previous else ""
            previous = "..."
            continue
        if previous and previous != "...":
            body += r"\s+" if _wordish(previous[-1]) and _wordish(word[0]) else r"\s*"
        body += "".join(
            _UMLAUTS[c] + "+" if c in _UMLAUTS else re.escape(c) + ("+" if c.isalpha() else "") for c in word
        )
        previous = word
    head = r"(?<!\w)" if _wordish(words[0][0]) else ""
    tail = r"(?!\w)" if _wordish(words[-1][-1]) else ""
    return head + body + tail


def _word_set(values: Any, where: str, typos: dict[str, str]) -> frozenset[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{where}: expected a list of strings")
    return frozenset(w for v in values for w in normalise(v, typos).split(" ") if w)


def _union_pattern(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: expected a string or a list of strings")
    return tuple(value)


def _compile_rule(spec: Any, language: str, where: str, typos: dict[str, str]) -> Rule:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: each [[rule]] must be a table")
    rid = spec.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"{where}: a rule without an id")
    where = f"{where} rule {rid}"
    role = spec.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}")
    alternatives = [_phrase_pattern(p, typos) for p in _strings(spec.get("phrases"), where)]
    alternatives += list(_strings(spec.get("patterns"), where))
    if not alternatives:
        raise ValueError(f"{where}: needs phrases or patterns")
    try:
        parts = tuple(re.compile(a) for a in alternatives)
    except re.error as exc:
        raise ValueError(f"{where}: bad pattern: {exc}") from exc
    negated = spec.get("negated", DEFAULT_NEGATED.get(role, "neutral"))
    negation = spec.get("negation", "any")
    in_question = spec.get("in_question", "drop" if role == "confirm" else "keep")
    scope = spec.get("scope", "match")
    if negated not in EFFECTS or negation not in ("any", "tight", "none"):
        raise ValueError(f"{where}: negated must be a role, negation one of any/tight/none")
    if in_question not in ("keep", "drop") or scope not in ("match", "sentence"):
        raise ValueError(f"{where}: in_question must be keep/drop, scope match/sentence")
    return Rule(
        id=rid,
        role=role,
        language=language,
        parts=parts,
        negated=negated,
        negation=negation,
        in_question=in_question,
        alone=bool(spec.get("alone", False)),
        particle=bool(spec.get("particle", False)),
        delayable=bool(spec.get("delayable", False)),
        reversible=bool(spec.get("reversible", False)),
        scope=scope,
        examples=_strings(spec.get("examples"), where),
        counter_examples=_strings(spec.get("counter_examples"), where),
    )


def _fuzzy_table(specs: list[tuple[Rule, dict]], known: set[str]) -> dict[str, str]:
    """Cheap typo repair (one swapped or one missing letter) that can only ever *block* a confirm.

    Its targets are words of cancel, hedge and question phrases that no confirm rule matches, so a
    repaired typo adds a reason to ask a person and never a reason to erase.
    """
    confirms = [part for rule, _ in specs if rule.role == "confirm" for part in rule.parts]
    targets = {
        w
        for rule, spec in specs
        if rule.role in ("cancel", "hedge", "question")
        for phrase in _strings(spec.get("phrases"), rule.id)
        for w in _WORD.findall(normalise(phrase))
        if len(w) >= FUZZY_MIN_WORD and not any(rx.search(w) for rx in confirms)
    }
    table: dict[str, str] = {}
    clashes: set[str] = set()
    for word in sorted(targets):
        variants = {word[:i] + word[i + 1 :] for i in range(len(word))}
        variants |= {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}
        for v in variants - {word}:
            if v in known or any(rx.search(v) for rx in confirms):
                continue
            if v in table and table[v] != word:
                clashes.add(v)
            table[v] = word
    return {k: v for k, v in table.items() if k not in clashes}


# --------------------------------------------------------------------------- prefilter
#
# Most of the ~2,000 rule parts cannot match a given reply, and asking each of them costs more than the
# rest of the classification together. Before a reply is searched, every part's regex is read once (at
# compile time) for the literal text that any match of it must contain, and a part whose literals are not
# in the reply is skipped. The reading is conservative: what cannot be proven (a class like \w, a flag
# like IGNORECASE, an unknown node) only makes the part run, so the results are those of running every
# part (tests/test_classify_fastpath.py compares both ways).
#
# Stretched letters ("d+e+l+e+t+e+", the way phrases are compiled) match "deleeete", so literals are
# compared in squeezed form, every run of one character cut to one: a match of "d+e+l+e+t+e+" squeezes
# to "delete", and a substring's squeezed form is always a substring of the squeezed text.

_SQUEEZE = re.compile(r"(.)\1+", re.DOTALL)
_EXACT_LIMIT = 64
_RANGE_LIMIT = 16


def squeeze(text: str) -> str:
    """Every run of one character cut to one ("deleeete" -> "delete", "account" -> "acount")."""
    return _SQUEEZE.sub(r"\1", text)


class _Unprovable(Exception):
    """A regex node the prefilter does not reason about: its part always runs."""


@dataclass(frozen=True)
class _Need:
    """What every match of a regex node contains, by the squeezed form of strings.

    ``exact``: each match squeezes like one of these strings (None: not a small finite set).
    ``prefix`` / ``suffix``: each match starts / ends with a piece that squeezes like one of these.
    ``clauses``: each match contains, for every clause, a piece that squeezes like one of its strings.
    """

    exact: frozenset[str] | None = None
    prefix: frozenset[str] | None = None
    suffix: frozenset[str] | None = None
    clauses: tuple[frozenset[str], ...] = ()


_ANY = _Need()
_EMPTY = _Need(exact=frozenset({""}), prefix=frozenset({""}), suffix=frozenset({""}))


def _exactly(strings: frozenset[str]) -> _Need:
    return _Need(exact=strings, prefix=strings, suffix=strings, clauses=_clause(strings))


def _clause(strings: frozenset[str] | None) -> tuple[frozenset[str], ...]:
    """``strings`` as a clause, unless one of them is empty (then it holds for any text)."""
    if strings is None:
        return ()
    squeezed = {squeeze(s) for s in strings}
    if "" in squeezed:
        return ()
    # A text holding "please delete" holds "delete": the longer string adds nothing to the clause.
    return (frozenset(s for s in squeezed if not any(t != s and t in s for t in squeezed)),)


def _simplest(clauses: tuple[frozenset[str], ...]) -> tuple[frozenset[str], ...]:
    """``clauses`` without those another one implies (each string of {"lo"} holds one of {"o", "oe"})."""
    kept: list[frozenset[str]] = []
    for a in sorted(dict.fromkeys(clauses), key=_strength, reverse=True):
        if not any(all(any(x in y for x in a) for y in b) for b in kept):
            kept.append(a)
    return tuple(kept)


def _cross(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None or b is None or len(a) * len(b) > _EXACT_LIMIT:
        return None
    return frozenset(x + y for x in a for y in b)


def _strength(clause: frozenset[str]) -> tuple[int, int]:
    return (min(len(s) for s in clause), -len(clause))


def _best(need: _Need) -> frozenset[str] | None:
    return max(need.clauses, key=_strength) if need.clauses else None


def _need_of_sequence(items: list[_Need]) -> _Need:
    clauses: list[frozenset[str]] = []
    run: frozenset[str] | None = frozenset({""})  # the exact strings of the current stretch of the match
    for item in items:
        if item.exact is not None:
            joined = _cross(run, item.exact)
            if joined is None:
                clauses.extend(_clause(run))
                joined = item.exact
            run = joined
            continue
        crossed = _cross(run, item.prefix)
        clauses.extend(_clause(crossed) if crossed is not None else _clause(run) + _clause(item.prefix))
        clauses.extend(item.clauses)
        run = item.suffix if item.suffix is not None else frozenset({""})
    clauses.extend(_clause(run))
    exact = frozenset({""})
    for item in items:
        exact = _cross(exact, item.exact)
    prefix: frozenset[str] | None = frozenset({""})
    for item in items:
        if item.exact is None:
            prefix = _cross(prefix, item.prefix)
            break
        prefix = _cross(prefix, item.exact)
    suffix: frozenset[str] | None = frozenset({""})
    for item in reversed(items):
        if item.exact is None:
            suffix = _cross(item.suffix, suffix)
            break
        suffix = _cross(item.exact, suffix)
    return _Need(exact=exact, prefix=prefix, suffix=suffix, clauses=tuple(dict.fromkeys(clauses)))


def _union(sets: list[frozenset[str] | None]) -> frozenset[str] | None:
    if any(s is None for s in sets):
        return None
    merged = frozenset().union(*sets)
    return merged if len(merged) <= _EXACT_LIMIT else None


def _need_of_branches(branches: list[_Need]) -> _Need:
    best = [_best(b) for b in branches]
    clause = _union(best)
    return _Need(
        exact=_union([b.exact for b in branches]),
        prefix=_union([b.prefix for b in branches]),
        suffix=_union([b.suffix for b in branches]),
        clauses=(clause,) if clause else (),
    )


def _need_of_repeat(low: int, high: int, inner: _Need) -> _Need:
    if high == 0:
        return _EMPTY
    if low == 0:
        if high == 1 and inner.exact is not None:
            return _exactly(inner.exact | {""})
        return _ANY
    if inner.exact is not None and len(inner.exact) == 1 and len(next(iter(inner.exact))) == 1:
        return _exactly(inner.exact)  # c+, c{2,}: a run of one character squeezes to that character
    if low == high == 1:
        return inner
    if inner.exact is not None:
        return _Need(prefix=inner.exact, suffix=inner.exact, clauses=_clause(inner.exact))
    return _Need(prefix=inner.prefix, suffix=inner.suffix, clauses=inner.clauses)


def _need_of_class(items: list) -> _Need:
    from re import _constants as sre

    chars: set[str] = set()
    for op, arg in items:
        if op is sre.LITERAL:
            chars.add(chr(arg))
        elif op is sre.RANGE and arg[1] - arg[0] < _RANGE_LIMIT:
            chars.update(chr(c) for c in range(arg[0], arg[1] + 1))
        else:
            return _ANY  # NEGATE, CATEGORY (\w, \s...), wide ranges
    return _exactly(frozenset(chars))


def _need_of(nodes: Any) -> _Need:
    """What ``nodes`` (a parsed regex sequence, ``re._parser``) requires of every match."""
    from re import _constants as sre

    items: list[_Need] = []
    for op, arg in nodes:
        if op is sre.LITERAL:
            items.append(_exactly(frozenset({chr(arg)})))
        elif op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            items.append(_EMPTY)  # zero width
        elif op is sre.IN:
            items.append(_need_of_class(arg))
        elif op is sre.SUBPATTERN:
            _group, add_flags, _del_flags, sub = arg
            if add_flags & (re.IGNORECASE | re.LOCALE):
                raise _Unprovable("case-insensitive group")
            items.append(_need_of(sub))
        elif op is sre.ATOMIC_GROUP:
            items.append(_need_of(arg))
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, sub = arg
            items.append(_need_of_repeat(low, high, _need_of(sub)))
        elif op is sre.BRANCH:
            items.append(_need_of_branches([_need_of(b) for b in arg[1]]))
        elif op in (sre.ANY, sre.NOT_LITERAL, sre.GROUPREF, sre.GROUPREF_EXISTS):
            items.append(_ANY)
        else:
            raise _Unprovable(f"regex node {op}")
    return _need_of_sequence(items)


def required_literals(pattern: re.Pattern[str]) -> tuple[frozenset[str], ...]:
    """Clauses of squeezed strings: every match of ``pattern`` holds one string of each clause (squeezed).

    Empty when nothing can be proven; then the pattern must always run.
    """
    from re import _parser as sre_parse

    if pattern.flags & (re.IGNORECASE | re.LOCALE) or not isinstance(pattern.pattern, str):
        return ()
    try:
        need = _need_of(sre_parse.parse(pattern.pattern, pattern.flags))
    except (_Unprovable, re.error, RecursionError):
        return ()
    return _simplest(need.clauses)


@dataclass(frozen=True)
class Prefilter:
    """Which of some patterns can match a text at all, from their required literals (see above)."""

    by_key: dict[str, tuple[int, ...]]  # a literal of a pattern's chosen clause -> the patterns it lets run
    by_gram: dict[str, tuple[str, ...]]  # three characters -> the literals indexed by them (their rarest three)
    short: tuple[str, ...]  # literals shorter than three characters
    always: tuple[int, ...]  # patterns with nothing proven: they always run
    others: dict[int, tuple[frozenset[str], ...]]  # a pattern's other clauses, checked once it may run

    @classmethod
    def build(cls, patterns: Sequence[re.Pattern[str]]) -> Prefilter:
        by_key: dict[str, list[int]] = {}
        always: list[int] = []
        others: dict[int, tuple[frozenset[str], ...]] = {}
        for i, pattern in enumerate(patterns):
            clauses = required_literals(pattern)
            if not clauses:
                always.append(i)
                continue
            chosen = max(clauses, key=_strength)
            for key in chosen:
                by_key.setdefault(key, []).append(i)
            rest = tuple(c for c in clauses if c != chosen)
            if rest:
                others[i] = rest
        long_keys = sorted(k for k in by_key if len(k) >= 3)
        grams = Counter(g for k in long_keys for g in {k[i : i + 3] for i in range(len(k) - 2)})
        by_gram: dict[str, list[str]] = {}
        for key in long_keys:  # each under its rarest three characters: few literals to test per text
            gram = min((key[i : i + 3] for i in range(len(key) - 2)), key=lambda g: (grams[g], g))
            by_gram.setdefault(gram, []).append(key)
        return cls(
            by_key={k: tuple(v) for k, v in by_key.items()},
            by_gram={g: tuple(v) for g, v in by_gram.items()},
            short=tuple(sorted(k for k in by_key if len(k) < 3)),
            always=tuple(always),
            others=others,
        )

    def candidates(self, text: str) -> list[int]:
        """The indexes of the patterns that may match ``text``, in order."""
        squeezed = squeeze(text)
        found = set(self.always)
        for key in self.short:
            if key in squeezed:
                found.update(self.by_key[key])
        by_gram, by_key = self.by_gram, self.by_key
        for gram in {squeezed[i : i + 3] for i in range(len(squeezed) - 2)}:
            for key in by_gram.get(gram, ()):
                if key in squeezed:
                    found.update(by_key[key])
        others = self.others
        return [
            i
            for i in sorted(found)
            if i not in others or all(any(s in squeezed for s in clause) for clause in others[i])
        ]


@dataclass(frozen=True)
class PartFilter:
    """The prefilter over the parts of the mask rules, or of all the other rules."""

    prefilter: Prefilter
    parts: tuple[tuple[int, int], ...]  # a part's (rule index, index in the rule's parts)

    @classmethod
    def build(cls, rules: tuple[Rule, ...], masks: bool) -> PartFilter:
        chosen = [
            (r, p) for r, rule in enumerate(rules) if (rule.role == "mask") == masks for p in range(len(rule.parts))
        ]
        return cls(Prefilter.build([rules[r].parts[p] for r, p in chosen]), tuple(chosen))

    def candidates(self, text: str) -> dict[int, list[int]]:
        """The parts that may match ``text``: rule index -> part indexes, both in rule order."""
        out: dict[int, list[int]] = {}
        for i in self.prefilter.candidates(text):
            r, p = self.parts[i]
            out.setdefault(r, []).append(p)
        return out


_SUBSETS_KEPT = 512


@dataclass(frozen=True)
class Union:
    """A union of patterns (``fillers``), run on a text as the union of only the alternatives that can match it.

    An alternative that matches nowhere in the text never wins at any position, so the smaller union
    finds exactly what the whole one finds. The smaller unions are compiled once and kept.
    """

    alternatives: tuple[str, ...]
    prefilter: Prefilter
    compiled: dict[tuple[int, ...], re.Pattern[str] | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, alternatives: list[str]) -> Union | None:
        patterns = [re.compile(a) for a in alternatives]
        if not patterns or any(p.groups for p in patterns):  # group numbers would shift: not worth it
            return None
        return cls(tuple(alternatives), Prefilter.build(patterns))

    def pattern_for(self, text: str) -> re.Pattern[str] | None:
        """The union of the alternatives that may match ``text`` (None: none can)."""
        key = tuple(self.prefilter.candidates(text))
        rx = self.compiled.get(key)
        if rx is None and key not in self.compiled:
            if len(self.compiled) >= _SUBSETS_KEPT:
                self.compiled.clear()
            rx = self.compiled[key] = _union_pattern([self.alternatives[i] for i in key])
        return rx


def compile_rules(files: dict[str, dict]) -> IntentRules:
    """Compile every ``intents/*.toml`` into one ``IntentRules``; errors name the file and the rule."""
    rules: list[Rule] = []
    specs: list[tuple[Rule, dict]] = []
    lexicons: dict[str, Lexicon] = {}
    typos: dict[str, str] = {}
    patterns: dict[str, list[str]] = {name: [] for name in PATTERN_LISTS}
    subordinators: dict[str, list[str]] = {}
    samples: dict[str, dict[str, tuple[str, ...]]] = {}
    intent_files = {k: v for k, v in sorted(files.items()) if k.startswith("intents/") and k.endswith(".toml")}
    if not intent_files:
        raise ValueError("no rules/intents/*.toml files")
    for data in intent_files.values():
        for wrong, right in (data.get("typos") or {}).items():
            typos[normalise(wrong)] = normalise(right)
    seen: set[str] = set()
    for path, data in intent_files.items():
        language = data.get("language")
        if not isinstance(language, str) or not language:
            raise ValueError(f'{path}: missing language = ".."')
        words = data.get("words") or {}
        lex: dict[str, frozenset[str]] = {
            name: _word_set(words.get(name, []), f"{path} [words].{name}", typos) for name in WORD_LISTS
        }
        lexicons[language] = Lexicon(language=language, **lex)
        for name in PATTERN_LISTS:
            target = subordinators.setdefault(language, []) if name == "subordinators" else patterns[name]
            for phrase in _strings(words.get(name), f"{path} [words].{name}"):
                target.append(_phrase_pattern(phrase, typos))
            target.extend(_strings(words.get(f"{name}_patterns"), f"{path} [words].{name}_patterns"))
        for spec in data.get("rule", []):
            rule = _compile_rule(spec, language, path, typos)
            if rule.id in seen:
                raise ValueError(f"{path}: duplicate rule id {rule.id}")
            seen.add(rule.id)
            rules.append(rule)
            specs.append((rule, spec))
        tests = data.get("tests") or {}
        for intent, texts in tests.items():
            if intent not in {i.value for i in Intent}:
                raise ValueError(f"{path} [tests]: unknown intent {intent}")
            samples.setdefault(language, {})[intent] = _strings(texts, f"{path} [tests].{intent}")
    try:
        compiled = {name: _union_pattern(p) for name, p in patterns.items()}
        by_language = {lang: rx for lang, p in subordinators.items() if (rx := _union_pattern(p))}
    except re.error as exc:
        raise ValueError(f"rules/intents [words]: bad pattern: {exc}") from exc
    known: set[str] = set()
    for lx in lexicons.values():
        for name in WORD_LISTS:
            known |= getattr(lx, name)
    for _, spec in specs:
        for phrase in _strings(spec.get("phrases"), "phrases"):
            known.update(_WORD.findall(normalise(phrase)))
        for pattern in _strings(spec.get("patterns"), "patterns"):
            known.update(re.findall(r"[a-z]{4,}", pattern))
    known |= set(typos) | {w for v in typos.values() for w in v.split()}
    fuzzy = _fuzzy_table(specs, known)
    return IntentRules(
        rules=tuple(rules),
        mask_filter=PartFilter.build(tuple(rules), masks=True),
        cue_filter=PartFilter.build(tuple(rules), masks=False),
        filler_union=Union.build(patterns["fillers"]),
        lexicons=lexicons,
        typos=typos,
        fuzzy=fuzzy,
        spelling={**fuzzy, **typos},
        negators=frozenset().union(*(lx.negators | lx.post_negators for lx in lexicons.values())),
        boundaries=frozenset().union(*(lx.boundaries for lx in lexicons.values())),
        interjections=frozenset().union(*(lx.interjections for lx in lexicons.values())),
        please=frozenset().union(*(lx.please | lx.thanks for lx in lexicons.values())),
        thanks=frozenset().union(*(lx.thanks for lx in lexicons.values())),
        bridges=frozenset().union(*(lx.bridges for lx in lexicons.values())),
        subordinators=by_language,
        reversal=compiled["reversal"],
        fillers=compiled["fillers"],
        samples=samples,
    )


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Classification:
    """The intent of one reply, every rule hit (``ignored`` ones included) and short notes why."""

    intent: Intent
    hits: list[RuleHit]
    notes: list[str] = field(default_factory=list)

    def counted(self) -> list[RuleHit]:
        return [h for h in self.hits if h.role != IGNORED]

    def detail(self) -> str:
        """One line for staff: the intent, then each phrase that counted and its rule id."""
        shown: dict[tuple[str, str], str] = {}
        for h in self.counted():
            shown.setdefault((h.role, h.matched), h.rule)
        cues = "; ".join(f"{role} '{matched}' ({rule})" for (role, matched), rule in shown.items()) or "no cue"
        notes = f" [{'; '.join(self.notes)}]" if self.notes else ""
        return f"{self.intent.value}: {cues}{notes}"


@dataclass
class _Token:
    start: int
    end: int
    text: str
    word: bool
    boundary: bool
    clause: int = 0
    sentence: int = 0
    opens_sentence: bool = False


@dataclass
class _Cue:
    rule: Rule
    start: int
    end: int
    first: int
    last: int
    effect: str = ""
    why: str = ""
    negator: int | None = None


@dataclass
class _Doc:
    """The normalised, masked reply cut into tokens, clauses and sentences."""

    text: str
    tokens: list[_Token]
    questions: set[int]

    def clause_start(self, i: int) -> int:
        while i > 0 and not self.tokens[i - 1].boundary:
            i -= 1
        return self.tokens[i].start

    def sentence_text(self, sentence: int) -> str:
        members = [t for t in self.tokens if t.sentence == sentence]
        return self.text[members[0].start : members[-1].end] if members else ""


def _parts(rules: IntentRules, text: str, prefilter: PartFilter | None) -> Iterator[tuple[Rule, list[re.Pattern[str]]]]:
    """The rules the prefilter lets through for ``text`` (all of them without one), each with its parts
    that may match, in rule order."""
    if prefilter is None:
        return ((rule, list(rule.parts)) for rule in rules.rules)
    return ((rules.rules[r], [rules.rules[r].parts[p] for p in ps]) for r, ps in prefilter.candidates(text).items())


def _mask(text: str, rules: IntentRules, fast: bool = True) -> tuple[str, list[RuleHit]]:
    """Blank out the spans of ``mask`` rules (disclaimers, "cancel my subscription", URLs...).

    A pattern with a group named ``mask`` blanks only that group, keeping its context readable.
    """
    chars = list(text)
    hits: list[RuleHit] = []
    prefilter = rules.mask_filter if fast else None
    found = [
        (rule, m)
        for rule, parts in _parts(rules, text, prefilter)
        if rule.role == "mask"
        for part in parts
        for m in part.finditer(text)
    ]
    for rule, m in found:
        start, end = m.span("mask") if "mask" in m.re.groupindex and m.group("mask") else m.span()
        if end <= start:
            continue
        if rule.scope == "sentence":
            while start > 0 and text[start - 1] not in ".!?\n":
                start -= 1
            while end < len(text) and text[end - 1] not in ".!?\n":
                end += 1
        for i in range(start, end):
            if chars[i] != "\n":
                chars[i] = " "
        hits.append(RuleHit(rule.id, IGNORED, text[start:end].strip(), rule.language))
    return "".join(chars), hits


def _document(text: str, rules: IntentRules) -> _Doc:
    tokens: list[_Token] = []
    clause = sentence = 0
    first_word = True
    for m in _TOKEN.finditer(text):
        tok = m.group()
        word = tok[0].isalnum() or tok[0] == "_"
        spaced_dash = tok == "-" and text[m.start() - 1 : m.start()] == " " and text[m.end() : m.end() + 1] == " "
        boundary = tok in _BOUNDARY_PUNCT or spaced_dash or (word and _in(tok, rules.boundaries))
        if boundary:
            clause += 1
        tokens.append(_Token(m.start(), m.end(), tok, word, boundary, clause, sentence, word and first_word))
        first_word = first_word and not word
        if tok in ".!?\n":
            sentence, clause, first_word = sentence + 1, clause + 1, True
    questions = {t.sentence for t in tokens if t.text in ("?", "\u00bf")}
    return _Doc(text, tokens, questions)


def _exempt(doc: _Doc, i: int, rules: IntentRules) -> bool:
    """A bare "No," opening a sentence answers a question ("No, nothing to export"); it negates nothing.

    So does "No please ..." / "No thanks ..." written without the comma.
    """
    tokens = doc.tokens
    after = tokens[i + 1] if i + 1 < len(tokens) else None
    answer = after is None or not after.word or _in(after.text, rules.please)
    return tokens[i].opens_sentence and _in(tokens[i].text, rules.interjections) and answer


def _words(rules: IntentRules, language: str, name: str) -> frozenset[str]:
    words = rules.word_sets.get((language, name))
    if words is None:
        words = frozenset().union(*(getattr(lx, name) for lx in rules.lexicon(language)))
        rules.word_sets[(language, name)] = words
    return words


def _scan_negation(cue: _Cue, doc: _Doc, rules: IntentRules, cues: list[_Cue]) -> int | None:
    """The index of a negator bound to ``cue`` through bridge words only ("do not want to delete").

    Another cue in between takes the negation for itself ("don't need it, delete it"), unless an
    "or" joins the two ("don't keep or export anything").
    """
    language = cue.rule.language
    bridges = _words(rules, language, "bridges")
    coordinators = _words(rules, language, "coordinators")
    tokens = doc.tokens
    for step, limit, negators in (
        (-1, MAX_PRE_WORDS, _words(rules, language, "negators")),
        (1, MAX_POST_WORDS, _words(rules, language, "post_negators")),
    ):
        steps, coordinated, i = 0, False, (cue.first - 1 if step < 0 else cue.last + 1)
        while 0 <= i < len(tokens) and steps < limit and negators:
            tok = tokens[i]
            if tok.boundary:
                break
            if tok.word:
                if _in(tok.text, negators) and not _exempt(doc, i, rules):
                    return i
                if any(o.first <= i <= o.last and (o.last < cue.first or o.first > cue.last) for o in cues):
                    if not coordinated:
                        break
                elif _in(tok.text, coordinators):
                    coordinated = True
                elif not _in(tok.text, bridges):
                    break
                steps += 1
            i += step
    return None


def _delayed(cue: _Cue, doc: _Doc, rules: IntentRules) -> bool:
    """A delay word in the clause of a negated confirm: "don't delete it yet" postpones, not cancels."""
    delays = _words(rules, cue.rule.language, "delays")
    clause = doc.tokens[cue.first].clause
    return any(
        t.word and t.clause == clause and _in(t.text, delays)
        for i, t in enumerate(doc.tokens)
        if not cue.first <= i <= cue.last
    )


def _dangling(doc: _Doc, i: int, bridges: frozenset[str]) -> bool:
    """A negator whose clause ends right after it ("Please do not, under any circumstances, delete")."""
    for tok in doc.tokens[i + 1 :]:
        if tok.boundary:
            return True
        if tok.word and not _in(tok.text, bridges):
            return False
    return True


def _name_lines(text: str, rules: IntentRules) -> set[str]:
    """Words of the trailing sign-off lines that look like a name ("Hannah", "U. Maier")."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    words: set[str] = set()
    for line in reversed(lines[1:]):
        parts = line.split()
        if len(parts) > 4 or not all(p[:1].isupper() and p.replace(".", "").replace("-", "").isalpha() for p in parts):
            break
        folded = normalise(line).split()
        if any(_in(w, rules.thanks) for w in folded):
            break
        words.update(folded)
    return words


def _alone(text: str, doc: _Doc, cues: list[_Cue], rules: IntentRules, fast: bool = True) -> bool:
    """True when the reply says nothing besides weak cues, greetings, sign-offs and the sender's name."""
    chars = list(doc.text)
    for cue in cues:
        if cue.rule.alone:
            chars[cue.start : cue.end] = " " * (cue.end - cue.start)
    rest = "".join(chars)
    fillers = rules.filler_union.pattern_for(rest) if fast and rules.filler_union else rules.fillers
    if fillers:
        rest = fillers.sub(" ", rest)
    names = _name_lines(text, rules)
    return all(w in names for w in _WORD.findall(rest))


def _find_cues(doc: _Doc, rules: IntentRules, fast: bool = True) -> list[_Cue]:
    owner = [-1] * (len(doc.text) + 1)
    for i, t in enumerate(doc.tokens):
        owner[t.start : t.end] = [i] * (t.end - t.start)
    cues: list[_Cue] = []
    for rule, parts in _parts(rules, doc.text, rules.cue_filter if fast else None):
        if rule.role == "mask":
            continue
        spans = {m.span() for part in parts for m in part.finditer(doc.text)}
        for start, end in sorted(spans):
            covered = [owner[k] for k in range(start, end) if owner[k] >= 0]
            if covered:
                first, last = min(covered), max(covered)
                cues.append(_Cue(rule, doc.tokens[first].start, doc.tokens[last].end, first, last))
    return cues


def _negate(cues: list[_Cue], doc: _Doc, rules: IntentRules) -> None:
    """Each cue's effect after negation; a longer cancel/hedge/question phrase swallows a confirm in it."""
    for cue in cues:
        cue.negator = None if cue.rule.negation == "none" else _scan_negation(cue, doc, rules, cues)
        cue.effect = cue.rule.role
        if cue.negator is not None:
            cue.effect, cue.why = cue.rule.negated, "negated"
        if cue.effect == "cancel" and (cue.negator is not None or cue.rule.delayable) and _delayed(cue, doc, rules):
            cue.effect, cue.why = "hedge", "negated with a delay"
    for cue in cues:
        if cue.effect == "confirm" and any(
            o.effect in ("cancel", "hedge", "question", "injection")
            and o.start <= cue.start < o.end
            and (o.start < cue.start or o.end > cue.end)
            for o in cues
        ):
            cue.effect, cue.why = IGNORED, "part of a longer phrase"


def _situate(cues: list[_Cue], doc: _Doc, rules: IntentRules) -> None:
    """Subordinate clauses, stray negations and questions around each cue."""
    tokens = doc.tokens
    bound = {c.negator for c in cues if c.negator is not None}
    in_cue = {i for c in cues for i in range(c.first, c.last + 1)}
    free = [
        i
        for i, t in enumerate(tokens)
        if t.word and i not in bound and i not in in_cue and _in(t.text, rules.negators) and not _exempt(doc, i, rules)
    ]
    bridges = rules.bridges or frozenset().union(*(lx.bridges for lx in rules.lexicons.values()))
    for cue in cues:
        tok = tokens[cue.first]
        clause_before = doc.text[doc.clause_start(cue.first) : cue.start]
        subordinate = [rules.subordinators.get(lang) for lang in (cue.rule.language, "*")]
        if cue.effect in ("confirm", "cancel") and any(rx and rx.search(clause_before) for rx in subordinate):
            cue.effect, cue.why = IGNORED, "in a before/if clause"
            continue
        if cue.effect == "confirm" and cue.rule.negation == "any":
            nearby = [i for i in free if tokens[i].sentence == tok.sentence]
            if any(i < cue.first and _dangling(doc, i, bridges) for i in nearby):
                cue.effect, cue.why = cue.rule.negated, "after an interrupted negation"
            elif any(tokens[i].clause == tok.clause for i in nearby):
                cue.effect, cue.why = "hedge", "a negation in the same clause"
        in_question = cue.effect in ("confirm", "cancel") and tok.sentence in doc.questions
        if in_question and (cue.effect == "confirm" or cue.rule.in_question == "drop"):
            cue.effect, cue.why = IGNORED, "inside a question"


def _weigh(text: str, cues: list[_Cue], doc: _Doc, rules: IntentRules, fast: bool = True) -> None:
    """Weak cues need to stand alone, answer particles yield to a cancel, a mind changed back yields."""
    strong = any(c.effect == "confirm" and not c.rule.alone for c in cues)
    if not strong and not _alone(text, doc, cues, rules, fast):
        for cue in cues:
            if cue.rule.alone and cue.effect == "confirm":
                cue.effect, cue.why = IGNORED, "not on its own"
    sentence = {id(c): doc.tokens[c.first].sentence for c in cues}
    for cue in cues:
        if (
            cue.rule.particle
            and cue.effect == "confirm"
            and any(c.effect == "cancel" and sentence[id(c)] == sentence[id(cue)] for c in cues)
        ):
            cue.effect, cue.why = IGNORED, "an answer particle before a cancel"
    confirms = [c for c in cues if c.effect == "confirm"]
    if rules.reversal and confirms:
        for cue in cues:
            if (
                cue.rule.reversible
                and cue.effect == "cancel"
                and any(
                    c.start > cue.start and rules.reversal.search(doc.sentence_text(sentence[id(c)])) for c in confirms
                )
            ):
                cue.effect, cue.why = IGNORED, "changed the mind back"


def _combine(effects: set[str]) -> Intent:
    """The policy: meta-instructions and contradictions go to a person, so does any question (even
    beside a cancel: a person answers it and cancels); any doubt blocks a confirm."""
    if "injection" in effects:
        return Intent.NONE
    if "confirm" in effects and "cancel" in effects:
        return Intent.NONE
    if "question" in effects:
        return Intent.QUESTION
    if "cancel" in effects:
        return Intent.CANCEL
    if "confirm" in effects and "hedge" not in effects:
        return Intent.CONFIRM
    return Intent.NONE


def classify_text(text: str, rules: IntentRules, *, prefilter: bool = True) -> Classification:
    """Classify the customer's new text; pure, no I/O. See the module docstring for the policy.

    ``prefilter=False`` runs every rule part instead of those whose literals occur in the text: the
    same result, slower (the reference the fast path is tested against).
    """
    notes: list[str] = []
    long = len(text) > MAX_CHARS
    norm = normalise(text[:MAX_CHARS], rules.spelling or {**rules.fuzzy, **rules.typos})
    masked, hits = _mask(norm, rules, prefilter)
    doc = _document(masked, rules)
    cues = _find_cues(doc, rules, prefilter)
    _negate(cues, doc, rules)
    _situate(cues, doc, rules)
    _weigh(text[:MAX_CHARS], cues, doc, rules, prefilter)

    seen: set[tuple[int, int, str]] = set()
    for cue in sorted(cues, key=lambda c: (c.start, c.end)):
        key = (cue.start, cue.end, cue.rule.id)
        if cue.effect == "neutral" or key in seen:
            continue
        seen.add(key)
        neg = doc.tokens[cue.negator] if cue.negator is not None else None
        start = neg.start if neg and neg.start < cue.start else cue.start
        end = neg.end if neg and neg.end > cue.end else cue.end
        hits.append(RuleHit(cue.rule.id, cue.effect, masked[start:end], cue.rule.language))
        note = f"'{masked[cue.start : cue.end]}' {cue.why}"
        if cue.why and cue.effect == IGNORED and note not in notes:
            notes.append(note)

    intent = _combine({c.effect for c in cues})
    if intent is Intent.CONFIRM and format_chars(text):
        intent = Intent.NONE
        notes.append("hidden format characters: never a confirm")
    if intent is Intent.CONFIRM and long:
        intent = Intent.NONE
        notes.append(f"longer than {MAX_CHARS} characters: read only in part, never a confirm")
    hits.sort(key=lambda h: h.role == IGNORED)
    return Classification(intent, hits, notes)


_HIT_FIELDS = fields(RuleHit)


class Classify:
    name = "classify"
    description = "confirm | cancel | question | none from the reply text, with the rules that fired."

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        rules = ctx.rules.get(self.name)
        if not isinstance(rules, IntentRules):
            facts.intent, facts.rule_hits = Intent.NONE, []
            return Evidence(self.name, False, "none: no intent rules loaded", {"intent": "none", "rules": []})
        if not facts.readable:
            facts.intent, facts.rule_hits = Intent.NONE, []
            return Evidence(self.name, False, "none: reply not readable safely", {"intent": "none", "rules": []})
        result = classify_text(facts.reply_text, rules)
        facts.intent, facts.rule_hits = result.intent, list(result.hits)
        rules_hit = [{f.name: getattr(h, f.name) for f in _HIT_FIELDS} for h in result.hits]  # asdict, flat
        data = {"intent": result.intent.value, "rules": rules_hit, "notes": result.notes}
        return Evidence(self.name, result.intent is not Intent.NONE, result.detail(), data)
