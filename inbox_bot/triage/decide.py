"""The decision policy (shared/corpus/README.md), in one place: facts in, one action and its reasons out.

Order matters and mirrors the policy table: machine mail, then matching, then sender proof,
then intent by state. Anything not clearly allowed goes to a human.
"""

from __future__ import annotations

from inbox_bot.types import Action, AutoKind, Facts, InboundMail, Intent, State

CONFIRMABLE = frozenset({State.RECEIVED, State.AWAITING_CONFIRMATION})
CANCELLABLE = frozenset({State.RECEIVED, State.AWAITING_CONFIRMATION, State.ERASURE_QUEUED})


def decide(mail: InboundMail, facts: Facts) -> tuple[Action, list[str]]:
    """Return the action for ``facts`` and the reasons, each a short line staff can read."""
    req = facts.request
    if facts.auto_kind is AutoKind.BOUNCE:
        if req is None:
            return Action.IGNORE, ["bounce about no mail of ours", *facts.auto_reasons]
        return Action.FLAG_HUMAN, [f"bounce about our mail to request {req.id}", *facts.auto_reasons]
    if facts.auto_kind is not AutoKind.HUMAN:
        return Action.IGNORE, [f"auto-generated ({facts.auto_kind.value})", *facts.auto_reasons]
    if req is None:
        return Action.UNMATCHED, ["belongs to no deletion request"]
    reasons = [f"request {req.id} matched by {facts.matched_by}", f"intent {facts.intent.value}"]
    if facts.match_conflict:
        return Action.FLAG_HUMAN, [*reasons, "thread and reply token name different requests"]
    if req.open_flag:
        return Action.FLAG_HUMAN, [*reasons, "request already has an open flag: joins it"]
    if not facts.sender_verified:
        return Action.FLAG_HUMAN, [*reasons, "sender not verified", *facts.sender_reasons]
    if not facts.readable:
        return Action.FLAG_HUMAN, [*reasons, "reply not readable safely", *facts.cut]
    if req.state in (State.ERASED, State.ERASING, State.CANCELLED):
        return Action.FLAG_HUMAN, [*reasons, f"request is {req.state.value}: a person must answer"]
    if facts.intent is Intent.CONFIRM:
        if facts.token_problem:  # threats row 10: an old or replayed token never confirms
            return Action.FLAG_HUMAN, [*reasons, facts.token_problem]
        if facts.token_missing:  # issue 7: a thread id or a From alone never confirms
            return Action.FLAG_HUMAN, [*reasons, "no reply token of this request in To/Cc: a confirm needs it"]
        if req.state in CONFIRMABLE:
            return Action.QUEUE_ERASURE, [*reasons, "verified sender confirmed"]
        return Action.FLAG_HUMAN, [*reasons, f"confirm while {req.state.value}"]
    if facts.intent is Intent.CANCEL:
        if req.state in CANCELLABLE:
            return Action.CANCEL, [*reasons, "verified sender cancelled"]
        return Action.FLAG_HUMAN, [*reasons, f"cancel while {req.state.value}"]
    if facts.intent is Intent.QUESTION:
        return Action.FLAG_HUMAN, [*reasons, "the customer asks something: a person answers"]
    return Action.FLAG_HUMAN, [*reasons, "no clear confirm or cancel"]


def hold_back(action: Action, reasons: list[str], holds: list[str]) -> tuple[Action, list[str]]:
    """A confirm for an account the app holds (a chargeback, a legal hold: threats row 23) goes to a
    person instead of queueing an erasure; ``holds`` are the reasons found in the app's data."""
    if action is Action.QUEUE_ERASURE and holds:
        return Action.FLAG_HUMAN, [*reasons, "requires manual: " + "; ".join(holds)]
    return action, reasons
