"""The labelled sample corpus end to end through the command line, as the team measures it.

Runs tests/data/tools/corpus_harness.py (a copy of shared/tools/corpus_harness.py): it adds every
request, brings it to its state with the staff commands, delivers the mails into the Maildir,
runs `poll --once` and scores `messages list --json`. (sample2 runs in-process in test_evaluate.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import CORPUS, DATA, bot_executable

MIN_ACCURACY = 0.97


def run_harness(corpus: str, *extra: str, env: dict | None = None) -> dict:
    """Run the harness on a corpus of tests/data/corpus and return its JSON result."""
    proc = subprocess.run(
        [sys.executable, str(DATA / "tools" / "corpus_harness.py"), str(CORPUS / corpus), "--bot", bot_executable(),
         "--json", "--min-acc", str(MIN_ACCURACY), *extra],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.stdout, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def assert_safe_and_accurate(res: dict, label: str) -> None:
    """Print the figures, then hold the line: no false erasure, no missed cancel, nothing twice."""
    print(f"\n{label}: action accuracy {res['accuracy']:.3f} ({res['correct']}/{res['cases']}), "
          f"false erasures {len(res['false_erasures'])}, missed cancels {len(res['missed_cancels'])}")
    for row in res["wrong"]:
        print(f"  {row['id']}: want {row['want']} got {row['got']} (intent {row['intent']} vs {row['want_intent']})")
    assert res["setup_failures"] == 0, res["wrong"]
    assert res["false_erasures"] == []
    assert res["missed_cancels"] == []
    assert res["acted_twice"] == [] and res["duplicate_mails"] == []
    assert res["accuracy"] >= MIN_ACCURACY


def test_sample_corpus_end_to_end() -> None:
    assert_safe_and_accurate(run_harness("sample"), "sample via Maildir")
