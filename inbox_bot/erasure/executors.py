"""Executors run one erasure step against one system: ``record``, ``sql``, ``http``, ``command``, ``file``.

Each executor validates its settings once, when the plan is loaded (a bad plan stops the bot at
start-up, not half-way through an erasure), and runs a step idempotently: running a step that
already took effect changes nothing, because a crash between the effect and its record means
the step runs again. A failure is an ``ExecutorError``; ``permanent`` ones (a 4xx, a refused
path, a failing check) go to a person at once, the others are retried with backoff.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import hmac
import http.client
import json
import os
import re
import shlex
import signal
import string
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inbox_bot.config import ConfigError, parse_duration

PARAMS = ("account_id", "email", "request_id", "job_id")
"""What a step may use of its job: SQL bound parameters, file-name placeholders, the JSON sent out."""

EX_TEMPFAIL = 75  # sysexits.h: "try again later", the one exit code a command uses to ask for a retry


class ExecutorError(RuntimeError):
    """A step failed; the message says why (it is stored on the step and shown to staff)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SettingError(ValueError):
    """A bad step setting; ``key`` names it (the plan loader adds the file and the step)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class JobContext:
    """What one step of one job knows about the erasure; the same on every attempt."""

    job_id: int
    job_uid: str
    request_id: int
    step: str
    account_id: str | None
    email: str
    attempt: int = 1

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and crashes of this job's step, distinct for any other job or step."""
        return f"erasure-{self.job_id}-{self.job_uid[:12]}-{self.step}"

    def params(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "email": self.email, "request_id": self.request_id,
                "job_id": self.job_id}

    def payload(self) -> dict[str, Any]:
        """The job as data for another program (command stdin, HTTP body)."""
        return {**self.params(), "step": self.step, "idempotency_key": self.idempotency_key}


# --- setting helpers (each raises SettingError naming the key) ---------------------------------------

