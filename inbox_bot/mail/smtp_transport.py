"""SMTP delivery through a relay (smtplib).

``smtp://[USER@]HOST:PORT`` speaks plain SMTP and upgrades with STARTTLS when the server offers it
(``outgoing.starttls = "required"`` refuses to send without it); ``smtps://`` is TLS from the first
byte. Certificates are always checked (``outgoing.ca_file`` for a private CA). The password comes from
``outgoing.password_file`` or the variable named by ``outgoing.password_env``; it is never logged and
never sent over an unencrypted connection to anything but the loopback interface.

One connection serves a whole delivery pass; a connection the server dropped in between is noticed
(NOOP) and replaced. Failures are classified for the outbox: a 5xx for the recipient or the message is
permanent; a 4xx or a connection lost mid-mail is transient; not getting a usable session at all
(server down, TLS, login or sender refused) is ``TransportUnavailable``: the relay, not the mail, is at
fault, so the pass stops without charging the mail an attempt.

At-least-once window: the server accepts a mail (250 after DATA) before the outbox can commit "sent".
A crash in between, or a connection lost after the final dot but before the reply, sends it again on
retry (same Message-ID, so the copies are recognisable). SMTP has no way to close that window; the
outbox keeps it to one mail by committing right after each accepted one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import smtplib
import ssl
from pathlib import Path

from inbox_bot.config import ConfigError, OutgoingSettings, SmtpUrl, parse_smtp_url
from inbox_bot.mail.transports import TransportError, TransportUnavailable

log = logging.getLogger("inbox_bot.smtp")

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
SIZE_EXCEEDED = 552  # a MAIL FROM refusal about this message's size, not about us
# Stored mails end lines in LF; SMTP wants CRLF. smtplib sends bytes as they are, and servers refuse
# bare LF since the SMTP smuggling fixes (aiosmtpd: "500 Line too long").
_BARE_EOL = re.compile(rb"\r\n|\r|\n")


def read_password(settings: OutgoingSettings, user: str) -> str:
    """The SMTP password: ``password_file`` if set, else the environment variable ``password_env``."""
    if settings.password_file is not None:
        try:
            password = settings.password_file.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise ConfigError(f"outgoing.password_file: cannot read {settings.password_file}: {exc}") from exc
        if not password:
            raise ConfigError(f"outgoing.password_file: {settings.password_file} is empty")
        return password
    password = os.environ.get(settings.password_env, "")
    if not password:
        raise ConfigError(f"outgoing.password_env: environment variable {settings.password_env} is not set "
                          f"(the SMTP user {user} needs a password; or set outgoing.password_file)")
    return password


def _reply(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(text.split())}".strip()


class SmtpTransport:
    """Delivers outbox rows to one relay; connects on the first mail of a pass and keeps the connection."""

    def __init__(self, url: SmtpUrl, envelope_from: str, *, starttls: str = "auto", ca_file: Path | None = None,
                 password: str | None = None, timeout: float = 30.0) -> None:
        self.url = url
        self.envelope_from = envelope_from
        self.starttls = starttls
        self.ca_file = ca_file
        self.timeout = timeout
        self._password = password
        self._conn: smtplib.SMTP | None = None

    @classmethod
    def from_config(cls, url: str, settings: OutgoingSettings, envelope_from: str) -> SmtpTransport:
        parsed = parse_smtp_url(url)
        if not envelope_from:
            raise ConfigError("mailbox.address: needed as the SMTP envelope sender")
        password = read_password(settings, parsed.user) if parsed.user else None
        return cls(parsed, envelope_from, starttls=settings.starttls, ca_file=settings.ca_file, password=password,
                   timeout=settings.timeout.total_seconds())

    def __repr__(self) -> str:
        return f"SmtpTransport({self.url}, starttls={self.starttls})"

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        """A ready session: greeted, encrypted as configured, logged in; else TransportUnavailable."""
        conn: smtplib.SMTP | None = None
        try:
            if self.url.tls:
                conn = smtplib.SMTP_SSL(self.url.host, self.url.port, timeout=self.timeout,
                                        context=self._tls_context())
                encrypted = True
            else:
                conn = smtplib.SMTP(self.url.host, self.url.port, timeout=self.timeout)
                conn.ehlo()
                encrypted = self.starttls != "off" and conn.has_extn("starttls")
                if encrypted:
                    conn.starttls(context=self._tls_context())
                    conn.ehlo()
                elif self.starttls == "required":
                    raise TransportUnavailable(f"{self.url} does not offer STARTTLS (outgoing.starttls = "
                                               "\"required\")")
            if self.url.user:
                if not encrypted and self.url.host not in LOOPBACK:
                    raise TransportUnavailable(f"{self.url}: refusing to send the password over an unencrypted "
                                               "connection (use smtps:// or a server that offers STARTTLS)")
                conn.login(self.url.user, self._password or "")
        except TransportUnavailable:
            self._close(conn)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._close(conn)
            raise TransportUnavailable(f"{self.url}: login as {self.url.user} refused: "
                                       f"{_reply(exc.smtp_code, exc.smtp_error)}") from exc
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._close(conn)
            raise TransportUnavailable(f"{self.url}: TLS failed: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._close(conn)
            detail = _reply(exc.smtp_code, exc.smtp_error) if isinstance(exc, smtplib.SMTPResponseException) \
                else str(exc) or type(exc).__name__
            raise TransportUnavailable(f"{self.url}: cannot open a session: {detail}") from exc
        log.info("smtp connected to %s (%s%s)", self.url, "tls" if encrypted else "plain",
                 f", as {self.url.user}" if self.url.user else "")
        return conn

    def _connection(self) -> smtplib.SMTP:
        """The pass's connection, replaced if the server dropped it since the last mail."""
        if self._conn is not None:
            try:
                if self._conn.sock is not None and self._conn.noop()[0] == 250:
                    return self._conn
            except (smtplib.SMTPException, OSError):
                pass
            log.info("smtp connection to %s was dropped; reconnecting", self.url)
            self._drop()
        self._conn = self._connect()
        return self._conn

    def deliver(self, outbox_id: int, to_addr: str, raw: bytes, created_ns: int) -> None:
        """Send one mail; returns only once the server accepted it (250 after DATA)."""
        raw = _BARE_EOL.sub(b"\r\n", raw)
        conn = self._connection()
        options = ["BODY=8BITMIME"] if not raw.isascii() and conn.has_extn("8bitmime") else []
        try:
            conn.sendmail(self.envelope_from, [to_addr], raw, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(to_addr, (0, b"refused"))
            raise TransportError(f"RCPT TO <{to_addr}>: {_reply(code, text)}", permanent=code >= 500) from exc
        except smtplib.SMTPSenderRefused as exc:
            reply = f"MAIL FROM <{self.envelope_from}>: {_reply(exc.smtp_code, exc.smtp_error)}"
            if exc.smtp_code == SIZE_EXCEEDED:
                raise TransportError(reply, permanent=True) from exc
            if exc.smtp_code >= 500:
                raise TransportUnavailable(f"{self.url}: {reply}") from exc
            raise TransportError(reply) from exc
        except smtplib.SMTPDataError as exc:
            raise TransportError(f"DATA: {_reply(exc.smtp_code, exc.smtp_error)}",
                                 permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TransportError(f"{self.url}: connection lost while sending: {exc or type(exc).__name__}") from exc
        finally:
            if self._conn is not None and self._conn.sock is None:
                self._conn = None  # smtplib closed it after a 421

    def close(self) -> None:
        """End the pass politely (QUIT)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._close(conn)

    @staticmethod
    def _close(conn: smtplib.SMTP | None) -> None:
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
