"""The erasure plan: which steps an erasure job runs, with which executor and settings.

The plan is configuration, not code, so an operator describes the steps for their own stack
(``[erasure] plan = "erasure.toml"``; the packaged ``rules/erasure.toml`` records the product's
six steps without touching anything). It is checked when the bot starts: a bad plan is one line
naming the file, the step and the key, never a failure half-way through an erasure.

File format::

    [defaults.sql]                 # settings shared by every step of that executor
    url = "sqlite:///app.db"       # relative paths are relative to the plan file

    [[steps]]
    name = "end_sessions"
    executor = "sql"               # record | sql | http | command | file
    description = "every login session on every device"
    statements = ["DELETE FROM sessions WHERE user_id = :account_id"]

    [[holds]]                      # optional: when a person must decide (see inbox_bot/erasure/holds.py)
    name = "legal_hold"
    query = "SELECT 1 FROM legal_holds WHERE account_id = :account_id"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inbox_bot.config import Config, ConfigError
from inbox_bot.erasure.executors import EXECUTORS, Executor, JobContext, SettingError
from inbox_bot.erasure.holds import Hold, holds_applying, parse_hold
from inbox_bot.resources import default_rules_dir

PLAN_FILE = "erasure.toml"
STEP_KEYS = frozenset({"name", "executor", "description"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class PlanError(ConfigError):
    """A bad plan file; the message names the file, the step and the key."""


@dataclass(frozen=True)
class PlanStep:
    name: str
    executor: str = "record"
    description: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)  # validated and normalised by the executor

    @property
    def runner(self) -> Executor:
        return EXECUTORS[self.executor]

    def run(self, ctx: JobContext) -> str:
        return self.runner.run(ctx, dict(self.settings))


@dataclass(frozen=True)
class ErasurePlan:
    steps: tuple[PlanStep, ...]
    source: Path | None = None
    holds: tuple[Hold, ...] = ()

    def holds_applying(self, params: dict[str, Any]) -> list[str]:
        """Why the account in ``params`` must not be erased without a person now (empty: nothing holds it)."""
        return holds_applying(self.holds, params)

    def step(self, name: str) -> PlanStep | None:
        return next((st for st in self.steps if st.name == name), None)

    def problems(self, names: list[str], params: dict[str, Any]) -> list[str]:
        """Why a job with these step names and parameters cannot run now (empty: it can)."""
        found = []
        for name in names:
            step = self.step(name)
            if step is None:
                found.append(f"step {name} is no longer in the plan ({self.source or 'built-in'})")
                continue
            missing = sorted(p for p in step.runner.needs(dict(step.settings)) if params.get(p) in (None, ""))
            if missing:
                found.append(f"step {name} needs the request's {', '.join(missing)}, which is not set")
            found += [f"step {name}: {p}" for p in step.runner.problems(dict(step.settings))]
        return found


def packaged_plan_path() -> Path:
    return default_rules_dir() / PLAN_FILE


def plan_path(cfg: Config) -> Path:
    """``erasure.plan``, else ``erasure.toml`` in the rules folder, else the packaged one."""
    if cfg.erasure.plan is not None:
        return cfg.erasure.plan
    local = cfg.rules_dir / PLAN_FILE
    return local if local.is_file() else packaged_plan_path()


def parse_plan(data: dict[str, Any], base_dir: Path, label: str = "erasure.plan") -> ErasurePlan:
    """Validate parsed TOML; every error starts with ``label`` and names the step and key."""
    unknown = set(data) - {"defaults", "steps", "holds"}
    if unknown:
        raise PlanError(f"{label}: {sorted(unknown)[0]}: unknown key (known: defaults, steps, holds)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise PlanError(f"{label}: defaults: must be a table of tables ([defaults.sql], ...)")
    for name, values in defaults.items():
        if name not in EXECUTORS:
            raise PlanError(f"{label}: defaults.{name}: unknown executor (known: {', '.join(EXECUTORS)})")
        if not isinstance(values, dict):
            raise PlanError(f"{label}: defaults.{name}: must be a table")
        extra = set(values) - EXECUTORS[name].keys
        if extra:
            raise PlanError(f"{label}: defaults.{name}.{sorted(extra)[0]}: unknown key for the {name} executor "
                            f"(known: {', '.join(sorted(EXECUTORS[name].keys)) or 'none'})")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlanError(f"{label}: steps: needs at least one [[steps]] table")
    steps: list[PlanStep] = []
    for i, raw in enumerate(raw_steps, 1):
        where = f"{label}: step {i}"
        if not isinstance(raw, dict):
            raise PlanError(f"{where}: must be a table ([[steps]])")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PlanError(f"{where}.name: {name!r} must be lower_case_with_underscores")
        where = f"{label}: step {i} ({name})"
        if any(st.name == name for st in steps):
            raise PlanError(f"{where}.name: used by an earlier step too")
        kind = raw.get("executor", "record")
        if kind not in EXECUTORS:
            raise PlanError(f"{where}.executor: {kind!r} is not one of {', '.join(EXECUTORS)}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise PlanError(f"{where}.description: must be a string")
        executor = EXECUTORS[kind]
        settings = {k: v for k, v in raw.items() if k not in STEP_KEYS}
        extra = set(settings) - executor.keys
        if extra:
            raise PlanError(f"{where}.{sorted(extra)[0]}: unknown key for the {kind} executor "
                            f"(known: {', '.join(sorted(executor.keys)) or 'none'})")
        try:
            normalised = executor.validate({**defaults.get(kind, {}), **settings}, base_dir)
        except SettingError as exc:
            raise PlanError(f"{where}.{exc}") from exc
        steps.append(PlanStep(name=name, executor=kind, description=description, settings=normalised))
    raw_holds = data.get("holds", [])
    if not isinstance(raw_holds, list):
        raise PlanError(f"{label}: holds: must be an array of tables ([[holds]])")
    holds: list[Hold] = []
    for i, raw in enumerate(raw_holds, 1):
        try:
            holds.append(parse_hold(raw, defaults.get("sql", {}), base_dir))
        except SettingError as exc:
            raise PlanError(f"{label}: hold {i}.{exc}") from exc
    return ErasurePlan(steps=tuple(steps), holds=tuple(holds))


def load_plan(path: Path) -> ErasurePlan:
    label = f"erasure.plan: {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{label}: not valid TOML: {exc}") from exc
    plan = parse_plan(data, path.resolve().parent, label)
    return ErasurePlan(steps=plan.steps, source=path, holds=plan.holds)


def plan_for(cfg: Config) -> ErasurePlan:
    return load_plan(plan_path(cfg))
