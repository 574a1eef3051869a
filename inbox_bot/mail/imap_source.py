"""The IMAP source (imapclient): customers' mail from one folder, staff replies from the Sent folder.

What staff see in their mail client matters as much as what the bot does:

- Fetching uses ``BODY.PEEK[]``, so the bot never marks anything read (``\\Seen``).
- Mail the bot decided on (acted, flagged, ignored as machine mail) gets the keyword
  ``mailbox.processed_keyword`` (default ``$InboxBot``), and is moved to ``mailbox.handled_folder``
  when one is set. Most clients hide keywords; those that show them show which mail the bot took.
- Mail that belongs to no request (``unmatched``), and anything the bot is unsure about (a copy of
  a recorded message, ``duplicate``), is left exactly as it was: no keyword, no flag, no move,
  so the ordinary support queue sees it untouched. What keeps it from being fetched on every pass is
  the progress mark: per (folder, UIDVALIDITY) the highest UID up to which every message was done,
  stored in the database (``ImapProgress``). Searches are ``UNKEYWORD $InboxBot UID mark+1:*``.
- A UIDVALIDITY change starts a new mark at 0; handled mail is skipped by its keyword and the
  rest is recognised by the pipeline's Message-ID/content dedupe, so nothing is acted on twice.

Source keys are ``imap:USER@HOST/FOLDER:UIDVALIDITY:UID`` (the account is in the key so that two
mailboxes on one database can never shadow each other's messages).

Bodies are fetched in batches (by count and by bytes); a message over ``mailbox.max_message_size``
is never loaded: the pipeline gets ``raw=None`` and flags it for a person with the reason.
Keyword stores and moves are batched too, and run only after the pipeline committed the messages.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from inbox_bot.config import ConfigError, ImapOptions, ImapUrl
from inbox_bot.mail.sources import SourceError, SourceItem
from inbox_bot.store.db import transaction
from inbox_bot.store.models import ImapProgress, InboundMessage, utcnow

log = logging.getLogger("inbox_bot.imap")

HANDLED = frozenset({"queue_erasure", "cancel", "flag_human", "ignore", "staff_reply"})
SIZE_BATCH = 500  # UIDs per RFC822.SIZE fetch
BODY_BATCH = 200  # messages per BODY.PEEK[] fetch ...
BODY_BATCH_BYTES = 32 * 2**20  # ... and at most this many bytes of them
STORE_BATCH = 500  # UIDs per keyword STORE / MOVE
COMMAND_TIMEOUT = 60.0  # seconds a command may stay silent before the connection counts as dead
IDLE_STEP = 1.0  # seconds between checks of the stop event while in IDLE
HEADER_FETCH = "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)]"
HEADER_ANSWER = b"BODY[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)]"


class ImapAuthError(SourceError):
    """The server refused the login (wrong user or password); retrying soon will not help."""


def _human_size(n: int) -> str:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


def _chunks(seq: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


@dataclass
class _FolderPass:
    """Bookkeeping of one folder during one pass: which yielded UIDs are done, which need the keyword."""

    folder: str
    kind: str
    uidvalidity: int
    mark: int
    yielded: list[int] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    to_flag: list[int] = field(default_factory=list)


@dataclass
class ImapSource:
    """One IMAP account; one connection, opened lazily and reused across passes (``inbox-bot run``)."""

    url: ImapUrl
    options: ImapOptions
    engine: Engine | None = None
    _client: IMAPClient | None = field(default=None, init=False, repr=False)
    _pass: _FolderPass | None = field(default=None, init=False, repr=False)
    _marks: dict[tuple[str, int], int] = field(default_factory=dict, init=False, repr=False)
    _seen_uid: dict[tuple[str, int], int] = field(default_factory=dict, init=False, repr=False)
    _done_early: dict[tuple[str, int], set[int]] = field(default_factory=dict, init=False, repr=False)
    _selected: tuple[str, int] | None = field(default=None, init=False, repr=False)
    _can_keyword: bool = field(default=True, init=False, repr=False)
    _warned: set[str] = field(default_factory=set, init=False, repr=False)

    # --- connection ---------------------------------------------------------------------------------

    @property
    def account(self) -> str:
        return f"{self.url.user}@{self.url.host}"

    def _password(self) -> str:
        """From ``password_file`` if set, else the variable named by ``password_env``; never logged."""
        opts = self.options
        if opts.password_file is not None:
            try:
                return Path(opts.password_file).read_text(encoding="utf-8").strip("\r\n")
            except OSError as exc:
                raise ConfigError(f"mailbox.password_file: cannot read {opts.password_file}: {exc.strerror}") from exc
        value = os.environ.get(opts.password_env)
        if not value:
            raise ConfigError(f"mailbox.password_env: the environment variable {opts.password_env} is not set "
                              "(the IMAP password; or name a file in mailbox.password_file)")
        return value

    def _ssl_context(self) -> ssl.SSLContext:
        ca = self.options.ca_file
        return ssl.create_default_context(cafile=str(ca) if ca else None)

    def _connect(self) -> IMAPClient:
        if self._client is not None:
            return self._client
        password = self._password()
        where = f"{self.url.host}:{self.url.port}"
        if not self.url.tls:
            self._warn_once("plain", self._plaintext_warning())
        try:
            client = IMAPClient(self.url.host, port=self.url.port, ssl=self.url.tls,
                                ssl_context=self._ssl_context() if self.url.tls else None, timeout=COMMAND_TIMEOUT)
        except (OSError, IMAPClientError) as exc:
            raise SourceError(f"imap {where}: cannot connect: {type(exc).__name__}: {exc}") from exc
        try:
            client.login(self.url.user, password)
        except LoginError as exc:
            self._shutdown(client)
            detail = str(exc.args[0] if exc.args else exc)
            quoted = re.fullmatch(r"b(['\"])(.*)\1", detail)  # imapclient passes the bytes' repr
            detail = quoted.group(2) if quoted else detail
            raise ImapAuthError(f"imap login failed for {self.account}: {detail}") from None
        except (OSError, IMAPClientError) as exc:
            self._shutdown(client)
            raise SourceError(f"imap {where}: login: {type(exc).__name__}: {exc}") from exc
        self._client = client
        self._selected = None
        log.info("imap connected to %s:%s as %s", self.url.host, self.url.port, self.url.user)
        if self.options.handled_folder and not client.folder_exists(self.options.handled_folder):
            client.create_folder(self.options.handled_folder)
            log.info("imap: created folder %r for handled mail (mailbox.handled_folder)", self.options.handled_folder)
        return client

    def _plaintext_warning(self) -> str | None:
        try:
            if ipaddress.ip_address(self.url.host).is_loopback:
                return None
        except ValueError:
            if self.url.host == "localhost":
                return None
        return f"imap://{self.url.host}: the password travels without TLS; use imaps:// outside a trusted network"

    def _warn_once(self, what: str, message: str | None) -> None:
        if message and what not in self._warned:
            self._warned.add(what)
            log.warning("%s", message)

    @staticmethod
    def _shutdown(client: IMAPClient) -> None:
        with contextlib.suppress(Exception):  # closing a connection that may already be dead
            client.shutdown()

    def disconnect(self) -> None:
        """Drop the connection without a goodbye (after an error); the next call reconnects."""
        client, self._client, self._selected, self._pass = self._client, None, None, None
        if client is not None:
            self._shutdown(client)

    def close(self) -> None:
        """Store what is still pending, then log out; errors here only lose keywords, never decisions."""
        if self._client is None:
            return
        try:
            self._flush()
            self._client.logout()
        except Exception as exc:  # noqa: BLE001 - the pass already committed; the next one fixes the marks
            log.info("imap: closing the connection: %s: %s", type(exc).__name__, exc)
        self.disconnect()

    def _select(self, folder: str) -> int:
        """Select ``folder`` read-write; returns its UIDVALIDITY."""
        client = self._connect()
        try:
            info = client.select_folder(folder)
        except IMAPClientError as exc:
            raise SourceError(f"imap {self.account}: cannot open folder {folder!r}: {exc}") from exc
        validity = int(info[b"UIDVALIDITY"])
        flags = info.get(b"PERMANENTFLAGS", ())
        self._can_keyword = b"\\*" in flags or self.options.processed_keyword.encode() in flags
        if not self._can_keyword:
            self._warn_once(f"kw:{folder}", f"imap {folder}: the server does not keep custom keywords; handled mail "
                                            "gets no mark (the progress mark still prevents refetching)")
        self._selected = (folder, validity)
        return validity

    # --- progress marks -----------------------------------------------------------------------------

    def _progress_name(self, folder: str) -> str:
        return f"{self.account}/{folder}"

    def _load_mark(self, folder: str, validity: int) -> int:
        if (folder, validity) in self._marks:
            return self._marks[(folder, validity)]
        mark = 0
        if self.engine is not None:
            name = self._progress_name(folder)
            with transaction(self.engine) as s:
                rows = s.exec(select(ImapProgress).where(ImapProgress.mailbox == name)).all()
                row = next((r for r in rows if r.uidvalidity == validity), None)
                if row is not None:
                    mark = row.last_uid
                elif rows:
                    old = max(rows, key=lambda r: r.updated_at)
                    log.warning("imap %s: UIDVALIDITY changed (%s -> %s): re-syncing from the first message; "
                                "handled mail is skipped by its keyword, the rest is matched by Message-ID and "
                                "content, so nothing is acted on twice", folder, old.uidvalidity, validity)
        self._marks[(folder, validity)] = mark
        return mark

    def _save_mark(self, folder: str, validity: int, mark: int) -> None:
        if self._marks.get((folder, validity), 0) >= mark:
            return
        self._marks[(folder, validity)] = mark
        if self.engine is None:
            return
        name = self._progress_name(folder)
        try:
            with transaction(self.engine) as s:
                row = s.exec(select(ImapProgress).where(ImapProgress.mailbox == name,
                                                        ImapProgress.uidvalidity == validity)).first()
                if row is None:
                    row = ImapProgress(mailbox=name, uidvalidity=validity)
                row.last_uid, row.updated_at = max(row.last_uid, mark), utcnow()
                s.add(row)
        except IntegrityError:  # another process created the row meanwhile; its mark is as good
            log.debug("imap %s: progress row created concurrently", folder)

    # --- the pass -----------------------------------------------------------------------------------

    def _criteria(self, mark: int) -> list:
        return ["UNKEYWORD", self.options.processed_keyword, "UID", f"{mark + 1}:*"]

    def pending(self) -> Iterator[SourceItem]:
        """New mail of the watched folder, then new mail in the Sent folder; ends on the watched folder."""
        try:
            yield from self._folder_items(self.url.mailbox, "inbox")
            sent = self.options.sent_folder
            if sent and sent.upper() != self.url.mailbox.upper():
                if self._connect().folder_exists(sent):
                    yield from self._folder_items(sent, "sent")
                else:
                    self._warn_once("sent", f"imap {self.account}: no folder {sent!r} (mailbox.sent_folder): "
                                            "staff replies sent from mail clients are not seen")
            self._select(self.url.mailbox)
        except (OSError, IMAPClientError) as exc:
            raise SourceError(f"imap {self.account}: {type(exc).__name__}: {exc}") from exc

    def _folder_items(self, folder: str, kind: str) -> Iterator[SourceItem]:
        client = self._connect()
        validity = self._select(folder)
        mark = self._load_mark(folder, validity)
        uids = sorted(u for u in client.search(self._criteria(mark)) if u > mark)  # n:* always matches the last
        seen_key = (folder, validity)
        self._seen_uid[seen_key] = max([self._seen_uid.get(seen_key, 0), *uids])
        self._pass = _FolderPass(folder=folder, kind=kind, uidvalidity=validity, mark=mark)
        prefix = f"imap:{self.account}/{folder}:{validity}:"
        done_early = self._done_early.get(seen_key, set())  # done, but above a message that failed
        for chunk in _chunks(uids, SIZE_BATCH):
            self._pass.yielded.extend(chunk)  # in UID order: the mark only moves over a done prefix
            wanted = [u for u in chunk if u not in done_early]
            sizes = {uid: int(d[b"RFC822.SIZE"]) for uid, d in client.fetch(wanted, ["RFC822.SIZE"]).items()} \
                if wanted else {}
            batch: list[int] = []
            batch_bytes = 0
            for uid in chunk:
                size = sizes.get(uid)
                if size is None:  # done in an earlier pass, or expunged meanwhile: nothing left to do
                    self._pass.done.add(uid)
                    continue
                if kind == "inbox" and size > self.options.max_message_size:
                    yield from self._load(batch, sizes, prefix, kind)
                    batch, batch_bytes = [], 0
                    yield SourceItem(key=f"{prefix}{uid}", raw=None, size=size, folder=kind,
                                     problem=self._oversized(uid, size))
                    continue
                if batch and (len(batch) >= BODY_BATCH or batch_bytes + size > BODY_BATCH_BYTES):
                    yield from self._load(batch, sizes, prefix, kind)
                    batch, batch_bytes = [], 0
                batch.append(uid)
                batch_bytes += size
            yield from self._load(batch, sizes, prefix, kind)
            self._flush()
        self._flush()
        self._pass = None

    def _load(self, uids: list[int], sizes: dict[int, int], prefix: str, kind: str) -> Iterator[SourceItem]:
        """Fetch one batch (whole messages; headers only from Sent, which is matched by thread alone)."""
        if not uids:
            return
        part = "BODY.PEEK[]" if kind == "inbox" else "BODY.PEEK[HEADER]"
        answer = b"BODY[]" if kind == "inbox" else b"BODY[HEADER]"
        data = self._connect().fetch(uids, [part])
        for uid in uids:
            raw = data.get(uid, {}).get(answer)
            if raw is None:
                self._pass.done.add(uid)
                continue
            yield SourceItem(key=f"{prefix}{uid}", raw=bytes(raw), size=sizes[uid], folder=kind)

    def _oversized(self, uid: int, size: int) -> str:
        """The reason for a message not loaded, with its headers so that staff can find it."""
        limit = _human_size(self.options.max_message_size)
        reason = f"message of {size} bytes over the {limit} limit (mailbox.max_message_size)"
        try:
            head = self._connect().fetch([uid], [HEADER_FETCH])
            raw = head.get(uid, {}).get(HEADER_ANSWER, b"")
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            shown = "; ".join(f"{k}: {str(msg[k])[:200]}" for k in ("From", "Subject", "Date", "Message-ID") if msg[k])
        except Exception as exc:  # noqa: BLE001 - the reason matters more than the headers
            shown = f"headers unreadable: {type(exc).__name__}"
        log.warning("imap %s uid %s: not loaded: %s", self.url.mailbox, uid, reason)
        return f"{reason}; {shown}" if shown else reason

    # --- marking ------------------------------------------------------------------------------------

    def mark_done(self, key: str, outcome: str) -> None:
        """Note the outcome; the keyword (and move) happen batched, after the pipeline committed."""
        head, _, uid_s = key.rpartition(":")
        head, _, validity_s = head.rpartition(":")
        p = self._pass
        if p is None or head != f"imap:{self.account}/{p.folder}" or int(validity_s) != p.uidvalidity:
            return  # a key from before a reconnect: the next pass sees the message again and says "seen"
        uid = int(uid_s)
        p.done.add(uid)
        if outcome in HANDLED or (outcome == "seen" and self._recorded_action(key) in HANDLED):
            p.to_flag.append(uid)

    def _recorded_action(self, key: str) -> str | None:
        """What the pipeline recorded for a key done before (a crash may have lost its keyword)."""
        if self.engine is None:
            return None
        with transaction(self.engine) as s:
            return s.exec(select(InboundMessage.action).where(InboundMessage.source_key == key)).first()

    def _flush(self) -> None:
        """Keyword (and move) the handled messages, then advance the progress mark past what is done."""
        p = self._pass
        if p is None or self._client is None or self._selected != (p.folder, p.uidvalidity):
            return
        client = self._client
        flag, p.to_flag = p.to_flag, []
        for chunk in _chunks(flag, STORE_BATCH):
            if self._can_keyword:
                client.add_flags(chunk, [self.options.processed_keyword], silent=True)
            if p.kind == "inbox" and self.options.handled_folder:
                self._move(chunk, self.options.handled_folder)
        mark = p.mark
        while p.yielded and p.yielded[0] in p.done:
            mark = p.yielded.pop(0)
            p.done.discard(mark)
        if mark > p.mark:
            p.mark = mark
            self._save_mark(p.folder, p.uidvalidity, mark)
        self._done_early[(p.folder, p.uidvalidity)] = set(p.done)  # kept above the gap: not fetched again

    def _move(self, uids: list[int], folder: str) -> None:
        client = self._client
        caps = client.capabilities()
        if b"MOVE" in caps:
            client.move(uids, folder)
        elif b"UIDPLUS" in caps:
            client.copy(uids, folder)
            client.add_flags(uids, [b"\\Deleted"], silent=True)
            client.uid_expunge(uids)
        else:
            self._warn_once("move", f"imap {self.account}: the server has neither MOVE nor UIDPLUS; handled mail "
                                    "stays in the inbox (with its keyword)")

    # --- waiting for new mail -----------------------------------------------------------------------

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Block until the server reports new mail in the watched folder (True) or ``timeout`` passes.

        IDLE where the server has it (re-issued every ``mailbox.idle_renew``, before servers drop it);
        otherwise a plain sleep, and the caller's next pass polls. Returns early (False) when ``stop``
        is set. A dead connection raises, so the caller can reconnect with backoff.
        """
        stop = stop or threading.Event()
        try:
            client = self._connect()
            if b"IDLE" not in client.capabilities():
                self._warn_once("idle", f"imap {self.account}: no IDLE on this server; polling every {timeout:.0f}s")
                stop.wait(timeout)
                return True
            if self._selected is None or self._selected[0] != self.url.mailbox:
                self._select(self.url.mailbox)
            if self._new_since_last_pass():
                return True
            return self._idle(client, time.monotonic() + timeout, stop)
        except (OSError, IMAPClientError) as exc:
            raise SourceError(f"imap {self.account}: {type(exc).__name__}: {exc}") from exc

    def _new_since_last_pass(self) -> bool:
        """Mail that came between the last SEARCH and IDLE: its EXISTS may have gone to another command."""
        folder, validity = self._selected
        seen = self._seen_uid.get((folder, validity), 0)
        mark = self._marks.get((folder, validity), 0)
        return any(u > seen for u in self._client.search(self._criteria(mark)))

    def _idle(self, client: IMAPClient, deadline: float, stop: threading.Event) -> bool:
        renew = self.options.idle_renew.total_seconds()
        client.idle()
        renew_at = time.monotonic() + renew
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= deadline:
                    return False
                if now >= renew_at:
                    client.idle_done()
                    client.idle()
                    renew_at = time.monotonic() + renew
                    log.debug("imap %s: IDLE renewed", self.url.mailbox)
                step = max(0.0, min(IDLE_STEP, deadline - now, renew_at - now))
                started = time.monotonic()
                responses = client.idle_check(timeout=step)
                for r in responses:
                    if len(r) > 1 and r[0] == b"BYE":
                        raise ConnectionAbortedError("server said BYE: " + b" ".join(
                            x if isinstance(x, bytes) else str(x).encode() for x in r[1:]).decode(errors="replace"))
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    return True
                if not responses and step > 0.05 and time.monotonic() - started < step / 2:
                    return True  # woke with nothing complete to read: EOF or a partial line; DONE below tells
            return False
        except ConnectionAbortedError:
            self.disconnect()
            raise
        finally:
            if self._client is client:
                client.idle_done()
