"""A real erasure against the sample Clickport app: what goes, what stays, and paths that are refused."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from inbox_bot import commands
from inbox_bot.erasure.executors import ExecutorError, FileExecutor, JobContext
from inbox_bot.erasure.plan import load_plan
from inbox_bot.sample_app import (
    ACCOUNTS,
    ERASED_TABLES,
    KEPT_TABLES,
    MEMBERSHIPS,
    SampleApp,
    create_sample_app,
    footprint,
    site_ids,
)
from tests.erasure_support import confirmed, job_of, open_flags, plan_app

ANA, ANA_MAIL = "acc_1001", "ana.ruiz@example.net"


@pytest.fixture
def sample(tmp_path: Path) -> SampleApp:
    return create_sample_app(tmp_path / "clickport")


def dump(sample: SampleApp) -> dict[str, set[tuple]]:
    with sqlite3.connect(sample.db) as conn:
        tables = {t: set(conn.execute(f"SELECT * FROM {t}")) for t in (*ERASED_TABLES, *KEPT_TABLES)}
    conn.close()
    return tables


def ctx(account_id: str | None, step: str = "delete_avatar") -> JobContext:
    return JobContext(job_id=1, job_uid="0" * 32, request_id=1, step=step, account_id=account_id, email=ANA_MAIL)


def test_erasure_removes_every_row_of_the_account_and_keeps_invoices(make_app, sample: SampleApp) -> None:
    app = plan_app(make_app, sample.plan)
    sites = site_ids(sample, ANA)
    before = footprint(sample, ANA)
    others_before = {acc: footprint(sample, acc) for acc, _, _ in ACCOUNTS if acc != ANA}
    rows_before = dump(sample)
    assert all(before[t] > 0 for t in ERASED_TABLES) and before["avatar file"] == 1

    rid = confirmed(app)
    assert app.run_erasures() == {"done": 1}

    after = footprint(sample, ANA, sites)
    assert {t: after[t] for t in ERASED_TABLES} == dict.fromkeys(ERASED_TABLES, 0)
    assert after["avatar file"] == 0
    assert after["invoices"] == before["invoices"] == 4
    rows_after = dump(sample)
    for table in ERASED_TABLES:  # only the account's rows went; nothing else changed
        assert rows_after[table] <= rows_before[table]
        assert len(rows_before[table] - rows_after[table]) == before[table], table
    assert rows_after["invoices"] == rows_before["invoices"]
    with sqlite3.connect(sample.db) as conn:
        subs = dict(conn.execute("SELECT account_id, status FROM subscriptions"))
    conn.close()
    assert subs.pop(ANA) == "cancelled" and set(subs.values()) == {"active"}
    for member, owner in MEMBERSHIPS:  # Ana's memberships of others' sites were hers to lose
        others_before[owner]["team_memberships"] -= member == ANA
    assert {acc: footprint(sample, acc) for acc in others_before} == others_before
    assert sorted(p.name for p in sample.avatars.iterdir()) == sorted(f"{a}.png" for a, _, _ in ACCOUNTS[1:])

    view = commands.show_request(app, rid)
    assert view["state"] == "erased"
    steps = view["erasure_jobs"][0]["steps"]
    assert [(st["name"], st["status"], st["attempts"]) for st in steps] == [
        (st.name, "done", 1) for st in load_plan(sample.plan).steps]
    assert "row(s) changed" in steps[3]["note"] and "removed 1 file(s)" in steps[5]["note"]
    assert view["mails"][-1]["kind"] == "erased"


def test_every_step_can_run_again_without_changing_anything(make_app, sample: SampleApp) -> None:
    """A crash between a step's effect and its record repeats the step: that must be harmless."""
    app = plan_app(make_app, sample.plan)
    confirmed(app)
    app.run_erasures()
    rows = dump(sample)
    for step in load_plan(sample.plan).steps:
        if step.name == "verify_account":  # a check, not an effect: after the erasure it rightly fails
            continue
        note = step.run(ctx(ANA, step.name))
        assert note.startswith(("0 row(s) changed", "removed 0 file(s)")), (step.name, note)
    assert dump(sample) == rows


