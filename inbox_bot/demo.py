"""``inbox-bot demo``: the whole flow on a throw-away embedded setup, told step by step.

Five customers ask to delete their account; the bot asks them to confirm; they answer (a
confirmation, a change of mind, a question, an out-of-office, and a forged confirmation from
someone else); the bot decides, with its evidence; the confirmed erasure runs.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import build_config
from inbox_bot.mail.samples import build_reply, last_sent
from inbox_bot.sample_app import KEPT_TABLES, SampleApp, create_sample_app, footprint, site_ids, table_sizes

SPOOFED = "mx.clickport.io; dkim=pass header.d=evil.example; spf=fail smtp.mailfrom=evil.example; dmarc=fail"

CUSTOMERS = [
    ("ana.ruiz@example.net", "acc_1001", "moving to another tool", "confirm",
     "Yes, please go ahead and delete my account. I exported everything already.\n\nThanks, Ana"),
    ("ben.okafor@example.org", "acc_1002", "", "cancel",
     "Actually, I changed my mind. Please don't delete my account, I'll keep it."),
    ("chen.li@example.com", "acc_1003", "too expensive", "question",
     "Before you delete it: will my invoices still be available for my accountant?"),
    ("dora.schmidt@example.de", "acc_1004", "", "auto-reply",
     "Ich bin bis zum 10. Dezember nicht im Büro und lese keine E-Mails."),
    ("eve.martin@example.fr", "acc_1005", "", "spoofed",
     "Yes, delete the account."),
]


def _say(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def _show_erasure(app: App, clickport: SampleApp, account: str) -> None:
    """Run the erasure against the sample app and show the account's rows per table before and after."""
    print(f"  plan {clickport.plan.name}: " + ", ".join(f"{st.name} ({st.executor})" for st in app.plan.steps))
    sites = site_ids(clickport, account)
    before, sizes = footprint(clickport, account), table_sizes(clickport)
    print("  " + str(app.run_erasures()))
    after, sizes_after = footprint(clickport, account, sites), table_sizes(clickport)
    print(f"\n  rows of {account} in {clickport.db.name}    before  after")
    for table, count in before.items():
        kept = "  kept (tax law)" if table == "invoices" else "  kept, cancelled" if table in KEPT_TABLES else ""
        print(f"    {table:<24} {count:>6} {after[table]:>6}{kept}")
    only_theirs = all(sizes[t] - sizes_after[t] == before[t] - after[t] for t in sizes)
    print(f"  rows removed per table = {account}'s rows, nothing of the other accounts: "
          f"{'yes' if only_theirs else 'NO'}\n  the subscription is cancelled; the invoices remain for the legal "
          "retention period")


def run_demo(keep: bool = False) -> int:
    work = Path(tempfile.mkdtemp(prefix="inbox-bot-demo-"))
    try:
        clickport = create_sample_app(work / "clickport")  # the app whose data the erasure removes
        cfg = build_config({"erasure": {"cooling_off": "0s", "plan": str(clickport.plan)}}, work)
        app = App(cfg)
        _say("1. Five customers ask to delete their Clickport account")
        ids = {}
        for addr, acc, note, _kind, _ in CUSTOMERS:
            view = commands.add_request(app, addr, acc, note, "app:demo")
            ids[addr] = view["id"]
            print(f"  request {view['id']}: {addr:<26} {view['state']:<10} SLA due {view['sla_due_at'][:16]}"
                  + (f"  note: {note!r}" if note else ""))
        _say("2. Support asks each of them to confirm (`inbox-bot request ask ID`)")
        for addr, *_ in CUSTOMERS:
            commands.staff_transition(app, "ask", ids[addr], "staff:demo", "")
        app.poll_once()
        sent = last_sent(work / "mail" / "sent")
        ask = sent[CUSTOMERS[0][0]]
        print(f"  {len(list((work / 'mail' / 'sent' / 'new').iterdir()))} mails delivered to mail/sent; "
              f"the ask to {CUSTOMERS[0][0]}:")
        print(f"    Subject:  {ask['Subject']}\n    Reply-To: {ask['Reply-To']}\n    "
              f"Auto-Submitted: {ask['Auto-Submitted']}")
        body = ask.get_body(("plain",)).get_content()
        print(textwrap.indent(body.strip()[:900], "    | ", predicate=lambda _line: True))
        _say("3. The customers answer (mails dropped into mail/inbox)")
        for i, (addr, _, _, kind, text) in enumerate(CUSTOMERS):
            raw = build_reply(sent[addr], addr, text, auth=SPOOFED if kind == "spoofed" else None,
                              subject_prefix="Automatische Antwort: " if kind == "auto-reply" else "Re: ",
                              extra_headers={"Auto-Submitted": "auto-replied"} if kind == "auto-reply" else None)
            (work / "mail" / "inbox" / "new" / f"{1800000000 + i}.demo{i}").write_bytes(raw)
            print(f"  {kind:<11} from {addr}: {text.splitlines()[0][:70]!r}")
        _say("4. `inbox-bot poll --once`: the bot reads, decides and acts")
        counts = app.poll_once()
        print("  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for m in commands.list_messages(app):
            print(f"\n  {m['from']}  ->  intent {m['intent'].upper()}, action {m['action'].upper()}")
            for r in m["reasons"]:
                print(f"      because: {r}")
        _say("5. Requests now (`inbox-bot requests list`)")
        for r in commands.list_requests(app):
            print(f"  {r['id']}  {r['email']:<26} {r['state']:<16} open flag: {'yes' if r['open_flag'] else 'no'}")
        _say("6. Flags for a person (`inbox-bot flags list`)")
        for f in commands.list_flags(app):
            print(f"  flag {f['id']} on request {f['request_id']}: {f['reason']}\n      suggestion: {f['suggestion']}")
        _say("7. `inbox-bot erasure run`: the confirmed request is erased in the app's database")
        _show_erasure(app, clickport, CUSTOMERS[0][1])
        app.poll_once()
        print(commands.render_request(commands.show_request(app, ids[CUSTOMERS[0][0]])))
        _say("Done")
        print(f"  Everything above ran on a temporary setup in {work}" + ("" if keep else " (now removed)."))
        print("  Next: `inbox-bot --help`, and the README's configuration reference.")
        return 0
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
