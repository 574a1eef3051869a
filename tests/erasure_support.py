"""Helpers shared by the tests/test_erasure_*.py files: a bot wired to a plan, a confirmed request."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sqlmodel import select

from inbox_bot import commands
from inbox_bot.app import App
from inbox_bot.store.db import transaction
from inbox_bot.store.models import ErasureJob, ErasureStep, Flag


def write_plan(folder: Path, body: str, name: str = "plan.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def plan_app(make_app, plan: Path, **erasure: object) -> App:
    return make_app(erasure={"cooling_off": "0s", "plan": str(plan), "retry_backoff": "1m", **erasure})


def confirmed(app: App, email: str = "ana.ruiz@example.net", account: str | None = "acc_1001") -> int:
    """A request confirmed by staff: its erasure job is queued (due after the cooling-off)."""
    rid = commands.add_request(app, email, account, "", "staff:test")["id"]
    commands.staff_transition(app, "confirm", rid, "staff:test", "confirmed on the phone")
    return rid


def job_of(app: App, rid: int) -> tuple[ErasureJob, list[ErasureStep]]:
    with transaction(app.engine) as s:
        job = s.exec(select(ErasureJob).where(ErasureJob.request_id == rid)).one()
        steps = list(s.exec(select(ErasureStep).where(ErasureStep.job_id == job.id).order_by(ErasureStep.seq)))
        return job, steps


def open_flags(app: App, rid: int | None = None) -> list[Flag]:
    with transaction(app.engine) as s:
        q = select(Flag).where(Flag.status == "open")
        if rid is not None:
            q = q.where(Flag.request_id == rid)
        return list(s.exec(q))
