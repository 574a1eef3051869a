"""The command line (shared/docs/design.md, "Command-line contract"). Thin: parse, call, print.

``--json`` prints machine-readable output on stdout and nothing else there; logs go to stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from inbox_bot import __version__, commands
from inbox_bot.commands import CommandError
from inbox_bot.config import ConfigError, load_config
from inbox_bot.mail.sources import SourceError
from inbox_bot.rulebook import RulesError
from inbox_bot.types import State, aware_datetime
from inbox_bot.workflow import TransitionError

EPILOG = """\
examples:
  inbox-bot request add --email ana@example.net --account-id acc_1 --note "moving on"
  inbox-bot request ask 1                 # send the "please confirm" mail
  inbox-bot poll --once                   # read new replies, act, deliver the outbox
  inbox-bot requests list --json
  inbox-bot request show 1                # timeline: every decision with its evidence
  inbox-bot classify --explain reply.eml  # what the bot would read in a mail, changing nothing
  inbox-bot erasure run                   # run erasure jobs whose cooling-off has passed
  inbox-bot flags show 3                  # a flag with the customer's words and the evidence
  inbox-bot flags resolve 3 --action reply --template ask --reason "answered by phone"
  inbox-bot digest --print                # today's staff digest, not sent
  inbox-bot run                           # the daemon: watch the mailbox, run the jobs
  inbox-bot demo                          # a guided tour on a throw-away setup

