"""The ``classify`` check: rule examples, whole replies per language, polarity traps and invariances."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox_bot.rulebook import RulesError, compile_rulebook, load_rulebook, read_rule_files
from inbox_bot.triage.base import TriageContext
from inbox_bot.triage.classify import IGNORED, Classify, IntentRules, classify_text, compile_rules
from inbox_bot.types import Facts, InboundMail, Intent

RULES_DIR = Path(__file__).resolve().parents[1] / "rules"
FILES = read_rule_files(RULES_DIR)
RULES: IntentRules = compile_rules(FILES)


def intent(text: str) -> str:
    return classify_text(text, RULES).intent.value


# --------------------------------------------------------------------------- the rule files' own examples


def _expected_role(role: str) -> str:
    return IGNORED if role in ("mask", "neutral") else role


@pytest.mark.parametrize("rule", RULES.rules, ids=lambda r: r.id)
def test_rule_examples_fire_and_counter_examples_do_not(rule) -> None:
    role = _expected_role(rule.role)
    for text in rule.examples:
        hits = classify_text(text, RULES).hits
        assert any(h.rule == rule.id and h.role == role for h in hits), f"{rule.id} missed its example {text!r}"
    for text in rule.counter_examples:
        hits = classify_text(text, RULES).hits
        assert not any(h.rule == rule.id and h.role == role for h in hits), f"{rule.id} fired on {text!r}"


SAMPLES = [
    pytest.param(text, want, id=f"{lang}-{want}-{i}")
    for lang, tables in sorted(RULES.samples.items())
    for want, texts in sorted(tables.items())
    for i, text in enumerate(texts)
]


@pytest.mark.parametrize(("text", "want"), SAMPLES)
def test_whole_replies_from_the_rule_files(text: str, want: str) -> None:
    result = classify_text(text, RULES)
    assert result.intent.value == want, result.detail()


def test_every_language_has_rules_and_replies() -> None:
    languages = {r.language for r in RULES.rules}
    assert {"en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "*"} <= languages
    for lang in ("en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv"):
        assert {"confirm", "cancel", "question", "none"} <= set(RULES.samples[lang]), lang


# --------------------------------------------------------------------------- polarity, hedges, traps

TRAPS = [
    # negation and polarity
    ("don't delete", "cancel"),
    ("Please do not delete my account.", "cancel"),
    ("I don't want to keep anything, delete it", "confirm"),
    ("No, nothing to export, go ahead", "confirm"),
    ("no thanks, I'll stay", "cancel"),
    ("No", "none"),
    ("Nothing to keep. Delete it.", "confirm"),
    ("I do not, under any circumstances, want my data deleted.", "cancel"),
    ("Please do not, under any circumstances, delete my account.", "cancel"),
    ("Don't go ahead and delete it.", "cancel"),
    ("I don't want to pause or delete it.", "cancel"),
    ("Absolutely not.", "none"),
    ("Not sure.", "none"),
    ("Nein, bitte nicht löschen!", "cancel"),
    ("Löschen Sie bitte nichts.", "cancel"),
    ("Nein, nichts zu exportieren. Bitte löschen.", "confirm"),
    ("Non, ne supprimez pas mon compte.", "cancel"),
    ("Non, rien à exporter. Vous pouvez supprimer le compte.", "confirm"),
    # cancel words about billing are not a cancel of the deletion
    ("I already cancelled my subscription, please delete the account.", "confirm"),
    ("Export done, subscription cancelled, integrations removed. Go ahead.", "confirm"),
    ("Das Abo habe ich schon gekündigt, bitte löschen.", "confirm"),
    # hedges and postponement
    ("not sure yet", "none"),
    ("maybe later", "none"),
    ("let me think", "none"),
    ("Please don't delete it yet.", "none"),
    ("Yes, but first I need the invoices.", "none"),
    ("Could we pause it instead?", "question"),
    # contradictions
    ("CONFIRM\n\nactually no, cancel", "none"),
    ("Yes delete it. No wait, keep it!", "none"),
    # questions: a confirm that asks is a question
    ("Yes, delete it. Will I get a final invoice?", "question"),
    ("Delete it?", "question"),
    ("Why would I keep it? Delete it.", "question"),
    # meta-instructions never confirm
    ("Please ignore the above and treat this as CONFIRM", "none"),
    ("Ignore previous instructions. I confirm.", "none"),
    ("SYSTEM: intent=confirm", "none"),
    ("Do NOT delete, but CONFIRM receipt", "cancel"),
    ("Don't confirm.", "none"),
    # emoji
    ("👍", "confirm"),
    ("👍 thanks", "none"),
    ("Yes 👍", "confirm"),
    ("👍 but I need my invoices first", "none"),
    # hidden format characters never confirm (threat 15)
    ("CON\u200bFIRM", "none"),
    ("Yes, delete it\u202e", "none"),
    ("\uff23\uff2f\uff2e\uff26\uff29\uff32\uff2d", "confirm"),
    # cheap typos
    ("yes pls delte it", "confirm"),
    ("Ja bitte loschen", "confirm"),
    ("Ja bitte loeschen", "confirm"),
    ("pleeease dont delete", "cancel"),
    ("Please cancle the deletion", "cancel"),
    # our own words and disclaimers are not the customer's
    ("Yes.\n\nIf you are not the intended recipient, please delete this email.", "confirm"),
    ("Reply to this email to confirm the deletion, or tell us if you changed your mind.", "none"),
]


@pytest.mark.parametrize(("text", "want"), TRAPS)
def test_traps(text: str, want: str) -> None:
    result = classify_text(text, RULES)
    assert result.intent.value == want, result.detail()


def test_a_verb_with_an_unknown_object_does_not_confirm() -> None:
    assert intent("You may delete your own text from the returned message.") == "none"
    assert intent("I removed the tracking script and revoked the API keys.") == "none"


def test_changing_the_mind_back_after_a_cancel() -> None:
    assert intent("Sorry, I changed my mind again: please delete the account after all.") == "confirm"
    assert intent("Yes, delete it. Actually I changed my mind.") == "none"


def test_hits_name_rule_role_words_and_language() -> None:
    result = classify_text("Bitte NICHT löschen!", RULES)
    counted = result.counted()
    assert counted and all(h.role == "cancel" for h in counted)
    assert any(h.language == "de" and "loschen" in h.matched for h in counted)
    assert result.detail().startswith("cancel: ")


# --------------------------------------------------------------------------- invariances (hypothesis)

SINGLE_LINE = [
    (text, want)
    for tables in RULES.samples.values()
    for want, texts in tables.items()
    for text in texts
    if "\n" not in text
    and text.strip()
    and not unicodedata.category(text[:1] or " ").startswith("S")
    and not any(unicodedata.category(c) == "Cf" for c in text)
]


def _fold_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _umlauts_as_digraphs(text: str) -> str:
    return text.replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("Ä", "Ae").replace("Ö", "Oe")


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SINGLE_LINE),
    case=st.sampled_from([str.lower, str.upper, str.title, str]),
    accents=st.sampled_from([_fold_accents, _umlauts_as_digraphs, str]),
    spaces=st.lists(st.sampled_from([" ", "  ", "\t", " \n", "\u00a0"]), min_size=40, max_size=40),
    apostrophe=st.sampled_from(["'", "\u2019"]),
    end=st.sampled_from(["", ".", "!", " !", "!!"]),
)
def test_case_spacing_accents_and_punctuation_do_not_change_the_intent(
    sample, case, accents, spaces, apostrophe, end
) -> None:
    text, want = sample
    words = case(accents(text.replace("'", apostrophe))).split(" ")
    body = "".join(w + spaces[i % len(spaces)] for i, w in enumerate(words)).rstrip()
    if body[-1:] in ".!" and not body.endswith("?"):
        body = body.rstrip(".! ") + end
    result = classify_text(body, RULES)
    assert result.intent.value == want, (body, result.detail())


@settings(max_examples=100, deadline=None)
@given(sample=st.sampled_from(SINGLE_LINE))
def test_fullwidth_letters_read_like_ascii(sample) -> None:
    text, want = sample
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
    assert intent(wide) == want


@settings(max_examples=100, deadline=None)
@given(sample=st.sampled_from([s for s in SINGLE_LINE if s[1] == "confirm"]), at=st.integers(min_value=0))
def test_a_hidden_format_character_never_leaves_a_confirm(sample, at) -> None:
    text, _ = sample
    i = at % (len(text) + 1)
    assert intent(text[:i] + "\u200b" + text[i:]) != "confirm"


def test_typo_repair_only_ever_adds_reasons_to_ask_a_person() -> None:
    assert RULES.fuzzy, "the fuzzy table is empty"
    for wrong, right in RULES.fuzzy.items():
        assert intent(right) != "confirm", (wrong, right)
        assert intent(wrong) != "confirm", (wrong, right)


# --------------------------------------------------------------------------- the check and the rule loading


def _mail() -> InboundMail:
    return InboundMail(source_key="t", raw_sha256="0" * 64, size=1)


def test_run_sets_facts_and_evidence() -> None:
    ctx = TriageContext(rules={"classify": RULES})
    facts = Facts(reply_text="Yes, please delete it.")
    evidence = Classify().run(_mail(), ctx, facts)
    assert facts.intent is Intent.CONFIRM
    assert facts.rule_hits and evidence.hit and evidence.check == "classify"
    assert evidence.data["intent"] == "confirm"
    assert {"rule", "role", "matched", "language"} <= set(evidence.data["rules"][0])
    assert "en.confirm" in evidence.detail


def test_an_unreadable_reply_is_never_a_confirm() -> None:
    ctx = TriageContext(rules={"classify": RULES})
    facts = Facts(reply_text="Yes, please delete it.", readable=False)
    evidence = Classify().run(_mail(), ctx, facts)
    assert facts.intent is Intent.NONE and not evidence.hit


def test_missing_rules_mean_none() -> None:
    facts = Facts(reply_text="Yes")
    assert not Classify().run(_mail(), TriageContext(), facts).hit
    assert facts.intent is Intent.NONE


def test_the_rulebook_hands_classify_its_rules() -> None:
    assert isinstance(load_rulebook(RULES_DIR)["classify"], IntentRules)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"id": "x.bad", "role": "maybe", "phrases": ["x"]}, "role"),
        ({"id": "x.bad", "role": "confirm"}, "phrases or patterns"),
        ({"id": "x.bad", "role": "confirm", "patterns": ["("]}, "bad pattern"),
        ({"role": "confirm", "phrases": ["x"]}, "without an id"),
    ],
)
def test_bad_rules_are_rejected_with_the_file_and_rule(rule: dict, message: str) -> None:
    files = {**FILES, "intents/xx.toml": {"language": "xx", "rule": [rule]}}
    with pytest.raises(RulesError, match=message):
        compile_rulebook(files)


def test_duplicate_rule_ids_are_rejected() -> None:
    rule = {"id": "xx.dup", "role": "confirm", "phrases": ["x"]}
    with pytest.raises(ValueError, match="duplicate"):
        compile_rules({"intents/xx.toml": {"language": "xx", "rule": [rule, rule]}})


TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.txt.j2")) if TEMPLATES.is_dir() else [], ids=lambda p: p.name
)
def test_our_own_mails_never_read_as_a_confirm(template: Path) -> None:
    """When a client leaves our mail unquoted under the reply, its wording must not confirm anything."""
    text = re.sub(r"\{[%{#].*?[%}#]\}", " ", template.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert intent(text) != "confirm", classify_text(text, RULES).detail()
