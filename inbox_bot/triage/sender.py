"""STUB (being written): sender verification from trusted Authentication-Results with alignment."""

from __future__ import annotations

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import Evidence, Facts, InboundMail


class Sender:
    name = "sender"
    description = "Is the From the account address, proven by a trusted, aligned authentication pass?"

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        facts.sender_verified = bool(facts.request and mail.from_addr == facts.request.email)
        return Evidence(self.name, facts.sender_verified, "stub")
