"""STUB (being written): rules-driven intent classification (rules/intents/*.toml)."""

from __future__ import annotations

from typing import Any

from inbox_bot.triage.base import TriageContext
from inbox_bot.types import Evidence, Facts, InboundMail


def compile_rules(files: dict[str, dict]) -> Any:
    return {k: v for k, v in files.items() if k.startswith("intents/")}


class Classify:
    name = "classify"
    description = "confirm | cancel | question | none from the reply text, with the rules that fired."

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence:
        return Evidence(self.name, False, "stub")
