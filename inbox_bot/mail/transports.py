"""Where outgoing mail goes. A transport delivers one outbox row; delivering the same row twice
must not make two mails (the Maildir transport names the file after the row, so a retry after a
crash overwrites instead of duplicating). SMTP cannot promise that: a crash between the server's 250
and our commit sends the mail again (see inbox_bot.mail.smtp_transport).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from inbox_bot.config import OutgoingSettings


class TransportError(RuntimeError):
    """Delivery failed; ``permanent`` says whether retrying can help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class TransportUnavailable(TransportError):
    """The transport cannot take any mail now (server down, TLS or login refused): nothing about this
    mail is wrong, so the delivery pass stops and the mail does not use up one of its attempts."""


class Transport(Protocol):
    def deliver(self, outbox_id: int, to_addr: str, raw: bytes, created_ns: int) -> None: ...

    def close(self) -> None: ...


@dataclass
class MaildirTransport:
    root: Path

    def __post_init__(self) -> None:
        for sub in ("new", "cur", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def deliver(self, outbox_id: int, to_addr: str, raw: bytes, created_ns: int) -> None:
        name = f"{created_ns // 1_000_000_000}.outbox{outbox_id:08d}.{socket.gethostname()}"
        tmp = self.root / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / "new" / name)

    def close(self) -> None:
        return None


def open_transport(url: str, base_dir: Path, settings: OutgoingSettings | None = None,
                   envelope_from: str = "") -> Transport:
    """The transport named by ``outgoing.transport``; SMTP connects lazily, on the first mail."""
    scheme, _, rest = url.partition(":")
    if scheme == "maildir":
        path = Path(rest).expanduser()
        return MaildirTransport(path if path.is_absolute() else base_dir / path)
    if scheme in ("smtp", "smtps"):
        from inbox_bot.mail.smtp_transport import SmtpTransport

        return SmtpTransport.from_config(url, settings or OutgoingSettings(), envelope_from)
    raise TransportError(f"outgoing.transport: {scheme}: transports are not available in this version",
                         permanent=True)