def test_a_wrong_account_id_stops_the_job_before_anything_changes(make_app, sample: SampleApp) -> None:
    app = plan_app(make_app, sample.plan)
    rows = dump(sample)
    rid = confirmed(app, ANA_MAIL, "acc_1002")  # Ben's account id with Ana's address
    assert app.run_erasures() == {"failed": 1}
    assert dump(sample) == rows and (sample.avatars / "acc_1002.png").exists()
    job, steps = job_of(app, rid)
    assert job.status == "failed" and steps[0].status == "failed" and "check failed" in steps[0].error
    assert {st.status for st in steps[1:]} == {"pending"}
    [flag] = open_flags(app, rid)
    assert "verify_account failed permanently" in flag.reason and "0 of 7 steps done" in flag.reason


def test_a_request_without_account_id_never_starts(make_app, sample: SampleApp) -> None:
    app = plan_app(make_app, sample.plan)
    rows = dump(sample)
    rid = confirmed(app, ANA_MAIL, None)
    assert app.run_erasures() == {"failed": 1}
    job, steps = job_of(app, rid)
    assert job.started_at is None and all(st.attempts == 0 for st in steps)
    assert dump(sample) == rows
    assert "needs the request's account_id" in open_flags(app, rid)[0].reason
    assert commands.show_request(app, rid)["state"] == "erasure_queued"
    commands.staff_transition(app, "cancel", rid, "staff:test", "no account id; the customer will write again")
    assert commands.show_request(app, rid)["state"] == "cancelled"


def test_a_symlinked_avatar_pointing_outside_is_refused(make_app, sample: SampleApp, tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("not the customer's")
    avatar = sample.avatars / f"{ANA}.png"
    avatar.unlink()
    avatar.symlink_to(outside)
    app = plan_app(make_app, sample.plan)
    rid = confirmed(app)
    assert app.run_erasures() == {"failed": 1}
    assert outside.read_text() == "not the customer's" and avatar.is_symlink()
    job, steps = job_of(app, rid)
    by_name = {st.name: st for st in steps}
    assert by_name["delete_avatar"].status == "failed" and "outside" in by_name["delete_avatar"].error
    assert by_name["delete_avatar"].attempts == 1  # refused paths are not retried
    assert by_name["delete_user_record"].status == "pending" and by_name["delete_sites"].status == "done"
    [flag] = open_flags(app, rid)
    assert "5 of 7 steps done" in flag.reason
    assert any("delete_avatar (file): failed" in line for line in commands.flag_json(flag)["evidence"])


@pytest.mark.parametrize("account_id", ["../outside", "..", "sub/../acc_1002", "a\\b"])
def test_placeholder_values_cannot_leave_the_root(sample: SampleApp, tmp_path: Path, account_id: str) -> None:
    (tmp_path / "outside.png").write_text("x")
    step = load_plan(sample.plan).step("delete_avatar")
    with pytest.raises(ExecutorError) as err:
        step.run(ctx(account_id))
    assert err.value.permanent and "refused" in str(err.value)
    assert (tmp_path / "outside.png").exists() and (sample.avatars / "acc_1002.png").exists()


def test_a_symlinked_folder_and_a_glob_stay_inside_the_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "acc_1.png").write_text("x")
    (root / "sub").symlink_to(elsewhere)
    executor = FileExecutor()
    settings = executor.validate({"root": str(root), "paths": ["sub/{account_id}.png"]}, tmp_path)
    with pytest.raises(ExecutorError, match="outside"):
        executor.run(ctx("acc_1"), settings)
    assert (elsewhere / "acc_1.png").exists()
    for name in ("acc_1.png", "acc_1-large.jpg", "acc_12.png"):
        (root / name).write_text("x")
    settings = executor.validate({"root": str(root), "paths": ["{account_id}.*", "{account_id}-*"]}, tmp_path)
    assert executor.run(ctx("acc_1"), settings) == "removed 2 file(s); 0 already absent"
    assert sorted(os.listdir(root)) == ["acc_12.png", "sub"]
    assert executor.run(ctx("acc_1"), settings) == "removed 0 file(s); 0 already absent"


def test_a_missing_root_is_an_error_not_an_empty_erasure(tmp_path: Path) -> None:
    executor = FileExecutor()
    settings = executor.validate({"root": "unmounted", "paths": ["{account_id}.png"]}, tmp_path)
    with pytest.raises(ExecutorError, match="root folder not found") as err:
        executor.run(ctx("acc_1"), settings)
    assert not err.value.permanent
