"""Runs due erasure jobs: claims a job, runs its steps one by one (each recorded), then finishes it.

A job is claimed with a conditional UPDATE, so two workers never run the same job; steps that
are already done are skipped, so a worker killed half-way resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import select

from inbox_bot.erasure.executors import EXECUTORS, ExecutorError
from inbox_bot.store.db import transaction
from inbox_bot.store.models import DeletionRequest, ErasureJob, ErasureStep, as_utc
from inbox_bot.types import State
from inbox_bot.workflow import Workflow

log = logging.getLogger("inbox_bot.erasure")


def due_jobs(engine: Engine, now: datetime) -> list[int]:
    with transaction(engine) as s:
        jobs = s.exec(select(ErasureJob).where(ErasureJob.status.in_(("queued", "running")))).all()
        return [j.id for j in jobs if as_utc(j.run_after) <= now]


def _claim(engine: Engine, workflow: Workflow, job_id: int, now: datetime) -> bool:
    """Move a queued job to running (and its request to erasing) unless someone else did."""
    with transaction(engine) as s:
        job = s.get(ErasureJob, job_id)
        if job.status == "running":
            return True  # an earlier run was interrupted: resume it
        claimed = s.exec(update(ErasureJob).where(ErasureJob.id == job_id, ErasureJob.status == "queued")
                         .values(status="claimed")).rowcount
        if not claimed:
            return False
        req = s.get(DeletionRequest, job.request_id)
        if State(req.state) is not State.ERASURE_QUEUED:
            job.status, job.error = "cancelled", f"request is {req.state}"
            s.add(job)
            return False
        workflow.start_erasure(s, req, job, now=now)
        return True


def run_job(engine: Engine, workflow: Workflow, job_id: int, clock: Callable[[], datetime]) -> str:
    """Run one job to the end; returns its final status (done, failed, or skipped)."""
    if not _claim(engine, workflow, job_id, clock()):
        return "skipped"
    with transaction(engine) as s:
        steps = s.exec(select(ErasureStep).where(ErasureStep.job_id == job_id).order_by(ErasureStep.seq)).all()
        step_ids = [st.id for st in steps if st.status != "done"]
    for step_id in step_ids:
        with transaction(engine) as s:
            step = s.get(ErasureStep, step_id)
            job = s.get(ErasureJob, job_id)
            req = s.get(DeletionRequest, job.request_id)
            step.started_at = clock()
            try:
                executor = EXECUTORS.get(step.executor)
                if executor is None:
                    raise ExecutorError(f"unknown executor {step.executor!r}")
                note = executor(step, req)
                step.status, step.finished_at, step.error = "done", clock(), None
                log.info("erasure job=%s step=%s done: %s", job_id, step.name, note)
            except Exception as exc:  # noqa: BLE001 - a failing step is recorded, never lost
                step.status, step.error = "failed", f"{type(exc).__name__}: {exc}"
                job.status, job.error = "failed", f"step {step.name}: {step.error}"
                s.add(job)
                workflow.flag(s, req, reason=f"erasure step {step.name} failed: {step.error}", now=clock(),
                              suggestion="fix the cause, then re-run `inbox-bot erasure run`")
                log.error("erasure job=%s step=%s failed: %s", job_id, step.name, step.error)
            s.add(step)
            if step.status == "failed":
                return "failed"
    with transaction(engine) as s:
        job = s.get(ErasureJob, job_id)
        req = s.get(DeletionRequest, job.request_id)
        workflow.finish_erasure(s, req, job, now=clock())
    log.info("erasure job=%s request=%s done", job_id, job.request_id)
    return "done"


def run_due(engine: Engine, workflow: Workflow, clock: Callable[[], datetime]) -> dict[str, int]:
    """Run every due job; returns counts by final status."""
    counts: dict[str, int] = {}
    for job_id in due_jobs(engine, clock()):
        status = run_job(engine, workflow, job_id, clock)
        counts[status] = counts.get(status, 0) + 1
    return counts
