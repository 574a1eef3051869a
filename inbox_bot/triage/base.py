"""The contract of a triage check, and what every check may read besides the mail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from inbox_bot.types import Candidates, Evidence, Facts, InboundMail


@dataclass(frozen=True)
class TriageContext:
    """Everything triage needs that is not in the mail: lookups done by the caller, rules, settings.

    ``rules`` maps a check's name to the compiled rules it loaded from ``rules/``
    (see ``inbox_bot.rulebook``); a check reads only its own entry.
    """

    candidates: Candidates = field(default_factory=Candidates)
    rules: dict[str, Any] = field(default_factory=dict)
    trusted_authserv_ids: tuple[str, ...] = ("mx.clickport.io",)
    mailbox_address: str = "support@clickport.io"
    own_domains: tuple[str, ...] = ("clickport.io",)
    require_token_for_confirm: bool = True  # a confirm needs its request's reply token in To/Cc


class Check(Protocol):
    """One small, named step of the chain (in the manner of GNU Mailman's rules).

    ``run`` must not do I/O. It records what it found in ``facts`` (only its own fields)
    and returns one ``Evidence`` line, hit or miss, that staff can read.
    """

    name: str
    description: str

    def run(self, mail: InboundMail, ctx: TriageContext, facts: Facts) -> Evidence: ...
