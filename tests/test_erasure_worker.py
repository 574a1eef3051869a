"""The erasure worker: retries with backoff, a person after the last attempt, one worker per job,
held while a flag is open, cancel inside the cooling-off, and a SIGKILL in the middle of a job."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from inbox_bot import commands
from inbox_bot.erasure import worker
from inbox_bot.mail.samples import build_reply, last_sent
from inbox_bot.sample_app import create_sample_app
from inbox_bot.store.db import transaction
from inbox_bot.store.models import DeletionRequest, ErasureJob, OutboxMail
from tests.conftest import bot_executable, drop, sent_dir
from tests.erasure_support import confirmed, job_of, open_flags, plan_app, write_plan

STEP_SCRIPT = '''\
"""A test erasure program: logs each start and end, fails or sleeps as its args say, idempotent effect."""
import json, os, pathlib, sys, time
job = json.load(sys.stdin)
args, step, attempt = job["args"], job["step"], job["attempt"]
log = pathlib.Path(args["log"])
def note(line):
    with log.open("a") as f:
        f.write(line + "\\n")
note(f"start {step} {attempt} pid={os.getpid()}")
if attempt <= args.get("sleep_first", 0) and args.get("sleep"):
    time.sleep(args["sleep"])
if attempt <= args.get("fail_times", 0):
    print("not yet", file=sys.stderr)
    sys.exit(args.get("code", 75))
marker = pathlib.Path(args["effects"]) / step
if not marker.exists():
    marker.write_text(job["idempotency_key"])
note(f"done {step} {attempt}")
print(f"{step} erased")
'''


def command_plan(folder: Path, steps: list[tuple[str, dict]]) -> Path:
    """A plan of ``command`` steps running STEP_SCRIPT with per-step args."""
    script = folder / "step.py"
    folder.mkdir(parents=True, exist_ok=True)
    script.write_text(STEP_SCRIPT)
    (folder / "effects").mkdir(exist_ok=True)
    body = ""
    for name, args in steps:
        args = {"log": str(folder / "log.txt"), "effects": str(folder / "effects"), **args}
        body += (f'[[steps]]\nname = "{name}"\nexecutor = "command"\n'
                 f"command = {json.dumps([sys.executable, str(script)])}\ntimeout = \"60s\"\n"
                 f"args = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in args.items())} }}\n\n")
    return write_plan(folder, body)


def log_lines(folder: Path) -> list[str]:
    path = folder / "log.txt"
    return [" ".join(w for w in line.split() if not w.startswith("pid="))
            for line in path.read_text().splitlines()] if path.exists() else []


def test_a_failing_step_is_retried_with_growing_backoff(make_app, clock, tmp_path: Path) -> None:
    plan = command_plan(tmp_path / "p", [("first", {}), ("flaky", {"fail_times": 2})])
    app = plan_app(make_app, plan, max_attempts=5)
    rid = confirmed(app)
    assert app.run_erasures() == {"retry": 1}
    job, steps = job_of(app, rid)
    assert [(st.status, st.attempts) for st in steps] == [("done", 1), ("retry", 1)]
    assert steps[1].next_attempt_at.replace(tzinfo=clock.now.tzinfo) == clock.now + timedelta(minutes=1)
    assert "exit 75" in steps[1].error and "attempt 1 failed" in job.error
    assert app.run_erasures() == {}  # not due before the backoff has passed
    clock.advance(seconds=61)
    assert app.run_erasures() == {"retry": 1}
    _, steps = job_of(app, rid)
    assert steps[1].next_attempt_at.replace(tzinfo=clock.now.tzinfo) == clock.now + timedelta(minutes=2)
    clock.advance(minutes=1)
    assert app.run_erasures() == {}
    clock.advance(minutes=1, seconds=1)
    assert app.run_erasures() == {"done": 1}
    _, steps = job_of(app, rid)
    assert [(st.status, st.attempts) for st in steps] == [("done", 1), ("done", 3)]
    assert log_lines(tmp_path / "p").count("start first 1") == 1 and open_flags(app, rid) == []


def test_the_last_attempt_flags_a_person_with_the_progress_then_retry_resumes(make_app, clock,
                                                                              tmp_path: Path) -> None:
    steps_cfg = [("first", {}), ("broken", {"fail_times": 99}), ("last", {})]
    app = plan_app(make_app, command_plan(tmp_path / "p", steps_cfg), max_attempts=3)
    rid = confirmed(app)
    outcomes = []
    for _ in range(3):
        outcomes.append(app.run_erasures())
        clock.advance(hours=1)
    assert outcomes == [{"retry": 1}, {"retry": 1}, {"failed": 1}]
    job, steps = job_of(app, rid)
    assert job.status == "failed" and [st.status for st in steps] == ["done", "failed", "pending"]
    [flag] = open_flags(app, rid)
    assert "broken failed 3 times" in flag.reason and "1 of 3 steps done" in flag.reason
    evidence = commands.flag_json(flag)["evidence"]
    assert evidence[0].startswith("1. first (command): done, 1 attempt(s): first erased")
    assert evidence[1].startswith("2. broken (command): failed, 3 attempt(s): exit 75")
    assert evidence[2] == "3. last (command): pending"
    assert app.run_erasures() == {}  # a failed job waits for a person

    fixed = command_plan(tmp_path / "p", [("first", {}), ("broken", {}), ("last", {})])
    app = plan_app(make_app, fixed, max_attempts=3)
    view = commands.retry_erasure(app, job.id, "staff:kim", "fixed the app's erase endpoint")
    assert view["status"] == "running" and open_flags(app, rid) == []
    assert app.run_erasures() == {"done": 1}
    assert commands.show_request(app, rid)["state"] == "erased"
    assert log_lines(tmp_path / "p").count("start first 1") == 1  # done steps are never repeated
    with pytest.raises(commands.CommandError, match="only a failed job"):
        commands.retry_erasure(app, job.id, "staff:kim", "again")


def test_a_permanent_failure_flags_at_once(make_app, tmp_path: Path) -> None:
    app = plan_app(make_app, command_plan(tmp_path / "p", [("refuses", {"fail_times": 9, "code": 3})]))
    rid = confirmed(app)
    assert app.run_erasures() == {"failed": 1}
    _, [step] = job_of(app, rid)
    assert step.attempts == 1 and step.error.startswith("exit 3")
    [flag] = open_flags(app, rid)
    assert "failed permanently" in flag.reason
    with transaction(app.engine) as s:
        staff = list(s.exec(select(OutboxMail).where(OutboxMail.kind == "staff_flag")))
    assert len(staff) == 1


def test_a_job_never_runs_twice_at_the_same_time(make_app, clock, tmp_path: Path) -> None:
    folder = tmp_path / "p"
    app = plan_app(make_app, command_plan(folder, [("slow", {"sleep": 1.5, "sleep_first": 1})]))
    rid = confirmed(app)
    job, _ = job_of(app, rid)
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(
        worker.run_job(app.engine, app.workflow, job.id, clock, owner="host-a:1:aaaa")))
    first.start()
    deadline = time.monotonic() + 20
    while not log_lines(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.run_job(app.engine, app.workflow, job.id, clock, owner="host-b:2:bbbb") == "busy"
    first.join(30)
    assert results == ["done"]
    assert log_lines(folder) == ["start slow 1", "done slow 1"]


def test_a_lease_is_taken_over_only_when_its_owner_is_gone(make_app, clock, tmp_path: Path) -> None:
    app = plan_app(make_app, command_plan(tmp_path / "p", [("one", {})]))
    rid = confirmed(app)
    job, _ = job_of(app, rid)

    def lease(owner: str) -> None:
        with transaction(app.engine) as s:
            row = s.get(ErasureJob, job.id)
            row.lease_owner, row.lease_until = owner, clock.now + timedelta(minutes=30)
            s.add(row)

    lease("other-host.example:4242:cafe")
    assert app.run_erasures() == {"busy": 1}
    clock.advance(minutes=31)  # expired: taken over
    assert app.run_erasures() == {"done": 1}

    rid2 = confirmed(app, "ben.okafor@example.org", "acc_1002")
    job, _ = job_of(app, rid2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease(f"{socket.gethostname()}:{dead.pid}:dead")  # a local worker that was killed
    assert app.run_erasures() == {"done": 1}


def test_a_job_waits_while_its_request_has_an_open_flag(make_app, clock, tmp_path: Path) -> None:
    app = plan_app(make_app, command_plan(tmp_path / "p", [("one", {})]), cooling_off="1h")
    rid = confirmed(app)
    with transaction(app.engine) as s:
        req = s.get(DeletionRequest, rid)
        app.workflow.flag(s, req, reason="the customer asks about invoices", now=clock.now)
    clock.advance(hours=2)
    assert app.run_erasures() == {"held": 1}
    assert log_lines(tmp_path / "p") == [] and commands.show_request(app, rid)["state"] == "erasure_queued"
    with transaction(app.engine) as s:
        app.workflow.resolve_flags(s, s.get(DeletionRequest, rid), actor="staff:kim", resolution="dismiss",
                                   reason="answered: invoices are kept", now=clock.now)
    assert app.run_erasures() == {"done": 1}


def test_a_cancel_during_the_cooling_off_stops_the_job_before_any_step(make_app, clock, tmp_path: Path) -> None:
    sample = create_sample_app(tmp_path / "clickport")
    app = plan_app(make_app, sample.plan, cooling_off="1h")
    before = sqlite3.connect(sample.db).execute("SELECT count(*) FROM pageviews").fetchone()
    addr = "ana.ruiz@example.net"
    rid = commands.add_request(app, addr, "acc_1001", "", "staff:test")["id"]
    commands.staff_transition(app, "ask", rid, "staff:test", "")
    app.poll_once()
    drop(app, build_reply(last_sent(sent_dir(app))[addr], addr, "Yes, please delete my account."), "1.confirm")
    assert app.poll_once()["queue_erasure"] == 1
    clock.advance(minutes=30)
    drop(app, build_reply(last_sent(sent_dir(app))[addr], addr, "Please cancel the deletion, I changed my mind."),
         "2.cancel")
    assert app.poll_once()["cancel"] == 1
    clock.advance(hours=2)
    assert app.run_erasures() == {}
    job, steps = job_of(app, rid)
    assert job.status == "cancelled" and job.started_at is None
    assert all(st.status == "pending" and st.attempts == 0 for st in steps)
    assert sqlite3.connect(sample.db).execute("SELECT count(*) FROM pageviews").fetchone() == before
    assert (sample.avatars / "acc_1001.png").exists()
    assert commands.show_request(app, rid)["mails"][-1]["kind"] == "cancelled"


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_in_the_middle_then_restart_completes_every_step_once(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    command_plan(folder, [("first", {}), ("second", {}), ("slow", {"sleep": 60, "sleep_first": 1}),
                          ("last", {})])
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[erasure]\ncooling_off = "0s"\nplan = "p/plan.toml"\n')
    bot = [bot_executable(), "--config", str(cfg)]
    rid = json.loads(subprocess.run([*bot, "request", "add", "--email", "ana.ruiz@example.net", "--account-id",
                                     "acc_1001", "--json"], check=True, capture_output=True).stdout)["id"]
    subprocess.run([*bot, "request", "confirm", str(rid), "--reason", "phone"], check=True, capture_output=True)

    proc = subprocess.Popen([*bot, "erasure", "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_for(lambda: "start slow 1" in log_lines(folder)), proc.communicate(timeout=5)
    child = int((folder / "log.txt").read_text().split("pid=")[-1].split()[0])
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert _wait_for(lambda: not _alive(child), 5), "the step's program must die with its worker"

    again = subprocess.run([*bot, "-q", "erasure", "run", "--json"], capture_output=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr.decode()
    assert json.loads(again.stdout) == {"done": 1}
    assert log_lines(folder) == ["start first 1", "done first 1", "start second 1", "done second 1",
                                 "start slow 1", "start slow 2", "done slow 2", "start last 1", "done last 1"]
    assert sorted(p.name for p in (folder / "effects").iterdir()) == ["first", "last", "second", "slow"]
    shown = json.loads(subprocess.run([*bot, "request", "show", str(rid), "--json"], check=True,
                                      capture_output=True).stdout)
    assert shown["state"] == "erased"
    assert [(st["name"], st["status"], st["attempts"]) for st in shown["erasure_jobs"][0]["steps"]] == [
        ("first", "done", 1), ("second", "done", 1), ("slow", "done", 2), ("last", "done", 1)]
