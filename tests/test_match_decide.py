"""Unit tests of the two pure steps without rule data: `match` (which request) and `decide` (the policy)."""

from __future__ import annotations

import pytest

from inbox_bot.triage.base import TriageContext
from inbox_bot.triage.decide import decide
from inbox_bot.triage.match import Match
from inbox_bot.types import Action, AutoKind, Candidates, Facts, InboundMail, Intent, RequestSnapshot, State

MAIL = InboundMail(source_key="k", raw_sha256="0", size=1, from_addrs=("ana@example.net",))
ANA = RequestSnapshot(id=1, email="ana@example.net", state=State.AWAITING_CONFIRMATION)
OTHER = RequestSnapshot(id=2, email="ben@example.org", state=State.RECEIVED)


def run_match(c: Candidates) -> tuple[Facts, bool]:
    facts = Facts()
    ev = Match().run(MAIL, TriageContext(candidates=c), facts)
    return facts, ev.hit


@pytest.mark.parametrize(("cands", "want_id", "by"), [
    (Candidates(by_thread=ANA), 1, "thread"),
    (Candidates(by_token=ANA), 1, "token"),
    (Candidates(by_thread=ANA, by_token=ANA, by_sender=(OTHER,)), 1, "thread"),
    (Candidates(by_sender=(OTHER, ANA)), 2, "sender"),
])
def test_match_prefers_thread_then_token_then_sender(cands: Candidates, want_id: int, by: str) -> None:
    facts, hit = run_match(cands)
    assert hit and facts.request.id == want_id and facts.matched_by == by and not facts.match_conflict


def test_match_conflict_between_thread_and_token_is_recorded() -> None:
    facts, hit = run_match(Candidates(by_thread=OTHER, by_token=ANA))
    assert hit and facts.match_conflict


def test_no_candidate_is_a_miss_and_an_unknown_token_says_so() -> None:
    facts, hit = run_match(Candidates(token_seen=True))
    assert not hit and facts.request is None


def facts(**kw: object) -> Facts:
    base = {"request": ANA, "matched_by": "thread", "sender_verified": True, "intent": Intent.CONFIRM}
    return Facts(**{**base, **kw})


def snap(state: State, open_flag: bool = False) -> RequestSnapshot:
    return RequestSnapshot(id=1, email="ana@example.net", state=state, open_flag=open_flag)


@pytest.mark.parametrize(("f", "action"), [
    (facts(), Action.QUEUE_ERASURE),
    (facts(request=snap(State.RECEIVED)), Action.QUEUE_ERASURE),
    (facts(intent=Intent.CANCEL), Action.CANCEL),
    (facts(intent=Intent.CANCEL, request=snap(State.ERASURE_QUEUED)), Action.CANCEL),
    (facts(intent=Intent.QUESTION), Action.FLAG_HUMAN),
    (facts(intent=Intent.NONE), Action.FLAG_HUMAN),
    (facts(sender_verified=False), Action.FLAG_HUMAN),
    (facts(sender_verified=False, intent=Intent.CANCEL), Action.FLAG_HUMAN),
    (facts(readable=False), Action.FLAG_HUMAN),
    (facts(match_conflict=True), Action.FLAG_HUMAN),
    (facts(request=snap(State.AWAITING_CONFIRMATION, open_flag=True)), Action.FLAG_HUMAN),
    (facts(request=snap(State.ERASURE_QUEUED)), Action.FLAG_HUMAN),
    (facts(request=snap(State.ERASING), intent=Intent.CANCEL), Action.FLAG_HUMAN),
    (facts(request=snap(State.ERASED), intent=Intent.CANCEL), Action.FLAG_HUMAN),
    (facts(request=snap(State.CANCELLED)), Action.FLAG_HUMAN),
    (facts(request=None, matched_by=None), Action.UNMATCHED),
    (facts(auto_kind=AutoKind.AUTO_REPLY), Action.IGNORE),
    (facts(auto_kind=AutoKind.LIST), Action.IGNORE),
    (facts(auto_kind=AutoKind.BOUNCE), Action.FLAG_HUMAN),
    (facts(auto_kind=AutoKind.BOUNCE, request=None), Action.IGNORE),
])
def test_decide_follows_the_policy_table(f: Facts, action: Action) -> None:
    got, reasons = decide(MAIL, f)
    assert got is action
    assert reasons and all(isinstance(r, str) and r for r in reasons)


def test_only_a_verified_readable_confirm_in_a_confirmable_state_erases() -> None:
    """Exhaustive over the inputs decide reads: erasure needs every condition at once."""
    for state in State:
        for intent in Intent:
            for verified in (True, False):
                for readable in (True, False):
                    for open_flag in (True, False):
                        f = facts(request=snap(state, open_flag), intent=intent, sender_verified=verified,
                                  readable=readable)
                        got, _ = decide(MAIL, f)
                        should = (intent is Intent.CONFIRM and verified and readable and not open_flag
                                  and state in (State.RECEIVED, State.AWAITING_CONFIRMATION))
                        assert (got is Action.QUEUE_ERASURE) == should, (state, intent, verified, readable)
