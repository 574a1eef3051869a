"""``inbox-bot eval CORPUS_DIR``: score a labelled corpus (shared/corpus/README.md format) on a throw-away
instance that uses the configured rules and templates, so support staff can check their own rule edits
against their own mail before deploying them.

Each case's request is created and brought to its ``state_before`` the way staff would (ask, confirm,
erasure run, cancel); the case's mail gets the thread placeholders filled from the mails the bot sent;
then one pass processes every mail and the actions are compared with the labels.
"""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.config import Config
from inbox_bot.mail.samples import last_sent
from inbox_bot.types import Action

ACTIONS = [a.value for a in Action if a is not Action.DUPLICATE]


class CorpusError(ValueError):
    """The corpus folder is not in the expected format; the message says what is wrong."""


@dataclass
class EvalResult:
    cases: int = 0
    correct: int = 0
    confusion: Counter = field(default_factory=Counter)
    false_erasures: list[str] = field(default_factory=list)
    missed_cancels: list[str] = field(default_factory=list)
    wrong: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.cases if self.cases else 0.0

    def as_json(self) -> dict:
        return {"cases": self.cases, "correct": self.correct, "accuracy": round(self.accuracy, 4),
                "false_erasures": self.false_erasures, "missed_cancels": self.missed_cancels,
                "confusion": {f"{w}->{g}": n for (w, g), n in sorted(self.confusion.items())},
                "wrong": self.wrong}

    def render(self) -> str:
        got_cols = sorted({g for _, g in self.confusion} | set(ACTIONS))
        width = max(len(c) for c in got_cols) + 1
        lines = ["want \\ got".ljust(15) + "".join(c[:width - 1].rjust(width) for c in got_cols)]
        for want in ACTIONS:
            row = [self.confusion.get((want, g), 0) for g in got_cols]
            if any(row):
                lines.append(want.ljust(15) + "".join(str(n).rjust(width) for n in row))
        lines.append(f"accuracy {self.accuracy:.3f} ({self.correct}/{self.cases}), false erasures "
                     f"{len(self.false_erasures)}, missed cancels {len(self.missed_cancels)}")
        for w in self.wrong:
            lines.append(f"  {w['id']}: want {w['want']} got {w['got']} (intent {w['intent']}, labelled "
                         f"{w['want_intent']})")
            lines += [f"      {r}" for r in w["reasons"]]
        return "\n".join(lines)


def _labels(corpus: Path) -> list[dict]:
    path = corpus / "labels.jsonl"
    if not path.is_file():
        raise CorpusError(f"{corpus}: no labels.jsonl (see shared/corpus/README.md for the format)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["id"], row["file"], row["request"], row["expected_action"]  # noqa: B018 - presence check
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorpusError(f"{path}:{n}: not a label row ({exc})") from exc
        rows.append(row)
    return rows


def _prepare(app: App, labels: list[dict]) -> None:
    """Create each case's request and bring it to its state_before with the staff commands."""
    ids = {}
    for case in labels:
        req = case["request"]
        if req.get("state_before", "awaiting_confirmation") == "none":
            continue
        view = commands.add_request(app, req["email"], req.get("account_id"), req.get("note") or "", "staff:eval")
        ids[case["id"]] = view["id"]
        if req.get("state_before", "awaiting_confirmation") in ("awaiting_confirmation", "erasure_queued", "erased"):
            commands.staff_transition(app, "ask", view["id"], "staff:eval", "")
    for state, step in (("erased", "confirm"), ("erasure_queued", "confirm"), ("cancelled", "cancel")):
        for case in labels:
            if case["request"].get("state_before") == state:
                commands.staff_transition(app, step, ids[case["id"]], "staff:eval", "eval setup")
        if state == "erased":
            app.run_erasures()
    app.poll_once()


def _fill(raw: bytes, sent: dict, addr: str, mailbox: str) -> bytes:
    msg = sent.get(addr.lower())
    irt = str(msg["Message-ID"]) if msg else "<none@invalid>"
    to = (msg["Reply-To"].addresses[0].addr_spec if msg and msg["Reply-To"] else mailbox)
    return (raw.replace(b"{{IN_REPLY_TO}}", irt.encode()).replace(b"{{REFERENCES}}", irt.encode())
            .replace(b"{{TO}}", to.encode()))


def evaluate(cfg: Config, corpus: Path) -> EvalResult:
    """Run ``corpus`` through a temporary instance built from ``cfg``'s rules and templates."""
    labels = _labels(corpus)
    work = Path(tempfile.mkdtemp(prefix="inbox-bot-eval-"))
    try:
        tmp_cfg = replace(cfg, base_dir=work, source="maildir:mail/inbox", transport="maildir:mail/sent",
                          database_url=f"sqlite:///{work / 'state.db'}", auto_ask=False,
                          cooling_off=cfg.cooling_off * 0)
        app = App(tmp_cfg)
        _prepare(app, labels)
        sent = last_sent(work / "mail" / "sent")
        want = {}
        for i, case in enumerate(labels):
            raw = _fill((corpus / case["file"]).read_bytes(), sent, case["request"]["email"], cfg.mailbox_address)
            mid = str(email.message_from_bytes(raw, policy=email.policy.compat32).get("Message-ID", "")).strip()
            want[mid] = case
            (work / "mail" / "inbox" / "new" / f"{1700000000 + i}.case{i}.eval").write_bytes(raw)
        app.poll_once()
        got = {m["message_id"]: m for m in commands.list_messages(app) if m["action"] != Action.DUPLICATE.value}
        result = EvalResult(cases=len(want))
        for mid, case in want.items():
            m = got.get(mid, {"action": "MISSING", "intent": None, "reasons": []})
            want_action = case["expected_action"]
            result.confusion[(want_action, m["action"])] += 1
            if m["action"] == want_action:
                result.correct += 1
                continue
            if m["action"] == Action.QUEUE_ERASURE.value:
                result.false_erasures.append(case["id"])
            if want_action == Action.CANCEL.value and m["action"] != Action.FLAG_HUMAN.value:
                result.missed_cancels.append(case["id"])
            result.wrong.append({"id": case["id"], "want": want_action, "got": m["action"], "intent": m["intent"],
                                 "want_intent": case.get("expected_intent"), "reasons": m["reasons"]})
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
