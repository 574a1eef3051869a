"""STUB (being written): the visible new text of a reply (quotes, signatures, disclaimers cut)."""

from __future__ import annotations

from typing import Any

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import Evidence, Facts, InboundMail


def compile_rules(files: dict[str, dict]) -> Any:
    return files.get("reply.toml", {})


class Reply:
    name = "reply"
    description = "Cuts quotes, quote headers, signatures and disclaimers; keeps the customer's new words."

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        facts.reply_text = mail.text
        return Evidence(self.name, False, "stub")
