"""The command-line contract of design.md, driven through the real console script and main()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from inbox_bot.cli import main
from inbox_bot.mail.samples import build_reply, last_sent
from tests.conftest import bot_executable

CONFIG = """\
[mailbox]
address = "support@clickport.io"
source = "maildir:mail/inbox"
poll_interval = "1s"
[outgoing]
transport = "maildir:mail/sent"
[database]
url = "sqlite:///state.db"
[security]
trusted_authserv_ids = ["mx.clickport.io"]
[workflow]
auto_ask = false
[erasure]
cooling_off = "0s"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    f = tmp_path / "inbox-bot.toml"
    f.write_text(CONFIG)
    return f


def run_json(capsys, cfg: Path, *args: str):
    capsys.readouterr()
    assert main(["--config", str(cfg), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_request_lifecycle_json(capsys, cfg: Path) -> None:
    req = run_json(capsys, cfg, "request", "add", "--email", "Ana@Example.net", "--account-id", "acc_1",
                   "--note", "bye")
    assert (req["email"], req["state"], req["account_id"]) == ("ana@example.net", "received", "acc_1")
    assert req["sla_due_at"] and req["open_flag"] is False
    assert main(["--config", str(cfg), "request", "ask", str(req["id"])]) == 0
    listed = run_json(capsys, cfg, "requests", "list")
    assert [(r["id"], r["state"], r["sla_due_at"]) for r in listed] == [(req["id"], "awaiting_confirmation", None)]
    assert run_json(capsys, cfg, "requests", "list", "--state", "received") == []
    run_json(capsys, cfg, "request", "confirm", str(req["id"]), "--reason", "confirmed by phone")
    assert run_json(capsys, cfg, "erasure", "run") == {"done": 1}
    shown = run_json(capsys, cfg, "request", "show", str(req["id"]))
    assert shown["state"] == "erased"
    assert [e["event"] for e in shown["timeline"]] == [
        "received", "ask", "confirm", "erasure_job_queued", "start_erasure", "finish_erasure"]
    assert run_json(capsys, cfg, "poll", "--once")["outbox_sent"] == 4


def test_refused_transition_is_one_line_and_exit_1(capsys, cfg: Path) -> None:
    req = run_json(capsys, cfg, "request", "add", "--email", "ana@example.net")
    main(["--config", str(cfg), "request", "cancel", str(req["id"]), "--reason", "changed mind"])
    capsys.readouterr()
    assert main(["--config", str(cfg), "request", "confirm", str(req["id"]), "--reason", "x"]) == 1
    assert "cannot confirm while cancelled" in capsys.readouterr().err


def test_bad_email_is_refused(capsys, cfg: Path) -> None:
    assert main(["--config", str(cfg), "request", "add", "--email", "not an address"]) == 1
    assert "--email" in capsys.readouterr().err


def test_classify_json_reports_reply_text(capsys, cfg: Path, tmp_path: Path) -> None:
    eml = tmp_path / "r.eml"
    eml.write_bytes(b"From: a@example.net\r\nTo: support@clickport.io\r\nSubject: Re: x\r\n"
                    b"Message-ID: <r1@example.net>\r\n\r\nYes, please delete my account.\r\n\r\n"
                    b"On Tue, 1 Dec 2026 at 10:02, Clickport Support <support@clickport.io> wrote:\r\n"
                    b"> Please confirm. Or cancel.\r\n")
    out = run_json(capsys, cfg, "classify", str(eml))
    assert len(out) == 1
    assert out[0]["file"] == str(eml)
    assert out[0]["intent"] == "confirm" and out[0]["auto_generated"] is False
    assert out[0]["reply_text"].strip() == "Yes, please delete my account."
    assert out[0]["rules"]
    assert main(["--config", str(cfg), "classify", "--explain", str(eml)]) == 0
    text = capsys.readouterr().out
    assert "classify" in text and "Yes, please delete my account." in text


def test_sla_deadline_json(capsys, cfg: Path) -> None:
    out = run_json(capsys, cfg, "sla", "deadline", "2026-12-04T16:00:00+01:00")
    assert out == {"from": "2026-12-04T16:00:00+01:00", "due": "2026-12-07T16:00:00+01:00"}


def test_help_teaches_the_commands() -> None:
    out = subprocess.run([bot_executable(), "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("request", "poll", "classify", "erasure", "run", "demo", "examples:"):
        assert word in out


def test_demo_runs_the_whole_flow() -> None:
    proc = subprocess.run([bot_executable(), "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "action QUEUE_ERASURE" in out and "action CANCEL" in out and "action IGNORE" in out
    assert out.count("action FLAG_HUMAN") == 2  # the question and the forged sender
    assert "finish_erasure" in out


def test_run_daemon_processes_mail_and_stops_on_sigterm(cfg: Path) -> None:
    bot = bot_executable()
    base = cfg.parent
    req = json.loads(subprocess.run([bot, "--config", str(cfg), "request", "add", "--email", "ana@example.net",
                                     "--json"], capture_output=True, text=True, check=True).stdout)
    subprocess.run([bot, "--config", str(cfg), "request", "ask", str(req["id"])], check=True, capture_output=True)
    proc = subprocess.Popen([bot, "--config", str(cfg), "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        sent = base / "mail" / "sent" / "new"
        while time.monotonic() < deadline and len(list(sent.glob("*"))) < 2:
            time.sleep(0.2)
        ask = last_sent(base / "mail" / "sent")["ana@example.net"]
        raw = build_reply(ask, "ana@example.net", "Yes, please delete my account.")
        (base / "mail" / "inbox" / "tmp" / "1.reply").write_bytes(raw)
        os.rename(base / "mail" / "inbox" / "tmp" / "1.reply", base / "mail" / "inbox" / "new" / "1.reply")
        state = None
        while time.monotonic() < deadline and state != "erased":
            time.sleep(0.3)
            rows = json.loads(subprocess.run([bot, "--config", str(cfg), "requests", "list", "--json"],
                                             capture_output=True, text=True, check=True).stdout)
            state = rows[0]["state"]
        assert state == "erased", "run should poll, confirm and run the due erasure"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "stopped" in err
