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
from dataclasses import asdict, dataclass, field
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
        table = {**(fuzzy or {}), **(typos or {})}
        text = _WORD.sub(lambda m: table.get(m.group(), m.group()), text)
    return text


def _in(word: str, words: frozenset[str]) -> bool:
    """Membership that forgives stretched letters ("nooo" was shortened to "noo", "no" is meant)."""
    return word in words or _RUNS_2.sub(r"\1", word) in words


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
    return IntentRules(
        rules=tuple(rules),
        lexicons=lexicons,
        typos=typos,
        fuzzy=_fuzzy_table(specs, known),
        negators=frozenset().union(*(lx.negators | lx.post_negators for lx in lexicons.values())),
        boundaries=frozenset().union(*(lx.boundaries for lx in lexicons.values())),
        interjections=frozenset().union(*(lx.interjections for lx in lexicons.values())),
        please=frozenset().union(*(lx.please | lx.thanks for lx in lexicons.values())),
        thanks=frozenset().union(*(lx.thanks for lx in lexicons.values())),
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


def _mask(text: str, rules: IntentRules) -> tuple[str, list[RuleHit]]:
    """Blank out the spans of ``mask`` rules (disclaimers, "cancel my subscription", URLs...).

    A pattern with a group named ``mask`` blanks only that group, keeping its context readable.
    """
    chars = list(text)
    hits: list[RuleHit] = []
    found = [
        (rule, m) for rule in rules.rules if rule.role == "mask" for part in rule.parts for m in part.finditer(text)
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
    return frozenset().union(*(getattr(lx, name) for lx in rules.lexicon(language)))


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


def _alone(text: str, doc: _Doc, cues: list[_Cue], rules: IntentRules) -> bool:
    """True when the reply says nothing besides weak cues, greetings, sign-offs and the sender's name."""
    chars = list(doc.text)
    for cue in cues:
        if cue.rule.alone:
            chars[cue.start : cue.end] = " " * (cue.end - cue.start)
    rest = "".join(chars)
    if rules.fillers:
        rest = rules.fillers.sub(" ", rest)
    names = _name_lines(text, rules)
    return all(w in names for w in _WORD.findall(rest))


def _find_cues(doc: _Doc, rules: IntentRules) -> list[_Cue]:
    owner = [-1] * (len(doc.text) + 1)
    for i, t in enumerate(doc.tokens):
        owner[t.start : t.end] = [i] * (t.end - t.start)
    cues: list[_Cue] = []
    for rule in rules.rules:
        if rule.role == "mask":
            continue
        spans = {m.span() for part in rule.parts for m in part.finditer(doc.text)}
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
    bridges = frozenset().union(*(lx.bridges for lx in rules.lexicons.values()))
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


def _weigh(text: str, cues: list[_Cue], doc: _Doc, rules: IntentRules) -> None:
    """Weak cues need to stand alone, answer particles yield to a cancel, a mind changed back yields."""
    strong = any(c.effect == "confirm" and not c.rule.alone for c in cues)
    if not strong and not _alone(text, doc, cues, rules):
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


def classify_text(text: str, rules: IntentRules) -> Classification:
    """Classify the customer's new text; pure, no I/O. See the module docstring for the policy."""
    notes: list[str] = []
    long = len(text) > MAX_CHARS
    norm = normalise(text[:MAX_CHARS], rules.typos, rules.fuzzy)
    masked, hits = _mask(norm, rules)
    doc = _document(masked, rules)
    cues = _find_cues(doc, rules)
    _negate(cues, doc, rules)
    _situate(cues, doc, rules)
    _weigh(text[:MAX_CHARS], cues, doc, rules)

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
        data = {"intent": result.intent.value, "rules": [asdict(h) for h in result.hits], "notes": result.notes}
        return Evidence(self.name, result.intent is not Intent.NONE, result.detail(), data)
