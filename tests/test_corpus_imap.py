"""The labelled sample corpus end to end through IMAP: the harness APPENDs every reply to a private
Dovecot (tests/data/tools/dovecot-sandbox, a copy of shared/tools/) and runs `poll --once` against it.

The same floor as the Maildir run (tests/test_corpus_e2e.py): the source must not change a decision.
A separate file from tests/test_imap.py because the harness drives the CLI for every request (slow).
"""

from __future__ import annotations

import os

from tests.dovecot import _tool
from tests.test_corpus_e2e import assert_safe_and_accurate, run_harness


def test_sample_corpus_through_imap() -> None:
    assert _tool("dovecot"), "the IMAP corpus run needs Dovecot: apt-get update && apt-get install -y dovecot-imapd"
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    assert_safe_and_accurate(run_harness("sample", "--imap", env=env), "sample via IMAP")
