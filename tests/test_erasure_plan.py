"""The erasure plan as configuration: the packaged default, and one-line errors naming step and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox_bot.cli import main
from inbox_bot.config import ConfigError, build_config
from inbox_bot.erasure.plan import PlanError, load_plan, packaged_plan_path, plan_for
from tests.erasure_support import write_plan

PRODUCT_STEPS = ["cancel_billing", "delete_user_record", "end_sessions", "delete_sites", "remove_memberships",
                 "delete_avatar"]


def test_packaged_default_records_the_six_product_steps(tmp_path: Path) -> None:
    plan = plan_for(build_config({}, tmp_path))
    assert plan.source == packaged_plan_path()
    assert [(st.name, st.executor) for st in plan.steps] == [(n, "record") for n in PRODUCT_STEPS]
    assert all(st.description for st in plan.steps)


def test_operator_plan_paths_are_relative_to_the_plan_file(tmp_path: Path) -> None:
    write_plan(tmp_path / "ops", """
        [defaults.sql]
        url = "sqlite:///app.db"
        [[steps]]
        name = "end_sessions"
        executor = "sql"
        statements = ["DELETE FROM sessions WHERE user_id = :account_id"]
        [[steps]]
        name = "avatar"
        executor = "file"
        root = "avatars"
        paths = ["{account_id}.png", "{account_id}-*.jpg"]
        [[steps]]
        name = "hook"
        executor = "command"
        command = "bin/erase --quiet"
    """)
    cfg = build_config({"erasure": {"plan": "ops/plan.toml"}}, tmp_path)
    plan = plan_for(cfg)
    sql, file, cmd = plan.steps
    assert sql.settings["url"] == f"sqlite:///{tmp_path / 'ops' / 'app.db'}"
    assert file.settings["root"] == str(tmp_path / "ops" / "avatars")
    assert cmd.settings["command"] == [str(tmp_path / "ops" / "bin" / "erase"), "--quiet"]


BAD = [
    ('[[steps]]\nname = "x"\nexecutor = "ftp"\n', "step 1 (x).executor:"),
    ('[[steps]]\nname = "Bad Name"\n', "step 1.name:"),
    ('[[steps]]\nname = "a"\n[[steps]]\nname = "a"\n', "step 2 (a).name:"),
    ('[[steps]]\nname = "s"\nexecutor = "sql"\nurl = "sqlite:///a.db"\nstatments = []\n', "step 1 (s).statments:"),
    ('[[steps]]\nname = "s"\nexecutor = "sql"\nurl = "sqlite:///a.db"\n', "step 1 (s).statements:"),
    ('[[steps]]\nname = "s"\nexecutor = "sql"\nstatements = ["DELETE FROM t WHERE a = :account_id"]\n',
     "step 1 (s).url:"),
    ('[[steps]]\nname = "s"\nexecutor = "sql"\nurl = "sqlite:///a.db"\nstatements = ["DELETE FROM users"]\n',
     "step 1 (s).statements[0]:"),
    ('[[steps]]\nname = "s"\nexecutor = "sql"\nurl = "sqlite:///a.db"\n'
     'statements = ["DELETE FROM t WHERE a = :account_id", "DROP TABLE users"]\n', "step 1 (s).statements[1]:"),
    ('[[steps]]\nname = "s"\nexecutor = "sql"\nurl = "sqlite:///a.db"\n'
     'statements = ["DELETE FROM t WHERE id = :user"]\n', "step 1 (s).statements[0]:"),
    ('[[steps]]\nname = "h"\nexecutor = "http"\nurl = "ftp://x"\nsecret_env = "S"\n', "step 1 (h).url:"),
    ('[[steps]]\nname = "h"\nexecutor = "http"\nurl = "https://app/x"\n', "step 1 (h).secret_env:"),
    ('[[steps]]\nname = "h"\nexecutor = "http"\nurl = "https://app/x"\nsecret_env = "S"\ntimeout = "soon"\n',
     "step 1 (h).timeout:"),
    ('[[steps]]\nname = "c"\nexecutor = "command"\n', "step 1 (c).command:"),
    ('[[steps]]\nname = "f"\nexecutor = "file"\nroot = "a"\npaths = ["../{account_id}.png"]\n',
     "step 1 (f).paths[0]:"),
    ('[[steps]]\nname = "f"\nexecutor = "file"\nroot = "a"\npaths = ["/etc/{account_id}"]\n',
     "step 1 (f).paths[0]:"),
    ('[[steps]]\nname = "f"\nexecutor = "file"\nroot = "a"\npaths = ["{user}.png"]\n', "step 1 (f).paths[0]:"),
    ('[defaults.sql]\nuri = "x"\n[[steps]]\nname = "a"\n', "defaults.sql.uri:"),
    ("steps = []\n", "steps:"),
    ('[[step]]\nname = "a"\n', "step:"),
]


@pytest.mark.parametrize(("body", "where"), BAD)
def test_bad_plans_are_one_line_naming_step_and_key(tmp_path: Path, body: str, where: str) -> None:
    path = write_plan(tmp_path, body)
    with pytest.raises(PlanError) as err:
        load_plan(path)
    message = str(err.value)
    assert message.startswith(f"erasure.plan: {path}: {where}"), message
    assert "\n" not in message


def test_missing_plan_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^erasure\.plan: file not found"):
        build_config({"erasure": {"plan": "nowhere.toml"}}, tmp_path)


@pytest.mark.parametrize(("erasure", "key"), [({"max_attempts": 0}, "erasure.max_attempts"),
                                              ({"retry_backoff": "later"}, "erasure.retry_backoff"),
                                              ({"backup_days": "30"}, "erasure.backup_days"),
                                              ({"audit_key_env": "not a name"}, "erasure.audit_key_env")])
def test_erasure_keys_are_checked(tmp_path: Path, erasure: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"erasure": erasure}, tmp_path)
    assert str(err.value).startswith(key + ":")


def test_a_bad_plan_stops_the_cli_at_start_up_with_exit_2(tmp_path: Path, capsys) -> None:
    write_plan(tmp_path, '[[steps]]\nname = "s"\nexecutor = "sql"\nurl = "sqlite:///a.db"\n'
                         'statements = ["DELETE FROM users"]\n')
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[erasure]\nplan = "plan.toml"\n')
    assert main(["--config", str(cfg), "requests", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "step 1 (s).statements[0]" in err and "Traceback" not in err


def test_erasure_plan_command_lists_steps_and_missing_secrets(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET_FOR_TESTS", raising=False)
    write_plan(tmp_path, '[[steps]]\nname = "app_hook"\nexecutor = "http"\nurl = "https://app.example/erase"\n'
                         'secret_env = "NO_SUCH_SECRET_FOR_TESTS"\ndescription = "the app erases"\n')
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[erasure]\nplan = "plan.toml"\n')
    assert main(["--config", str(cfg), "erasure", "plan"]) == 0
    out = capsys.readouterr().out
    assert "app_hook" in out and "http" in out and "NO_SUCH_SECRET_FOR_TESTS" in out
