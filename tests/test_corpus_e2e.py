"""The labelled sample corpora end to end through the command line, as the team measures it.

Runs tests/data/tools/corpus_harness.py (a copy of shared/tools/corpus_harness.py): it adds every
request, brings it to its state with the staff commands, delivers the mails into the Maildir,
runs `poll --once` and scores `messages list --json`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import CORPUS, DATA, bot_executable

MIN_ACCURACY = 0.85


@pytest.mark.parametrize("corpus", ["sample"])  # sample2 runs in-process in tests/test_evaluate.py
def test_corpus_end_to_end(corpus: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(DATA / "tools" / "corpus_harness.py"), str(CORPUS / corpus), "--bot", bot_executable(),
         "--json", "--min-acc", str(MIN_ACCURACY)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.stdout, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    print(f"\n{corpus}: action accuracy {res['accuracy']:.3f} ({res['correct']}/{res['cases']}), "
          f"false erasures {len(res['false_erasures'])}, missed cancels {len(res['missed_cancels'])}")
    for row in res["wrong"]:
        print(f"  {row['id']}: want {row['want']} got {row['got']} (intent {row['intent']} vs {row['want_intent']})")
    assert res["setup_failures"] == 0, res["wrong"]
    assert res["false_erasures"] == []
    assert res["missed_cancels"] == []
    assert res["acted_twice"] == [] and res["duplicate_mails"] == []
    assert res["accuracy"] >= MIN_ACCURACY
