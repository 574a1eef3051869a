"""The tables (SQLModel): requests, inbound messages, outbox, audit events, flags, erasure jobs,
SLA notices and staff digests.

No mail and no policy here: only what is stored, and small helpers to read it back.
Times are stored as UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from uuid import uuid4

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from inbox_bot.types import State


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything we store is UTC, so say so."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DeletionRequest(SQLModel, table=True):
    __tablename__ = "deletion_request"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(index=True)
    account_id: str | None = None
    note: str = ""
    language: str = "en"
    state: str = Field(default=State.RECEIVED.value, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    asked_at: datetime | None = None
    sla_due_at: datetime | None = None
    source: str = "cli"
    erased_at: datetime | None = None  # opens the restore window; starts the backup-retention clock
    purged_at: datetime | None = None  # personal data removed from our own tables (erasure.backup_days)
    email_hmac: str | None = None  # keyed hash kept after the purge, so a returning address can be recognised
    previous_email: str | None = None  # the account's address before a recent change (threats row 22)
    email_changed_at: datetime | None = None


class ReplyToken(SQLModel, table=True):
    """A reply token put in the Reply-To of one outgoing mail; only its hash is stored."""

    __tablename__ = "reply_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(index=True, unique=True)
    request_id: int = Field(foreign_key="deletion_request.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    used_at: datetime | None = None


class InboundMessage(SQLModel, table=True):
    """One message the bot looked at; ``source_key`` is unique, so a message is recorded once."""

    __tablename__ = "inbound_message"

    id: int | None = Field(default=None, primary_key=True)
    source_key: str = Field(index=True, unique=True)
    message_id: str | None = Field(default=None, index=True)
    raw_sha256: str = Field(index=True)
    request_id: int | None = Field(default=None, foreign_key="deletion_request.id", index=True)
    from_addr: str | None = None
    subject: str = ""
    intent: str = "none"
    action: str = "ignore"
    reasons_json: str = "[]"
    evidence_json: str = "[]"
    reply_text: str = ""
    received_at: datetime = Field(default_factory=utcnow)

    @property
    def reasons(self) -> list[str]:
        return json.loads(self.reasons_json)


class OutboxMail(SQLModel, table=True):
    """A mail waiting to be (or already) delivered; written in the same transaction as its cause."""

    __tablename__ = "outbox_mail"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = Field(default=None, foreign_key="deletion_request.id", index=True)
    kind: str
    to_addr: str = Field(index=True)
    message_id: str = Field(index=True, unique=True)
    raw: bytes
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    status: str = Field(default="pending", index=True)
    next_attempt_at: datetime | None = None  # backoff, rate-limit deferral or an attempt in progress


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = Field(default=None, foreign_key="deletion_request.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str
    event: str
    from_state: str | None = None
    to_state: str | None = None
    message_id: str | None = None
    reasons_json: str = "[]"

    @property
    def reasons(self) -> list[str]:
        return json.loads(self.reasons_json)


class Flag(SQLModel, table=True):
    """Work for a person: not a state, an open item attached to a request (or to a lone message)."""

    __tablename__ = "flag"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = Field(default=None, foreign_key="deletion_request.id", index=True)
    inbound_id: int | None = Field(default=None, foreign_key="inbound_message.id")
    reason: str
    suggestion: str = ""
    evidence_json: str = "[]"
    reply_text: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    sla_due_at: datetime | None = None
    status: str = Field(default="open", index=True)
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    resolution_reason: str | None = None
    urgent: bool = False  # a reply after erasure while the restore window is open


class ErasureJob(SQLModel, table=True):
    __tablename__ = "erasure_job"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="deletion_request.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    run_after: datetime
    status: str = Field(default="queued", index=True)
    uid: str = Field(default_factory=lambda: uuid4().hex)  # with the step name: the idempotency key
    lease_owner: str | None = None  # "host:pid:nonce" of the worker running it: one worker at a time
    lease_until: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class ErasureStep(SQLModel, table=True):
    __tablename__ = "erasure_step"

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="erasure_job.id", index=True)
    seq: int
    name: str
    executor: str = "record"
    status: str = "pending"  # pending, running, retry, done, failed
    attempts: int = 0
    next_attempt_at: datetime | None = None
    note: str | None = None  # what the executor reported (rows deleted, HTTP status, files removed)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class SlaNotice(SQLModel, table=True):
    """A reminder or escalation sent about one SLA clock; unique, so each is sent once across restarts.

    Written in the same transaction as its outbox mail: a crash loses both or neither.
    """

    __tablename__ = "sla_notice"
    __table_args__ = (UniqueConstraint("clock_kind", "clock_id", "level"),)

    id: int | None = Field(default=None, primary_key=True)
    clock_kind: str  # "request" (arrival clock) or "flag"
    clock_id: int
    level: str  # "reminder" or "escalation"
    due_at: datetime
    sent_at: datetime = Field(default_factory=utcnow)


class StaffDigest(SQLModel, table=True):
    """One row per local business day whose digest was queued: the digest goes out once a day."""

    __tablename__ = "staff_digest"

    id: int | None = Field(default=None, primary_key=True)
    day: date = Field(unique=True)
    sent_at: datetime = Field(default_factory=utcnow)


class ImapProgress(SQLModel, table=True):
    """How far the IMAP source got in one folder: every UID up to ``last_uid`` was handled or left on
    purpose (unmatched mail carries no mark, so this is what keeps it from being fetched each pass).
    A new UIDVALIDITY starts a new row at 0; the pipeline's Message-ID/content dedupe covers the re-sync.
    """

    __tablename__ = "imap_progress"
    __table_args__ = (UniqueConstraint("mailbox", "uidvalidity"),)

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(index=True)
    uidvalidity: int
    last_uid: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
