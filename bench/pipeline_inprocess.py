"""The pipeline's own cost per message, without IMAP: a quick A/B while working on throughput.

The same realistic replies as ``imap_throughput.py`` (same generator, same 500 asked requests) go
through ``parse_mail`` + one commit per message (the ceiling's work, minus the fetch) and through
``Pipeline.process_one`` (parse, triage, act, commit), alternating in blocks of 250 so that machine
drift hits both alike. Prints ms per message for each and their ratio, which tracks the end-to-end
ratio of ``imap_throughput.py`` within a couple of points in about a minute instead of 3.5.

    .venv/bin/python bench/pipeline_inprocess.py [--messages 6000] [--requests 500] [--seed 4]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from imap_throughput import CeilingRow, realistic_reply, setup_requests  # noqa: E402
from sqlmodel import Session, SQLModel, create_engine  # noqa: E402

from inbox_bot.app import App  # noqa: E402
from inbox_bot.config import build_config  # noqa: E402
from inbox_bot.mail.parse import parse_mail  # noqa: E402
from inbox_bot.mail.sources import SourceItem  # noqa: E402

BLOCK = 250


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=6000)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--seed", type=int, default=4)
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rnd = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="pipeline-bench-", dir="/tmp"))
    (work / "bot").mkdir()
    app = App(build_config({"erasure": {"cooling_off": "1h"}, "database": {"url": "sqlite:///state.db"}},
                           work / "bot"))
    threads = setup_requests(app, a.requests)
    raws = [realistic_reply(i, *threads[rnd.randrange(len(threads))], rnd) for i in range(a.messages)]
    engine = create_engine(f"sqlite:///{work / 'ceiling.db'}")
    SQLModel.metadata.create_all(engine, tables=[CeilingRow.__table__])
    with engine.connect() as c:
        c.exec_driver_sql("PRAGMA journal_mode=WAL")
    ceiling = pipeline = 0.0
    for start in range(0, len(raws), BLOCK):
        block = range(start, min(len(raws), start + BLOCK))
        t0 = time.perf_counter()
        for i in block:
            mail = parse_mail(raws[i], f"ceiling:{i}")
            with Session(engine) as s:
                s.add(CeilingRow(message_id=mail.message_id, sha=mail.raw_sha256))
                s.commit()
        t1 = time.perf_counter()
        for i in block:
            app.pipeline.process_one(SourceItem(key=f"bench:{i}", raw=raws[i], size=len(raws[i])))
        ceiling, pipeline = ceiling + t1 - t0, pipeline + time.perf_counter() - t1
    n = len(raws)
    print(f"{n} replies: parse + commit {ceiling / n * 1000:.2f} ms/message, process_one "
          f"{pipeline / n * 1000:.2f} ms/message, ratio {ceiling / pipeline:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
