"""Runs due erasure jobs: one worker per job at a time, steps one by one, each recorded.

Why each piece is there:

- A job is leased (owner and expiry on the row, taken with a compare-and-set UPDATE), so two
  workers, on one host or several sharing a database, never run the same job. A lease whose
  owner died on this host (SIGKILL, OOM) is taken over at once; elsewhere it expires.
- A step is marked ``running`` (with its attempt number) in its own transaction before the
  executor runs and ``done`` in another after it: the executor itself runs outside any
  transaction of ours, so a slow step never blocks the mailbox. A crash in between leaves the
  step ``running``; the next worker runs it again, which is safe because executors are
  idempotent, and every step still completes exactly once.
- A failed step is retried with exponential backoff (``erasure.retry_backoff``) up to
  ``erasure.max_attempts``; a permanent failure (a 4xx, a refused path, a failed check) and the
  last attempt flag a person with the job's progress.
- A job that has not started waits while its request has an open flag (a question during the
  cooling-off must be answered before anything is erased), and does not start at all when the
  plan cannot run it (a missing account id or secret): nothing half-done.
- Before a job starts, the plan's holds are checked in the app's data (a chargeback, a legal
  hold: threats row 23); one that applies holds the job behind a flag for a person.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime
from uuid import uuid4

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inbox_bot.erasure.executors import ExecutorError, JobContext, backoff_delay
from inbox_bot.store.db import transaction
from inbox_bot.store.models import DeletionRequest, ErasureJob, ErasureStep, Flag, as_utc
from inbox_bot.types import State
from inbox_bot.workflow import Workflow

log = logging.getLogger("inbox_bot.erasure")

ACTIVE = ("queued", "running")


def new_owner() -> str:
    """``host:pid:nonce``: unique per worker run, and enough to tell that a local owner died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"


