"""Shared fixtures: a bot on a throw-away embedded setup with a clock the test controls."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox_bot.app import App
from inbox_bot.config import build_config
from tests.dovecot import dovecot, imap_account  # noqa: F401 - fixtures: the private Dovecot of the IMAP tests

pytest_plugins = ["tests.smtp_server"]  # fixtures: a real SMTP server (aiosmtpd) for the SMTP tests

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2026, 12, 1, 9, 30, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(tmp_path: Path, clock: FakeClock):
    def make(**sections: dict) -> App:
        data = {"erasure": {"cooling_off": "0s"}, **sections}
        return App(build_config(data, tmp_path), clock=clock)

    return make


@pytest.fixture
def app(make_app) -> App:
    return make_app()


def inbox(app: App) -> Path:
    return app.cfg.base_dir / "mail" / "inbox"


def sent_dir(app: App) -> Path:
    return app.cfg.base_dir / "mail" / "sent"


def drop(app: App, raw: bytes, name: str) -> Path:
    """Deliver ``raw`` into the inbox the way an MTA does (tmp/ then rename into new/)."""
    box = inbox(app)
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    tmp = box / "tmp" / name
    tmp.write_bytes(raw)
    return tmp.rename(box / "new" / name)


def bot_executable() -> str:
    """The installed console script next to this interpreter (what CI and the harness call)."""
    exe = Path(sys.executable).with_name("inbox-bot")
    if exe.exists():
        return str(exe)
    found = shutil.which("inbox-bot")
    assert found, "the inbox-bot console script is not installed (pip install -e '.[test]')"
    return found
