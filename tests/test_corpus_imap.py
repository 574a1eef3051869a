"""The labelled sample corpus end to end through IMAP: the harness APPENDs every reply to a private
Dovecot (tests/data/tools/dovecot-sandbox, a copy of shared/tools/) and runs `poll --once` against it.

The same floor as the Maildir run (tests/test_corpus_e2e.py): the source must not change a decision.
A separate file from tests/test_imap.py because the harness drives the CLI for every request (slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import CORPUS, DATA, bot_executable
from tests.dovecot import _tool
from tests.test_corpus_e2e import MIN_ACCURACY


def test_sample_corpus_through_imap() -> None:
    assert _tool("dovecot"), "the IMAP corpus run needs Dovecot: apt-get update && apt-get install -y dovecot-imapd"
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    proc = subprocess.run(
        [sys.executable, str(DATA / "tools" / "corpus_harness.py"), str(CORPUS / "sample"), "--bot", bot_executable(),
         "--imap", "--json", "--min-acc", str(MIN_ACCURACY)],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.stdout, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    print(f"\nsample via IMAP: action accuracy {res['accuracy']:.3f} ({res['correct']}/{res['cases']}), "
          f"false erasures {len(res['false_erasures'])}, missed cancels {len(res['missed_cancels'])}")
    for row in res["wrong"]:
        print(f"  {row['id']}: want {row['want']} got {row['got']} (intent {row['intent']} vs {row['want_intent']})")
    assert res["setup_failures"] == 0, res["wrong"]
    assert res["false_erasures"] == []
    assert res["missed_cancels"] == []
    assert res["acted_twice"] == [] and res["duplicate_mails"] == []
    assert res["accuracy"] >= MIN_ACCURACY