def _owner_dead(owner: str) -> bool:
    """True only for an owner on this host whose process is gone (its lease can be taken at once)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def due_jobs(engine: Engine, now: datetime) -> list[int]:
    with transaction(engine) as s:
        jobs = s.exec(select(ErasureJob).where(ErasureJob.status.in_(ACTIVE)).order_by(ErasureJob.id)).all()
        return [j.id for j in jobs if as_utc(j.run_after) <= now]


def _steps(s: Session, job_id: int) -> list[ErasureStep]:
    return list(s.exec(select(ErasureStep).where(ErasureStep.job_id == job_id).order_by(ErasureStep.seq)).all())


def _params(req: DeletionRequest, job: ErasureJob) -> dict:
    return {"account_id": req.account_id, "email": req.email, "request_id": req.id, "job_id": job.id}


def _release(job: ErasureJob) -> None:
    job.lease_owner, job.lease_until = None, None


def progress(s: Session, job: ErasureJob) -> list[str]:
    """One line per step: what ran, how often, and what it reported (the evidence staff see)."""
    lines = []
    for st in _steps(s, job.id):
        detail = st.error if st.status in ("failed", "retry", "running") else st.note
        tries = f", {st.attempts} attempt(s)" if st.attempts else ""
        lines.append(f"{st.seq}. {st.name} ({st.executor}): {st.status}{tries}" + (f": {detail}" if detail else ""))
    return lines


def _flag_job(s: Session, workflow: Workflow, job: ErasureJob, req: DeletionRequest, reason: str,
              now: datetime) -> None:
    done = sum(st.status == "done" for st in _steps(s, job.id))
    total = len(_steps(s, job.id))
    workflow.flag(s, req, reason=f"{reason} ({done} of {total} steps done)", now=now, actor="erasure-worker",
                  evidence=progress(s, job),
                  suggestion=f"fix the cause, then `inbox-bot erasure retry {job.id}` (steps already done are "
                             "not repeated); or finish the remaining steps by hand")


def _claim(engine: Engine, workflow: Workflow, job_id: int, owner: str, now: datetime) -> str:
    """Take the job's lease and start it if it is queued; returns ok, busy, held, failed or skipped."""
    settings = workflow.cfg.erasure
    with transaction(engine) as s:
        job = s.get(ErasureJob, job_id)
        if job is None or job.status not in ACTIVE:
            return "skipped"
        holder, until = job.lease_owner, as_utc(job.lease_until)
        if holder and holder != owner and until is not None and until > now and not _owner_dead(holder):
            return "busy"
        cond = ErasureJob.lease_owner.is_(None) if holder is None else ErasureJob.lease_owner == holder
        taken = s.exec(update(ErasureJob).where(ErasureJob.id == job_id, ErasureJob.status == job.status, cond)
                       .values(lease_owner=owner, lease_until=now + settings.lease)).rowcount
        if not taken:
            return "busy"
        s.refresh(job)
        if holder and holder != owner:
            log.warning("erasure job=%s: took over the lease of %s (expired or its process is gone)", job_id, holder)
        req = s.get(DeletionRequest, job.request_id)
        if job.status == "queued":
            if State(req.state) is not State.ERASURE_QUEUED:
                job.status, job.error = "cancelled", f"request is {req.state}"
                _release(job)
                s.add(job)
                return "skipped"
            if s.exec(select(Flag.id).where(Flag.request_id == req.id, Flag.status == "open")).first():
                _release(job)
                s.add(job)
                log.info("erasure job=%s held: request %s has an open flag", job_id, req.id)
                return "held"
            holds = workflow.plan.holds_applying(_params(req, job))
            if holds:
                _release(job)
                s.add(job)
                workflow.flag(s, req, reason=f"requires manual: erasure job {job.id} not started: " + "; ".join(holds),
                              now=now, actor="erasure-worker", evidence=holds,
                              suggestion="settle the hold in the app first, then `inbox-bot flags resolve ID "
                                         "--action dismiss` and the job starts (the holds are checked again); "
                                         "or cancel the request")
                log.warning("erasure job=%s held for a person: %s", job_id, "; ".join(holds))
                return "held"
        problems = workflow.plan.problems([st.name for st in _steps(s, job_id) if st.status != "done"],
                                          _params(req, job))
        if problems:
            started = job.status == "running"
            job.status, job.error = "failed", "; ".join(problems)
            _release(job)
            s.add(job)
            _flag_job(s, workflow, job, req, f"erasure job {job.id} cannot {'go on' if started else 'start'}: "
                      + "; ".join(problems), now)
            log.error("erasure job=%s cannot run: %s", job_id, job.error)
            return "failed"
        if job.status == "queued":
            workflow.start_erasure(s, req, job, now=now)
        return "ok"


