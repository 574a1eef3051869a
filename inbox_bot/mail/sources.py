"""Where inbound mail comes from. A source lists new messages as ``SourceItem``s and marks each done.

``MaildirSource`` is the embedded default: new mail is a file in ``new/``; marking it done
moves it to ``cur/`` (unflagged, so a person's mail client still shows it unread). The key is
the file's base name, which stays stable across that move.
``ImapSource`` (``inbox_bot.mail.imap_source``) reads an IMAP folder and the Sent folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import Engine

from inbox_bot.config import ImapOptions, parse_imap_url


class SourceError(RuntimeError):
    """The source cannot be read (missing folder, server down); the message says which and why."""


@dataclass(frozen=True)
class SourceItem:
    """One message of a source. ``raw`` is None when the source refused to load it (``problem`` says
    why, e.g. over the size limit); the pipeline then flags it for a person without reading it.
    ``folder`` is "inbox" for customers' mail, "sent" for replies staff sent from their own client.
    """

    key: str
    raw: bytes | None
    size: int
    folder: str = "inbox"
    problem: str | None = None


class Source(Protocol):
    def pending(self) -> Iterator[SourceItem]: ...

    def mark_done(self, key: str, outcome: str) -> None:
        """Record at the source that ``key`` was handled with ``outcome`` (an Action value, or "seen")."""

    def close(self) -> None: ...


@dataclass
class MaildirSource:
    root: Path

    def __post_init__(self) -> None:
        for sub in ("new", "cur", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _key(name: str) -> str:
        return "maildir:" + name.split(":2,", 1)[0]

    def pending(self) -> Iterator[SourceItem]:
        """Files in new/ oldest first (by name, which Maildir writers start with a timestamp)."""
        try:
            names = sorted(os.listdir(self.root / "new"))
        except OSError as exc:
            raise SourceError(f"maildir {self.root}: {exc}") from exc
        for name in names:
            if name.startswith("."):
                continue
            try:
                data = (self.root / "new" / name).read_bytes()
            except FileNotFoundError:
                continue  # another process took it meanwhile
            yield SourceItem(key=self._key(name), raw=data, size=len(data))

    def mark_done(self, key: str, outcome: str) -> None:
        name = key.removeprefix("maildir:")
        src = self.root / "new" / name
        if src.exists():
            os.replace(src, self.root / "cur" / f"{name}:2,")

    def close(self) -> None:
        return None


def open_source(url: str, base_dir: Path, *, imap: ImapOptions | None = None, engine: Engine | None = None) -> Source:
    """A source for ``mailbox.source``: "maildir:PATH", or "imap[s]://USER@HOST:PORT/MAILBOX" with the
    ``[mailbox]`` IMAP options and the engine that keeps its progress marks."""
    scheme, _, rest = url.partition(":")
    if scheme == "maildir":
        path = Path(rest).expanduser()
        return MaildirSource(path if path.is_absolute() else base_dir / path)
    if scheme in ("imap", "imaps"):
        from inbox_bot.mail.imap_source import ImapSource

        return ImapSource(parse_imap_url(url), imap or ImapOptions(), engine)
    raise SourceError(f"mailbox.source: {scheme}: sources are not available in this version")
