"""Which deletion request a message belongs to: thread ids first, then the reply token, then the sender."""

from __future__ import annotations

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import Candidates, Evidence, Facts, InboundMail


class Match:
    name = "match"
    description = (
        "Finds the deletion request: In-Reply-To/References (or a bounce's embedded ids) naming a mail the "
        "bot sent, the reply token in To/Cc, or else the one open request of the From address."
    )

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        c = ctx.candidates
        facts.token_problem, facts.token_expired = c.token_problem, c.token_expired
        evidence = self._find(c, facts)
        has_token = facts.request is not None and c.by_token is not None and c.by_token.id == facts.request.id
        facts.token_missing = ctx.require_token_for_confirm and not has_token
        return evidence

    def _find(self, c: Candidates, facts: Facts) -> Evidence:
        if c.by_thread and c.by_token and c.by_thread.id != c.by_token.id:
            facts.request, facts.matched_by, facts.match_conflict = c.by_token, "token", True
            return Evidence(
                self.name, True,
                f"thread points at request {c.by_thread.id} but the reply token at request {c.by_token.id}",
                {"request_id": c.by_token.id, "by": "conflict"},
            )
        for by, req in (("thread", c.by_thread), ("token", c.by_token)):
            if req is not None:
                facts.request, facts.matched_by = req, by
                return Evidence(self.name, True, f"request {req.id} ({req.email}, {req.state}) by {by}",
                                {"request_id": req.id, "by": by})
        if c.by_sender:
            req = c.by_sender[0]
            facts.request, facts.matched_by = req, "sender"
            more = f"; {len(c.by_sender) - 1} older open request(s) too" if len(c.by_sender) > 1 else ""
            return Evidence(self.name, True, f"request {req.id} ({req.state}) by the sender's address{more}",
                            {"request_id": req.id, "by": "sender"})
        why = "a reply token that matches no request" if c.token_seen else "no thread id, token or open request"
        return Evidence(self.name, False, why, {"by": None})
