"""A real SMTP server for tests (aiosmtpd on 127.0.0.1, a free port), recording what it accepted.

It can refuse given recipients (``refuse``), answer the next N transactions with an error (``fail_next``),
be stopped and started again on the same port (an outage), speak STARTTLS or implicit TLS with a
self-signed certificate made by the ``openssl`` command (no extra Python dependency), and require a login.
Wired in ``tests/conftest.py`` through ``pytest_plugins``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    """One message the server accepted (250 after DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    peer: tuple  # the client's address and port: one value per connection

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)  # type: ignore[return-value]


@dataclass
class RecordingHandler:
    """The aiosmtpd handler: records accepted mail and every refusal it was told to give."""

    accepted: list[Received] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (recipient, reply)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply, every time
    failures: list[tuple[str, str]] = field(default_factory=list)  # (stage, reply), one per transaction
    mail_reply: str | None = None  # refuse every MAIL FROM with this reply
    on_data: Callable[[Received], None] | None = None  # called before the 250 (e.g. to kill the client)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          mail_options: list[str]) -> str:
        if self.mail_reply is not None:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        with self.lock:
            reply = self.refuse.get(address.lower())
            if reply is None and self.failures and self.failures[0][0] == "rcpt":
                reply = self.failures.pop(0)[1]
            if reply is not None:
                self.refused.append((address, reply))
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        got = Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content or b""),
                       tuple(session.peer))
        with self.lock:
            if self.failures and self.failures[0][0] == "data":
                reply = self.failures.pop(0)[1]
                self.refused.extend((rcpt, reply) for rcpt in got.rcpt_tos)
                return reply
            self.accepted.append(got)
        if self.on_data is not None:
            self.on_data(got)
        return "250 2.0.0 OK queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpServer:
    """One aiosmtpd server; ``tls`` is None (plain), "starttls" or "implicit"."""

    tls: str | None = None
    cert: tuple[Path, Path] | None = None  # (certificate, key)
    require_starttls: bool = False
    logins: dict[str, str] | None = None  # user -> password: AUTH required
    port: int = field(default_factory=free_port)
    handler: RecordingHandler = field(default_factory=RecordingHandler)
    controller: Controller | None = None

    def _context(self) -> ssl.SSLContext:
        assert self.cert is not None, "TLS needs a certificate (the tls_cert fixture)"
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*map(str, self.cert))
        return ctx

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.logins is not None and \
            self.logins.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "server_hostname": "localhost",
                                  "timeout": 30}
        if self.tls == "starttls":
            kwargs.update(tls_context=self._context(), require_starttls=self.require_starttls)
        elif self.tls == "implicit":
            kwargs["ssl_context"] = self._context()
        if self.logins is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.tls is not None)
        self.controller = Controller(self.handler, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def restart(self) -> None:
        """Stop and start on the same port: every open connection is cut, nothing recorded is lost."""
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"{'smtps' if self.tls == 'implicit' else 'smtp'}://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.accepted)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.accepted if address in r.rcpt_tos]

    def refuse(self, address: str, reply: str = "550 5.1.1 <{}>: no such user") -> None:
        with self.handler.lock:
            self.handler.refuse[address.lower()] = reply.format(address)

    def fail_next(self, n: int, reply: str = "451 4.3.0 try again later", stage: str = "data") -> None:
        """Answer the next ``n`` transactions with ``reply`` at RCPT or after DATA."""
        assert stage in ("rcpt", "data")
        with self.handler.lock:
            self.handler.failures.extend([(stage, reply)] * n)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own CA file)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def smtp_factory() -> Iterator[Callable[..., SmtpServer]]:
    """Start servers with any options (``smtp_factory(tls="starttls", cert=tls_cert)``); all stop at the end."""
    servers: list[SmtpServer] = []

    def make(**kwargs: Any) -> SmtpServer:
        server = SmtpServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server on 127.0.0.1 that accepts everything (until told otherwise)."""
    return smtp_factory()