def _str(settings: dict, key: str, *, required: bool = True, default: str = "") -> str:
    value = settings.get(key, None if required else default)
    if value is None:
        raise SettingError(key, "is required")
    if not isinstance(value, str) or (required and not value.strip()):
        raise SettingError(key, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _str_list(settings: dict, key: str, *, required: bool = True) -> list[str]:
    value = settings.get(key, None if required else [])
    if value is None:
        raise SettingError(key, "is required")
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SettingError(key, "must be a list of non-empty strings")
    if required and not value:
        raise SettingError(key, "must name at least one item")
    return [v.strip() for v in value]


def _duration(settings: dict, key: str, default: str) -> float:
    try:
        return parse_duration(settings.get(key, default), key).total_seconds()
    except ConfigError as exc:
        raise SettingError(key, str(exc).split(": ", 1)[1]) from exc


def _int(settings: dict, key: str, default: int, low: int) -> int:
    value = settings.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SettingError(key, f"must be a whole number of at least {low}, got {value!r}")
    return value


def _env_name(settings: dict, key: str, *, required: bool) -> str:
    value = _str(settings, key, required=required)
    if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise SettingError(key, f"{value!r} is not an environment variable name")
    return value


def _missing(needed: set[str], ctx: JobContext) -> None:
    params = ctx.params()
    empty = sorted(p for p in needed if params.get(p) in (None, ""))
    if empty:
        raise ExecutorError(f"the request has no {', '.join(empty)}", permanent=True)


# --- the executors -----------------------------------------------------------------------------------

class Executor(ABC):
    """One kind of step. ``keys`` lists the settings it accepts (anything else is a plan error)."""

    name: str = ""
    keys: frozenset[str] = frozenset()

    @abstractmethod
    def validate(self, settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        """Check and normalise the settings (paths made absolute); raise SettingError."""

    def needs(self, settings: dict[str, Any]) -> set[str]:
        """The job parameters the step cannot run without (a request without an account id, say)."""
        return set()

    def problems(self, settings: dict[str, Any]) -> list[str]:
        """What the environment lacks right now (a secret not set), checked before a job starts."""
        return []

    @abstractmethod
    def run(self, ctx: JobContext, settings: dict[str, Any]) -> str:
        """Do the step; return a short note for the record, or raise ExecutorError."""


class RecordExecutor(Executor):
    """Records the step as done without touching any system (the embedded default)."""

    name = "record"

    def validate(self, settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        return {}

    def run(self, ctx: JobContext, settings: dict[str, Any]) -> str:
        return f"recorded {ctx.step} for account {ctx.account_id or ctx.email}"


class SqlExecutor(Executor):
    """Statements against the app's database, with bound parameters, in one transaction per step.

    ``require`` is a query that must return a row first (e.g. that the account id and the email
    belong together), so a wrong id in a request stops the job instead of erasing someone else.
    A statement that names neither :account_id nor :email does the same to every account (a bare
    DELETE, a TRUNCATE, a DROP), so it is refused when the plan is loaded.
    """

    name = "sql"
    keys = frozenset({"url", "url_env", "statements", "require"})

    def validate(self, settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        from sqlalchemy import text

        url = _str(settings, "url", required=False)
        url_env = _env_name(settings, "url_env", required=False)
        if bool(url) == bool(url_env):
            raise SettingError("url", "give exactly one of url (an SQLAlchemy URL) or url_env (a variable holding it)")
        if url:
            if not re.match(r"^[a-z][a-z0-9+]*://", url):
                raise SettingError("url", f"{url!r} is not an SQLAlchemy URL (e.g. sqlite:///app.db)")
            if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
                url = "sqlite:///" + str(base_dir / url.removeprefix("sqlite:///"))
        statements = _str_list(settings, "statements", required="require" not in settings)
        require = _str(settings, "require", required=False)
        binds: set[str] = set()
        for i, stmt in enumerate([*statements, *([require] if require else [])]):
            key = f"statements[{i}]" if i < len(statements) else "require"
            names = set(text(stmt).compile().params)
            unknown = names - set(PARAMS)
            if unknown:
                raise SettingError(key, f"unknown parameter :{sorted(unknown)[0]} (known: :{', :'.join(PARAMS)})")
            if not names & {"account_id", "email"}:
                raise SettingError(key, "must be limited by :account_id or :email (else it touches every account)")
            binds |= names
        return {"url": url, "url_env": url_env, "statements": statements, "require": require, "binds": binds}

    @staticmethod
    def url_of(settings: Mapping[str, Any]) -> str:
        """The database URL of validated settings ("" when its ``url_env`` variable is not set)."""
        return settings["url"] or os.environ.get(settings["url_env"], "")

    def needs(self, settings: dict[str, Any]) -> set[str]:
        return set(settings["binds"])

    def problems(self, settings: dict[str, Any]) -> list[str]:
        env = settings["url_env"]
        return [f"environment variable {env} (sql url_env) is not set"] if env and not os.environ.get(env) else []

    def run(self, ctx: JobContext, settings: dict[str, Any]) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
        from sqlalchemy.pool import NullPool

        _missing(settings["binds"], ctx)
        url = self.url_of(settings)
        if not url:
            raise ExecutorError(f"environment variable {settings['url_env']} is not set", permanent=True)
        params = ctx.params()

        def bound(stmt: str) -> dict[str, Any]:
            return {k: params[k] for k in text(stmt).compile().params}

        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                if settings["require"] and conn.execute(text(settings["require"]),
                                                        bound(settings["require"])).first() is None:
                    raise ExecutorError(f"check failed, nothing changed: {settings['require']}", permanent=True)
                counts = [conn.execute(text(stmt), bound(stmt)).rowcount for stmt in settings["statements"]]
        except OperationalError as exc:
            raise ExecutorError(f"database unavailable: {exc.orig}") from exc
        except DBAPIError as exc:
            raise ExecutorError(f"statement failed: {exc.orig}", permanent=not exc.connection_invalidated) from exc
        except SQLAlchemyError as exc:
            raise ExecutorError(f"statement failed: {exc}", permanent=True) from exc
        finally:
            engine.dispose()
        if not counts:
            return "check passed"
        return f"{sum(max(c, 0) for c in counts)} row(s) changed by {len(counts)} statement(s) ({counts})"


class HttpExecutor(Executor):
    """A signed POST of the job as JSON to the app's admin endpoint.

    ``X-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the secret from the environment
    variable named by ``secret_env``; ``Idempotency-Key`` is the same on every attempt of the step,
    so the app can recognise a repeat after a crash. 5xx answers, timeouts and connection errors
    are retried (``tries`` times here, then by the worker with backoff); a 4xx fails the step at
    once; a redirect is refused (a signed erasure request is not sent somewhere else).
    """

    name = "http"
    keys = frozenset({"url", "secret_env", "timeout", "tries", "backoff", "action"})

    def validate(self, settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        url = _str(settings, "url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingError("url", f"{url!r} is not an http:// or https:// URL")
        if parts.username or parts.password:
            raise SettingError("url", "no credentials in the URL; the request is signed with secret_env")
        return {"url": url, "secret_env": _env_name(settings, "secret_env", required=True),
                "timeout": _duration(settings, "timeout", "10s"), "tries": _int(settings, "tries", 3, 1),
                "backoff": _duration(settings, "backoff", "1s"), "action": _str(settings, "action", required=False)}

    def needs(self, settings: dict[str, Any]) -> set[str]:
        return {"account_id"}

    def problems(self, settings: dict[str, Any]) -> list[str]:
        env = settings["secret_env"]
        return [] if os.environ.get(env) else [f"environment variable {env} (http secret_env) is not set"]

    @staticmethod
    def body(ctx: JobContext, action: str) -> bytes:
        """Canonical JSON, so that every attempt sends (and signs) the same bytes."""
        payload = {**ctx.payload(), "action": action or ctx.step}
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def signature(secret: str, body: bytes) -> str:
        return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

    def run(self, ctx: JobContext, settings: dict[str, Any]) -> str:
        from inbox_bot import __version__

        _missing({"account_id"}, ctx)
        secret = os.environ.get(settings["secret_env"], "")
        if not secret:
            raise ExecutorError(f"environment variable {settings['secret_env']} is not set", permanent=True)
        body = self.body(ctx, settings["action"])
        headers = {"Content-Type": "application/json", "X-Signature": self.signature(secret, body),
                   "Idempotency-Key": ctx.idempotency_key, "User-Agent": f"inbox-bot/{__version__}"}
        parts = urlsplit(settings["url"])
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        last = ""
        for attempt in range(settings["tries"]):
            if attempt:
                time.sleep(settings["backoff"] * 2 ** (attempt - 1))
            conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = conn_cls(parts.hostname, parts.port, timeout=settings["timeout"])
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                status, text = resp.status, resp.read(2000).decode("utf-8", "replace").strip()
            except (OSError, http.client.HTTPException) as exc:  # timeouts and refused connections included
                last = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                conn.close()
            if 200 <= status < 300:
                return f"HTTP {status} {text[:200]}".strip()
            if 500 <= status < 600:
                last = f"HTTP {status} {text[:200]}".strip()
                continue
            raise ExecutorError(f"HTTP {status} {text[:300]}".strip(), permanent=True)
        raise ExecutorError(f"{last} (after {settings['tries']} tries)")


def _load_prctl() -> Any:
    """Looked up once in the parent: between fork and exec the child must not call dlopen."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The child is killed when the worker dies, so a crashed job never keeps running behind the
    back of the worker that resumes it."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


class CommandExecutor(Executor):
    """An external program; it gets the job as JSON on stdin and its exit code decides.

    0: done. 75 (EX_TEMPFAIL): try again later. Anything else: failed, a person looks. A timeout
    kills it and is retried. No shell is involved: ``command`` is an argument list (a string is
    split like a shell would, without expanding anything). ``args`` (a table) is passed through
    in the JSON, so one program can serve several steps.
    """

    name = "command"
    keys = frozenset({"command", "timeout", "args"})

    def validate(self, settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        raw = settings.get("command")
        if isinstance(raw, str):
            try:
                raw = shlex.split(raw)
            except ValueError as exc:
                raise SettingError("command", str(exc)) from exc
        argv = _str_list({"command": raw}, "command")
        if "/" in argv[0] and not Path(argv[0]).is_absolute():
            argv[0] = str(base_dir / argv[0])
        args = settings.get("args", {})
        if not isinstance(args, dict):
            raise SettingError("args", "must be a table")
        return {"command": argv, "timeout": _duration(settings, "timeout", "5m"), "args": args, "cwd": str(base_dir)}

    def run(self, ctx: JobContext, settings: dict[str, Any]) -> str:
        stdin = json.dumps({**ctx.payload(), "attempt": ctx.attempt, "args": settings["args"]}).encode()
        try:
            proc = subprocess.run(settings["command"], input=stdin, capture_output=True, cwd=settings["cwd"],
                                  timeout=settings["timeout"],
                                  preexec_fn=_die_with_parent if _PRCTL is not None else None)
        except subprocess.TimeoutExpired as exc:
            raise ExecutorError(f"timed out after {settings['timeout']:g}s") from exc
        except OSError as exc:
            raise ExecutorError(f"cannot start {settings['command'][0]}: {exc.strerror or exc}",
                                permanent=True) from exc
        out = proc.stdout.decode("utf-8", "replace").strip()
        err = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode == 0:
            return (out.splitlines() or ["exit 0"])[-1][:200]
        detail = (err or out)[-300:]
        if proc.returncode == EX_TEMPFAIL:
            raise ExecutorError(f"exit {EX_TEMPFAIL} (try later): {detail}")
        raise ExecutorError(f"exit {proc.returncode}: {detail}", permanent=proc.returncode > 0)


_GLOB = re.compile(r"[*?\[]")


class FileExecutor(Executor):
    """Removes files under ``root`` named by ``paths`` templates (``"{account_id}.png"``, globs allowed).

    A path is refused (and nothing of the step removed) when it would resolve outside the root,
    through ``..``, an absolute template, a placeholder value with a slash, or a symlink, at any
    level, that points out of it. A missing root is an error rather than "nothing to remove": an
    unmounted volume must not look like a finished erasure.
    """

    name = "file"
    keys = frozenset({"root", "paths"})

    def validate(self, settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        root = Path(_str(settings, "root")).expanduser()
        templates = _str_list(settings, "paths")
        fields: set[str] = set()
        for i, tpl in enumerate(templates):
            key = f"paths[{i}]"
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(tpl) if f is not None}
            except ValueError as exc:
                raise SettingError(key, f"{tpl!r}: {exc}") from exc
            if not names <= set(PARAMS):
                raise SettingError(key, f"{tpl!r}: unknown placeholder (known: {{{'}, {'.join(PARAMS)}}})")
            sample = Path(tpl.format(**dict.fromkeys(names, "x")))
            if sample.is_absolute() or ".." in sample.parts or "\0" in tpl:
                raise SettingError(key, f"{tpl!r} leads outside the root: refused")
            fields |= names
        return {"root": str(base_dir / root), "paths": templates, "fields": fields}

    def needs(self, settings: dict[str, Any]) -> set[str]:
        return set(settings["fields"])

    def run(self, ctx: JobContext, settings: dict[str, Any]) -> str:
        _missing(settings["fields"], ctx)
        root = os.path.realpath(settings["root"])
        if not os.path.isdir(root):
            raise ExecutorError(f"root folder not found: {settings['root']}")
        values = {}
        for name, value in ctx.params().items():
            text = str(value)
            if name in settings["fields"] and ("/" in text or "\\" in text or "\0" in text or text in (".", "..")):
                raise ExecutorError(f"refused: {name} {text!r} is not a plain file name", permanent=True)
            values[name] = text
        targets: list[str] = []
        for tpl in settings["paths"]:
            if _GLOB.search(tpl):
                pattern = tpl.format(**{k: glob.escape(v) for k, v in values.items()})
                targets += sorted(glob.glob(pattern, root_dir=root, include_hidden=True))
            else:
                targets.append(tpl.format(**values))
        doomed = []
        for rel in targets:
            path = os.path.join(root, rel)
            real = os.path.realpath(path)
            if os.path.commonpath([root, real]) != root or real == root:
                raise ExecutorError(f"refused: {rel} resolves to {real}, outside {root}; nothing removed",
                                    permanent=True)
            if os.path.lexists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    raise ExecutorError(f"refused: {rel} is a folder; nothing removed", permanent=True)
                doomed.append(path)
        for path in doomed:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ExecutorError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        return f"removed {len(doomed)} file(s); {len(targets) - len(doomed)} already absent"


EXECUTORS: dict[str, Executor] = {e.name: e for e in (RecordExecutor(), SqlExecutor(), HttpExecutor(),
                                                      CommandExecutor(), FileExecutor())}


def backoff_delay(base: timedelta, attempts: int, cap: timedelta = timedelta(hours=6)) -> timedelta:
    """Exponential backoff after the ``attempts``-th failure: base, 2*base, 4*base, ... up to ``cap``."""
    return min(base * 2 ** max(attempts - 1, 0), cap)
