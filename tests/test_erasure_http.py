"""The ``http`` executor against a real local HTTP server (http.server in a thread)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inbox_bot import commands
from inbox_bot.erasure.executors import ExecutorError, HttpExecutor, JobContext
from tests.conftest import bot_executable
from tests.erasure_support import confirmed, job_of, open_flags, plan_app, write_plan

SECRET_ENV = "INBOX_BOT_TEST_ERASURE_SECRET"
SECRET = "s3cret-for-tests"


@dataclass
class AdminApp:
    """The app's admin endpoint: verifies the signature (401 if wrong), answers from a script of statuses."""

    statuses: list[int] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    hold: threading.Event | None = None
    seen: list[dict] = field(default_factory=list)
    url: str = ""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        verified = hmac.compare_digest(handler.headers.get("X-Signature", ""), expected)
        self.seen.append({"key": handler.headers.get("Idempotency-Key"), "verified": verified,
                          "body": json.loads(body), "path": handler.path})
        if self.hold is not None and len(self.seen) == 1:
            self.hold.wait(30)
        delay = self.delays.pop(0) if self.delays else 0
        time.sleep(delay)
        status = (self.statuses.pop(0) if self.statuses else 200) if verified else 401
        reply = b'{"erased": true}' if status == 200 else b'{"error": "try later"}'
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)


@pytest.fixture
def admin() -> Iterator[AdminApp]:
    state = AdminApp()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            state.handle(self)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/admin/erasure"
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()


def http_plan(folder: Path, url: str, **extra: str | int) -> Path:
    settings = "".join(f"{k} = {json.dumps(v)}\n" for k, v in {"backoff": "0s", "timeout": "2s", **extra}.items())
    return write_plan(folder, f'[[steps]]\nname = "app_erase"\nexecutor = "http"\nurl = "{url}?v=1"\n'
                              f'secret_env = "{SECRET_ENV}"\n{settings}')


