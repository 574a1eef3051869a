"""Intent accuracy on the labelled sample corpora, through the real triage chain (reply, then classify).

Prints a confusion matrix and every wrong case (run with ``-s`` to see them). The hard guarantees are
the safety ones: nothing that is not a confirm is read as a confirm, and no cancel ever becomes a
confirm. The accuracy floor is what the rules honestly reach on both samples.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from inbox_bot.mail.parse import parse_mail
from inbox_bot.rulebook import load_rulebook
from inbox_bot.triage import TriageContext, triage
from inbox_bot.types import Intent

ROOT = Path(__file__).resolve().parents[1]
CORPORA = [ROOT / "tests" / "data" / "corpus", ROOT.parent / "shared" / "corpus"]
INTENTS = [i.value for i in Intent]
MIN_ACCURACY = 0.95


def _corpus(name: str) -> Path:
    for base in CORPORA:
        if (base / name / "labels.jsonl").is_file():
            return base / name
    pytest.skip(f"corpus {name} not found")


@pytest.fixture(scope="module")
def ctx() -> TriageContext:
    return TriageContext(rules=load_rulebook(ROOT / "rules"))


def _run(corpus: Path, ctx: TriageContext) -> list[tuple[dict, Intent, str]]:
    rows = []
    for line in (corpus / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        path = corpus / case["file"]
        decision = triage(parse_mail(path.read_bytes(), str(path)), ctx)
        detail = next((e.detail for e in decision.evidence if e.check == "classify"), "")
        rows.append((case, decision.intent, detail))
    return rows


def _report(name: str, rows: list[tuple[dict, Intent, str]]) -> float:
    confusion = Counter((case["expected_intent"], got.value) for case, got, _ in rows)
    right = sum(n for (want, got), n in confusion.items() if want == got)
    accuracy = right / len(rows)
    print(f"\n{name}: intent accuracy {accuracy:.3f} ({right}/{len(rows)})")
    print("want \\ got " + "".join(f"{i:>10}" for i in INTENTS))
    for want in INTENTS:
        print(f"{want:>11}" + "".join(f"{confusion[(want, got)]:>10}" for got in INTENTS))
    for case, got, detail in rows:
        if got.value != case["expected_intent"]:
            print(f"  WRONG {case['id']}: want {case['expected_intent']}, got {got.value} :: {detail}")
    return accuracy


@pytest.mark.parametrize("name", ["sample", "sample2"])
def test_intent_on_corpus(name: str, ctx: TriageContext) -> None:
    rows = _run(_corpus(name), ctx)
    accuracy = _report(name, rows)
    false_confirms = [c["id"] for c, got, _ in rows if got is Intent.CONFIRM and c["expected_intent"] != "confirm"]
    cancels_lost = [c["id"] for c, got, _ in rows if c["expected_intent"] == "cancel" and got is Intent.CONFIRM]
    assert false_confirms == [], "read as a confirm although it is not one"
    assert cancels_lost == [], "a cancel read as a confirm"
    assert accuracy >= MIN_ACCURACY