def run_job(engine: Engine, workflow: Workflow, job_id: int, clock: Callable[[], datetime],
            owner: str | None = None) -> str:
    """Run one job as far as it goes now; returns done, retry, failed, held, busy or skipped."""
    owner = owner or new_owner()
    settings = workflow.cfg.erasure
    claimed = _claim(engine, workflow, job_id, owner, clock())
    if claimed != "ok":
        return claimed
    with transaction(engine) as s:
        step_ids = [st.id for st in _steps(s, job_id) if st.status != "done"]
    for step_id in step_ids:
        with transaction(engine) as s:
            now = clock()
            job, step = s.get(ErasureJob, job_id), s.get(ErasureStep, step_id)
            if job.lease_owner != owner:
                return "busy"
            if step.status == "done":
                continue
            if step.next_attempt_at is not None and as_utc(step.next_attempt_at) > now:
                job.run_after = step.next_attempt_at
                _release(job)
                s.add(job)
                return "retry"
            req = s.get(DeletionRequest, job.request_id)
            step.status, step.attempts, step.started_at, step.error = "running", step.attempts + 1, now, None
            job.lease_until = now + settings.lease
            s.add_all([step, job])
            ctx = JobContext(job_id=job.id, job_uid=job.uid, request_id=req.id, step=step.name,
                             account_id=req.account_id, email=req.email, attempt=step.attempts)
            plan_step = workflow.plan.step(step.name)
        note, error, permanent = "", None, False
        try:
            if plan_step is None:
                raise ExecutorError(f"step {ctx.step} is not in the plan", permanent=True)
            note = plan_step.run(ctx)
        except ExecutorError as exc:
            error, permanent = str(exc), exc.permanent
        except Exception as exc:  # noqa: BLE001 - an executor bug is recorded and retried, never lost
            log.exception("erasure job=%s step=%s: unexpected error", job_id, ctx.step)
            error = f"{type(exc).__name__}: {exc}"
        with transaction(engine) as s:
            now = clock()
            job, step = s.get(ErasureJob, job_id), s.get(ErasureStep, step_id)
            if job.lease_owner != owner:
                log.error("erasure job=%s step=%s: lease lost to %s; its result is left to the new owner",
                          job_id, step.name, job.lease_owner)
                return "busy"
            if error is None:
                step.status, step.finished_at, step.note, step.next_attempt_at = "done", now, note, None
                s.add(step)
                log.info("erasure job=%s step=%s done (attempt %s): %s", job_id, step.name, step.attempts, note)
                continue
            step.error = error
            req = s.get(DeletionRequest, job.request_id)
            if not permanent and step.attempts < settings.max_attempts:
                step.status = "retry"
                step.next_attempt_at = job.run_after = now + backoff_delay(settings.retry_backoff, step.attempts)
                job.error = f"step {step.name} attempt {step.attempts} failed: {error}"
                _release(job)
                s.add_all([step, job])
                log.warning("erasure job=%s step=%s attempt %s failed, next at %s: %s", job_id, step.name,
                            step.attempts, step.next_attempt_at.isoformat(), error)
                return "retry"
            step.status, job.status = "failed", "failed"
            job.error = f"step {step.name}: {error}"
            _release(job)
            s.add_all([step, job])
            why = "failed permanently" if permanent else f"failed {step.attempts} times"
            _flag_job(s, workflow, job, req, f"erasure step {step.name} {why}: {error}", now)
            log.error("erasure job=%s step=%s %s: %s", job_id, step.name, why, error)
            return "failed"
    with transaction(engine) as s:
        job = s.get(ErasureJob, job_id)
        if job.lease_owner != owner:
            return "busy"
        req = s.get(DeletionRequest, job.request_id)
        _release(job)
        workflow.finish_erasure(s, req, job, now=clock())
    log.info("erasure job=%s request=%s done", job_id, job.request_id)
    return "done"


def run_due(engine: Engine, workflow: Workflow, clock: Callable[[], datetime]) -> dict[str, int]:
    """Run every due job; returns counts by outcome."""
    counts: dict[str, int] = {}
    owner = new_owner()
    for job_id in due_jobs(engine, clock()):
        status = run_job(engine, workflow, job_id, clock, owner)
        counts[status] = counts.get(status, 0) + 1
    return counts


def retry_job(engine: Engine, workflow: Workflow, job_id: int, *, actor: str, reason: str,
              now: datetime) -> dict:
    """A person fixed the cause: put a failed job back in the queue (done steps stay done) and
    resolve the request's open flags, which were about this failure."""
    with transaction(engine) as s:
        job = s.get(ErasureJob, job_id)
        if job is None:
            raise LookupError(f"no erasure job with id {job_id}")
        if job.status != "failed":
            raise ValueError(f"erasure job {job_id} is {job.status}; only a failed job can be retried")
        req = s.get(DeletionRequest, job.request_id)
        for st in _steps(s, job_id):
            if st.status != "done":
                st.status, st.attempts, st.next_attempt_at = "pending", 0, None
                s.add(st)
        job.status = "running" if job.started_at is not None else "queued"
        job.run_after, job.error = now, None
        _release(job)
        s.add(job)
        workflow.resolve_flags(s, req, actor=actor, resolution="retry", reason=reason, now=now)
        workflow._audit(s, req, actor=actor, event="erasure_job_retry", now=now,
                             reasons=[f"job {job_id} back in the queue", *([reason] if reason else [])])
        return {"id": job.id, "request_id": req.id, "status": job.status}
