"""Executors run one erasure step. Each is idempotent: running a done step again changes nothing."""

from __future__ import annotations

from collections.abc import Callable

from inbox_bot.store.models import DeletionRequest, ErasureStep


class ExecutorError(RuntimeError):
    """A step failed; the message says why (it is stored on the step and shown to staff)."""


def record_executor(step: ErasureStep, request: DeletionRequest) -> str:
    """Records the step as done without touching any system (the embedded default and the demo)."""
    return f"recorded {step.name} for account {request.account_id or request.email}"


EXECUTORS: dict[str, Callable[[ErasureStep, DeletionRequest], str]] = {"record": record_executor}