config: --config FILE, else $INBOX_BOT_CONFIG, else ./inbox-bot.toml, else built-in defaults
(Maildir mail/inbox in, Maildir mail/sent out, SQLite state.db, all in the working directory).
"""


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=1, default=_json_default, ensure_ascii=False)
    sys.stdout.write("\n")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _aware(text: str, name: str) -> datetime:
    """An ISO-8601 time with a UTC offset, or a one-line error naming the argument."""
    try:
        return aware_datetime(text)
    except ValueError as exc:
        raise CommandError(f"{name}: {exc}") from exc


def _staff(args: argparse.Namespace) -> str:
    return f"staff:{args.by or getpass.getuser()}"


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "") if r.get(c) is not None else "-").ljust(widths[c]) for c in columns)
              for r in rows]
    return "\n".join(lines)


# --- commands (each: args -> exit code) --------------------------------------------------------

def cmd_request_add(args: argparse.Namespace) -> int:
    view = commands.add_request(_app(args), args.email, args.account_id, args.note or "", _staff(args),
                                language=args.language, previous_email=args.previous_email,
                                email_changed_at=args.email_changed_at and _aware(args.email_changed_at,
                                                                                  "--email-changed-at"))
    _print_json(view) if args.json else print(
        f"request {view['id']} for {view['email']}: {view['state']} (receipt queued; `inbox-bot poll --once` "
        "delivers it)")
    return 0


def cmd_request_transition(args: argparse.Namespace) -> int:
    view = commands.staff_transition(_app(args), args.transition, args.id, _staff(args),
                                     args.reason or "")
    _print_json(view) if args.json else print(f"request {view['id']}: {view['state']}")
    return 0


def cmd_request_show(args: argparse.Namespace) -> int:
    view = commands.show_request(_app(args), args.id)
    if args.json:
        _print_json(view)
        return 0
    print(commands.render_request(view))
    return 0


def cmd_requests_list(args: argparse.Namespace) -> int:
    rows = commands.list_requests(_app(args), args.state)
    if args.json:
        _print_json(rows)
    else:
        print(_table(rows, ["id", "email", "state", "open_flag", "sla_due_at", "created_at"]))
    return 0


def cmd_requests_export(args: argparse.Namespace) -> int:
    from inbox_bot.export import REQUEST_COLUMNS, write_csv

    write_csv(commands.list_requests(_app(args), args.state), REQUEST_COLUMNS, sys.stdout)
    return 0


def cmd_messages_list(args: argparse.Namespace) -> int:
    rows = commands.list_messages(_app(args), args.request)
    if args.json:
        _print_json(rows)
    else:
        print(_table([{**r, "reasons": "; ".join(r["reasons"])[:80]} for r in rows],
                     ["id", "message_id", "request_id", "intent", "action", "reasons"]))
    return 0


def cmd_flags_list(args: argparse.Namespace) -> int:
    rows = commands.list_flags(_app(args), include_resolved=args.all)
    if args.json:
        _print_json(rows)
    else:
        print(_table([{**r, "urgent": "URGENT" if r["urgent"] else ""} for r in rows],
                     ["id", "request_id", "urgent", "status", "reason", "created_at"]))
    return 0


def cmd_flags_show(args: argparse.Namespace) -> int:
    view = commands.show_flag(_app(args), args.id)
    _print_json(view) if args.json else print(commands.render_flag(view))
    return 0


def cmd_flags_resolve(args: argparse.Namespace) -> int:
    view = commands.resolve_flag(_app(args), args.id, args.action_, _staff(args), args.reason, args.template)
    if args.json:
        _print_json(view)
        return 0
    req = view["request"]
    print(f"flag {view['id']}: {view['status']} ({view['resolution']})"
          + (f"; request {req['id']}: {req['state']}" if req else ""))
    return 0


def cmd_digest(args: argparse.Namespace) -> int:
    from inbox_bot.digest import render_digest

    app = _app(args)
    parts = render_digest(app.engine, app.sla_watch, app.clock())
    print(parts["html"] if args.html else f"Subject: {parts['subject']}\n\n{parts['txt']}", end="")
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    if not args.once:
        raise CommandError("poll needs --once (use `inbox-bot run` for the daemon)")
    counts = _app(args).poll_once()
    _print_json(counts) if args.json else print(
        "poll: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    results = [commands.classify_file(_app(args), Path(f), f) for f in args.files]
    if args.json:
        _print_json([{k: v for k, v in r.items() if k != "explain"} for r in results])
        return 0
    for r in results:
        print(f"{r['file']}: intent {r['intent']}, auto-generated {r['auto_generated'] or 'no'}")
        if args.explain:
            print(r["explain"])
            print("  visible reply:")
            print("\n".join(f"    | {line}" for line in (r["reply_text"] or "(empty)").splitlines()))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from inbox_bot.evaluate import CorpusError, evaluate

    try:
        result = evaluate(load_config(args.config), Path(args.corpus))
    except CorpusError as exc:
        raise CommandError(str(exc)) from exc
    _print_json(result.as_json()) if args.json else print(result.render())
    return 0 if not result.false_erasures and not result.missed_cancels else 1


def cmd_erasure_run(args: argparse.Namespace) -> int:
    counts = _app(args).run_erasures()
    _print_json(counts) if args.json else print(
        "erasure: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no job due"))
    return 0


def cmd_erasure_plan(args: argparse.Namespace) -> int:
    view = commands.erasure_plan(_app(args))
    if args.json:
        _print_json(view)
        return 0
    print(f"erasure plan: {view['file'] or 'built-in'}")
    for i, st in enumerate(view["steps"], 1):
        print(f"  {i}. {st['name']:<22} {st['executor']:<8} {st['description']}")
    for problem in view["problems"]:
        print(f"  warning: {problem}")
    return 0


def cmd_erasure_retry(args: argparse.Namespace) -> int:
    view = commands.retry_erasure(_app(args), args.id, _staff(args), args.reason)
    _print_json(view) if args.json else print(
        f"erasure job {view['id']}: {view['status']} again (request {view['request_id']}); "
        "`inbox-bot erasure run` continues it")
    return 0


def cmd_erasure_purge(args: argparse.Namespace) -> int:
    counts = commands.purge(_app(args))
    _print_json(counts) if args.json else print(f"purge: {counts.get('purged', 0)} request(s) minimised")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from inbox_bot import scheduler
    from inbox_bot.security_checks import config_warnings

    app = _app(args)
    for warning in config_warnings(app.cfg):
        logging.getLogger("inbox_bot").warning("config: %s", warning)
    scheduler.run(app)
    return 0


def cmd_sla_deadline(args: argparse.Namespace) -> int:
    start = _aware(args.start, "FROM")
    due = _app(args).calendar.deadline(start)
    _print_json({"from": start, "due": due}) if args.json else print(due.isoformat())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from inbox_bot import demo

    return demo.run_demo(keep=args.keep)


# --- wiring ------------------------------------------------------------------------------------

def _app(args: argparse.Namespace):  # noqa: ANN202
    from inbox_bot.app import App

    if getattr(args, "_app", None) is None:
        args._app = App(load_config(args.config))
        args._app.plan  # noqa: B018 - a bad erasure plan stops every command at start-up (exit 2)
    return args._app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inbox-bot", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Runs the account-deletion process from the support mailbox: reads customers' replies, "
                    "confirms, cancels or hands them to a person, and keeps the one-business-day promise.")
    p.add_argument("--config", metavar="FILE", help="TOML config (see README: configuration)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only on stderr")
    p.add_argument("--version", action="version", version=f"inbox-bot {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(parent, name: str, fn: Callable[[argparse.Namespace], int], help_: str,  # noqa: ANN001
            json_: bool = False) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        if json_:
            sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        return sp

    req = sub.add_parser("request", help="one deletion request: add, ask, confirm, cancel, show")
    rsub = req.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = add(rsub, "add", cmd_request_add, "record a request (state received) and queue the receipt mail", True)
    a.add_argument("--email", required=True, help="the account's email address (all mail goes there)")
    a.add_argument("--account-id", help="the account id in the app")
    a.add_argument("--note", help="the customer's note from the deletion form")
    a.add_argument("--language", help="customer's language for our mails (default: workflow.language)")
    a.add_argument("--previous-email", help="the account's address before its last change; with a change inside "
                   "security.address_change_window it is told too and the request goes to a person")
    a.add_argument("--email-changed-at", metavar="ISO-8601",
                   help="when the address changed, with offset, e.g. 2026-12-01T10:00:00+01:00")
    a.add_argument("--by", help="staff name for the audit trail (default: your login)")
    for name, help_ in (("ask", "send the 'please confirm; anything to export or pause first?' mail"),
                        ("confirm", "staff decision: confirm (queues the erasure after the cooling-off)"),
                        ("cancel", "staff decision: cancel the request (and any queued erasure)")):
        t = add(rsub, name, cmd_request_transition, help_, True)
        t.set_defaults(transition=name)
        t.add_argument("id", type=int, help="request id")
        t.add_argument("--reason", required=name != "ask", help="why (kept in the audit trail)")
        t.add_argument("--by", help="staff name for the audit trail (default: your login)")
    s = add(rsub, "show", cmd_request_show, "the request with its timeline, messages and flags", True)
    s.add_argument("id", type=int)

    reqs = sub.add_parser("requests", help="list requests")
    lsub = reqs.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = add(lsub, "list", cmd_requests_list, "list requests with state, open flag and SLA due time", True)
    lst.add_argument("--state", choices=[st.value for st in State])
    exp = add(lsub, "export", cmd_requests_export, "requests as CSV on stdout, formula prefixes neutralised")
    exp.add_argument("--csv", action="store_true", required=True, help="CSV (the only format)")
    exp.add_argument("--state", choices=[st.value for st in State])

    msgs = sub.add_parser("messages", help="processed inbound messages")
    msub = msgs.add_subparsers(dest="action", metavar="ACTION", required=True)
    ml = add(msub, "list", cmd_messages_list, "every processed message with intent, action and reasons", True)
    ml.add_argument("--request", type=int, help="only the messages of this request")

    flags = sub.add_parser("flags", help="work handed to a person")
    fsub = flags.add_subparsers(dest="action", metavar="ACTION", required=True)
    fl = add(fsub, "list", cmd_flags_list, "open flags (with --all, resolved ones too)", True)
    fl.add_argument("--all", action="store_true")
    fs = add(fsub, "show", cmd_flags_show, "one flag: the customer's words, the evidence, the clock, its history",
             True)
    fs.add_argument("id", type=int, help="flag id")
    fr = add(fsub, "resolve", cmd_flags_resolve,
             "resolve a flag: confirm or cancel the request, reply with a template, or dismiss; audited", True)
    fr.add_argument("id", type=int, help="flag id")
    fr.add_argument("--action", dest="action_", required=True, choices=commands.FLAG_ACTIONS,
                    help="confirm/cancel: the request transition and its mail; reply: mail --template to the "
                         "account address; dismiss: nothing is sent")
    fr.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    fr.add_argument("--template", default="ask", metavar="KIND",
                    help="mail for --action reply (default: ask, which is the ask transition)")
    fr.add_argument("--by", help="staff name for the audit trail (default: your login)")

    dg = add(sub, "digest", cmd_digest, "render today's staff digest without sending it")
    mode = dg.add_mutually_exclusive_group()
    mode.add_argument("--print", action="store_true", help="the text part on the terminal (the default)")
    mode.add_argument("--html", action="store_true", help="the HTML part instead")

    poll = add(sub, "poll", cmd_poll, "process every new message in the source and deliver the outbox", True)
    poll.add_argument("--once", action="store_true", help="one pass, then exit 0")

    cl = add(sub, "classify", cmd_classify,
             "triage mail files without touching any state: intent, auto-generated verdict, visible reply", True)
    cl.add_argument("--explain", action="store_true", help="every check's evidence and what was cut")
    cl.add_argument("files", nargs="+", metavar="FILE.eml")

    ev = add(sub, "eval", cmd_eval, "score a labelled corpus (labels.jsonl + cases/) on a throw-away instance "
             "with the configured rules: confusion matrix, accuracy, false erasures, missed cancels", True)
    ev.add_argument("corpus", metavar="CORPUS_DIR")

    er = sub.add_parser("erasure", help="erasure jobs")
    esub = er.add_subparsers(dest="action", metavar="ACTION", required=True)
    add(esub, "run", cmd_erasure_run, "execute every erasure job whose cooling-off has passed", True)
    add(esub, "plan", cmd_erasure_plan, "the erasure plan in force (validated), and what its environment lacks",
        True)
    ert = add(esub, "retry", cmd_erasure_retry,
              "put a failed erasure job back in the queue (done steps stay done); resolves the request's flags",
              True)
    ert.add_argument("id", type=int, help="erasure job id (see `request show`)")
    ert.add_argument("--reason", required=True, help="what was fixed (kept in the audit trail)")
    ert.add_argument("--by", help="staff name for the audit trail (default: your login)")
    add(esub, "purge", cmd_erasure_purge,
        "remove erased customers' personal data from the bot's own tables after erasure.backup_days", True)

    add(sub, "run", cmd_run, "the daemon: watch the mailbox and run the scheduler until stopped")

    sla = sub.add_parser("sla", help="the business-day calendar")
    ssub = sla.add_subparsers(dest="action", metavar="ACTION", required=True)
    dl = add(ssub, "deadline", cmd_sla_deadline, "the reply deadline for a request arriving at FROM", True)
    dl.add_argument("start", metavar="FROM", help="ISO-8601 time with offset")

    demo = add(sub, "demo", cmd_demo, "a self-contained tour on a temporary embedded setup")
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING if level <= logging.INFO else level)
    logging.getLogger("imapclient").setLevel(logging.WARNING if level <= logging.INFO else level)
    try:
        return args.fn(args)
    except (ConfigError, RulesError) as exc:
        print(f"inbox-bot: config error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, TransitionError, SourceError) as exc:
        print(f"inbox-bot: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
