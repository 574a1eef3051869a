"""The erasure plan: which steps an erasure job runs, and with which executor.

The steps follow the product's promise (shared/docs/product.md). This version ships one
executor, ``record``, which records the step as done; real executors (sql, http, command,
file) plug in by name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanStep:
    name: str
    executor: str = "record"
    description: str = ""


@dataclass(frozen=True)
class ErasurePlan:
    steps: tuple[PlanStep, ...]


DEFAULT_PLAN = ErasurePlan(steps=(
    PlanStep("cancel_billing", description="cancel the subscription; invoices and receipts are kept"),
    PlanStep("delete_user_record", description="email, name, password hash, OAuth links, 2FA secret, "
                                               "recovery codes"),
    PlanStep("end_sessions", description="every login session on every device"),
    PlanStep("delete_sites", description="owned sites with tracking data, goals, custom events, "
                                         "share links and API keys"),
    PlanStep("remove_memberships", description="every team membership"),
    PlanStep("delete_avatar", description="the uploaded avatar file"),
))
