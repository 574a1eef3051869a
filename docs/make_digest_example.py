"""Re-render docs/digest-example.{html,txt} and docs/sla-escalation.html from a made-up Monday.

Run from the repository root: ``.venv/bin/python docs/make_digest_example.py``. The screenshots
(docs/digest.png, docs/sla-escalation.png) were taken from these files with headless Chromium:
``chromium --headless --no-sandbox --screenshot=docs/digest.png --window-size=900,1450 file://...``.
"""

from __future__ import annotations

import email
import email.policy
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlmodel import select

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import build_config
from inbox_bot.digest import render_digest
from inbox_bot.store.db import transaction
from inbox_bot.store.models import DeletionRequest, OutboxMail

BERLIN = ZoneInfo("Europe/Berlin")
DOCS = Path(__file__).resolve().parent


class Clock:
    now = datetime(2026, 12, 3, 10, 0, tzinfo=BERLIN)

    def __call__(self) -> datetime:
        return self.now


def main() -> None:
    clock = Clock()
    cfg = build_config({"sla": {"holidays": {"country": "DE", "subdivision": "BE"}}}, Path(tempfile.mkdtemp()))
    app = App(cfg, clock=clock)

    def add(at: datetime, addr: str, note: str = "") -> int:
        clock.now = at
        return commands.add_request(app, addr, "acc_" + addr.split("@")[0], note, "staff:demo")["id"]

    lena = add(datetime(2026, 12, 3, 10, 0, tzinfo=BERLIN), "lena.fischer@example.de", "Wir wechseln das Tool.")
    with transaction(app.engine) as s:
        app.workflow.flag(s, s.get(DeletionRequest, lena), reason="reply asks a question", now=clock.now,
                          suggestion="Answer the question by hand, then send the ask again.",
                          evidence=["auto_generated: miss - no auto-reply headers",
                                    "match: HIT - In-Reply-To names our receipt",
                                    "sender: HIT - dmarc=pass aligned (mx.clickport.io)",
                                    "classify: question - 'can I' + '?'"],
                          reply_text="Before you delete it: can I still download my invoices for the tax office?\n"
                                     "Thanks, Lena")
    add(datetime(2026, 12, 4, 15, 0, tzinfo=BERLIN), "sam@example.com")
    add(datetime(2026, 12, 7, 8, 10, tzinfo=BERLIN), "ops@example.org", "closing the company")
    for addr, action in (("jo@example.net", "ask"), ("kim@example.net", "cancel"), ("max@example.net", "confirm")):
        rid = add(datetime(2026, 12, 4, 9, 0, tzinfo=BERLIN), addr)
        commands.staff_transition(app, action, rid, "staff:demo", "by phone")
    clock.now = datetime(2026, 12, 7, 9, 0, tzinfo=BERLIN)
    with transaction(app.engine) as s:
        app.workflow.flag(s, None, now=clock.now,
                          reason="intake notification failed verification: no trusted dkim/spf pass for "
                                 "app@clickport.io",
                          suggestion="Check with the app team whether they sent it; do not act on it otherwise.",
                          evidence=["sender: miss - Authentication-Results from mx.clickport.io: dkim=fail"])
    clock.now = datetime(2026, 12, 7, 11, 0, tzinfo=BERLIN)
    app.check_sla()
    parts = render_digest(app.engine, app.sla_watch, clock.now)
    (DOCS / "digest-example.html").write_text(parts["html"], encoding="utf-8")
    (DOCS / "digest-example.txt").write_text(f"Subject: {parts['subject']}\n\n{parts['txt']}", encoding="utf-8")
    with transaction(app.engine) as s:
        row = s.exec(select(OutboxMail).where(OutboxMail.kind == "sla_escalation")).first()
    msg = email.message_from_bytes(row.raw, policy=email.policy.default)
    (DOCS / "sla-escalation.html").write_text(msg.get_body(preferencelist=("html",)).get_content(), encoding="utf-8")


if __name__ == "__main__":
    main()