@pytest.fixture(autouse=True)
def secret(monkeypatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


def test_the_signature_verifies_and_the_body_is_the_job(make_app, admin: AdminApp, tmp_path: Path) -> None:
    app = plan_app(make_app, http_plan(tmp_path, admin.url))
    rid = confirmed(app)
    assert app.run_erasures() == {"done": 1}
    [call] = admin.seen
    job, [step] = job_of(app, rid)
    assert call["verified"] and call["path"] == "/admin/erasure?v=1"
    assert call["key"] == f"erasure-{job.id}-{job.uid[:12]}-app_erase" == call["body"]["idempotency_key"]
    assert call["body"] == {"account_id": "acc_1001", "action": "app_erase", "email": "ana.ruiz@example.net",
                            "idempotency_key": call["key"], "job_id": job.id, "request_id": rid, "step": "app_erase"}
    assert step.note.startswith("HTTP 200")


def test_a_wrong_secret_is_rejected_by_the_app_and_fails_the_step(make_app, admin: AdminApp, tmp_path: Path,
                                                                   monkeypatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    app = plan_app(make_app, http_plan(tmp_path, admin.url))
    confirmed(app)
    assert app.run_erasures() == {"failed": 1}
    assert [c["verified"] for c in admin.seen] == [False]


def test_503_then_success(make_app, admin: AdminApp, tmp_path: Path) -> None:
    admin.statuses = [503]
    app = plan_app(make_app, http_plan(tmp_path, admin.url, tries=3))
    rid = confirmed(app)
    assert app.run_erasures() == {"done": 1}
    assert len(admin.seen) == 2 and admin.seen[0]["key"] == admin.seen[1]["key"]
    assert admin.seen[0]["body"] == admin.seen[1]["body"] and all(c["verified"] for c in admin.seen)
    assert job_of(app, rid)[1][0].attempts == 1


def test_a_timeout_is_retried(make_app, admin: AdminApp, tmp_path: Path) -> None:
    admin.delays = [1.5]
    app = plan_app(make_app, http_plan(tmp_path, admin.url, timeout="0.5s", tries=2))
    confirmed(app)
    assert app.run_erasures() == {"done": 1}
    assert len(admin.seen) == 2


def test_400_fails_the_step_and_flags_a_person(make_app, admin: AdminApp, tmp_path: Path) -> None:
    admin.statuses = [400]
    app = plan_app(make_app, http_plan(tmp_path, admin.url, tries=3))
    rid = confirmed(app)
    assert app.run_erasures() == {"failed": 1}
    assert len(admin.seen) == 1  # a 4xx is not retried
    job, [step] = job_of(app, rid)
    assert (job.status, step.status, step.attempts) == ("failed", "failed", 1)
    assert step.error.startswith("HTTP 400")
    [flag] = open_flags(app, rid)
    assert "app_erase failed permanently: HTTP 400" in flag.reason
    assert commands.show_request(app, rid)["mails"][-1]["kind"] == "staff_flag"


def test_5xx_exhausting_the_tries_is_retried_later_with_the_same_key(make_app, clock, admin: AdminApp,
                                                                      tmp_path: Path) -> None:
    admin.statuses = [502, 503]
    app = plan_app(make_app, http_plan(tmp_path, admin.url, tries=2))
    rid = confirmed(app)
    assert app.run_erasures() == {"retry": 1}
    clock.advance(minutes=2)
    assert app.run_erasures() == {"done": 1}
    assert len(admin.seen) == 3 and len({c["key"] for c in admin.seen}) == 1
    assert job_of(app, rid)[1][0].attempts == 2


def test_an_unreachable_app_is_retried_not_failed(tmp_path: Path) -> None:
    executor = HttpExecutor()
    settings = executor.validate({"url": "http://127.0.0.1:9/x", "secret_env": SECRET_ENV, "tries": 1}, tmp_path)
    ctx = JobContext(job_id=1, job_uid="ab" * 16, request_id=1, step="s", account_id="acc_1", email="a@b.example")
    with pytest.raises(ExecutorError) as err:
        executor.run(ctx, settings)
    assert not err.value.permanent and "after 1 tries" in str(err.value)


def test_a_repeat_after_a_crash_carries_the_same_idempotency_key(admin: AdminApp, tmp_path: Path) -> None:
    """SIGKILL the worker while the app is handling the request; the restarted worker repeats it."""
    admin.hold = threading.Event()
    http_plan(tmp_path, admin.url, timeout="20s")
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[erasure]\ncooling_off = "0s"\nplan = "plan.toml"\n')
    bot = [bot_executable(), "--config", str(cfg)]
    env = {**os.environ, SECRET_ENV: SECRET}
    rid = json.loads(subprocess.run([*bot, "request", "add", "--email", "ana.ruiz@example.net", "--account-id",
                                     "acc_1001", "--json"], check=True, capture_output=True, env=env).stdout)["id"]
    subprocess.run([*bot, "request", "confirm", str(rid), "--reason", "phone"], check=True, capture_output=True,
                   env=env)
    proc = subprocess.Popen([*bot, "erasure", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not admin.seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin.seen, proc.communicate(timeout=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    admin.hold.set()

    again = subprocess.run([*bot, "-q", "erasure", "run", "--json"], capture_output=True, env=env, timeout=60)
    assert json.loads(again.stdout) == {"done": 1}, again.stderr.decode()
    assert len(admin.seen) == 2 and admin.seen[0]["key"] == admin.seen[1]["key"]
    assert admin.seen[0]["body"] == admin.seen[1]["body"]
    shown = json.loads(subprocess.run([*bot, "request", "show", str(rid), "--json"], check=True,
                                      capture_output=True, env=env).stdout)
    assert shown["state"] == "erased" and shown["erasure_jobs"][0]["steps"][0]["attempts"] == 2


def test_the_backoff_doubles_up_to_a_cap() -> None:
    from inbox_bot.erasure.executors import backoff_delay

    base = timedelta(minutes=1)
    assert [backoff_delay(base, n) for n in (1, 2, 3, 4)] == [base, 2 * base, 4 * base, 8 * base]
    assert backoff_delay(base, 30) == timedelta(hours=6)
