"""The bot's own data minimisation: after the backup window, forget the customer here too.

Once ``erasure.backup_days`` have passed since an erasure (the app's backups are gone by then, so
nothing could be restored anyway), the customer's mail bodies, notes, reply texts, subjects and
addresses are removed from the bot's tables. What stays is a minimal audit record: the request
id, its dates and outcome, the audit events (who moved it, when, with the address scrubbed from
their reasons), and a keyed HMAC-SHA256 of the address. The key is secret, so the hash reveals
nothing to whoever reads the database, yet staff holding the key can still answer "did we
erase this address, and when?".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, or_, select

from inbox_bot.store.db import transaction
from inbox_bot.store.models import (
    AuditEvent,
    DeletionRequest,
    ErasureJob,
    ErasureStep,
    Flag,
    InboundMessage,
    OutboxMail,
    ReplyToken,
    as_utc,
)
from inbox_bot.types import State

log = logging.getLogger("inbox_bot.purge")

KEY_FILE = ".inbox-bot-audit.key"
ERASED = "[erased]"


def audit_key(env_name: str, base_dir: Path) -> bytes:
    """The HMAC key: ``$<env_name>`` if set, else a random key kept (0600) next to the state.

    The file fallback keeps the embedded default purging unattended; production should set the
    variable so that the key does not live beside the database it protects.
    """
    value = os.environ.get(env_name, "")
    if value:
        return value.encode()
    path = base_dir / KEY_FILE
    if not path.exists():
        base_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def email_hmac(key: bytes, email: str) -> str:
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def _scrubber(*values: str | None) -> re.Pattern[str] | None:
    words = [re.escape(v) for v in values if v and len(v) >= 3]
    return re.compile("|".join(words), re.IGNORECASE) if words else None


def _scrub(text: str | None, pattern: re.Pattern[str] | None) -> str | None:
    return pattern.sub(ERASED, text) if text and pattern else text


def _scrub_json(text: str, pattern: re.Pattern[str] | None) -> str:
    return json.dumps([_scrub(str(x), pattern) for x in json.loads(text or "[]")])


def purge_request(s: Session, req: DeletionRequest, key: bytes, now: datetime) -> None:
    """Remove the personal data of one erased request from every table of ours, in the caller's session."""
    email, previous = req.email, req.previous_email
    pattern = _scrubber(email, req.account_id, previous)
    for m in s.exec(select(InboundMessage).where(or_(InboundMessage.request_id == req.id,
                                                     InboundMessage.from_addr == email))).all():
        m.from_addr, m.subject, m.reply_text, m.evidence_json = None, "", "", "[]"
        m.reasons_json = _scrub_json(m.reasons_json, pattern)
        s.add(m)
    for o in s.exec(select(OutboxMail).where(or_(OutboxMail.request_id == req.id, OutboxMail.to_addr == email))):
        o.raw, o.last_error = b"", None
        if o.status == "pending":  # undelivered for a month: never send an emptied mail
            o.status = "purged"
        if o.to_addr in (email, previous):
            o.to_addr = ERASED
        s.add(o)
    for f in s.exec(select(Flag).where(Flag.request_id == req.id)).all():
        f.reply_text, f.evidence_json = "", "[]"
        f.reason, f.resolution_reason = _scrub(f.reason, pattern), _scrub(f.resolution_reason, pattern)
        s.add(f)
    for e in s.exec(select(AuditEvent).where(AuditEvent.request_id == req.id)).all():
        e.reasons_json = _scrub_json(e.reasons_json, pattern)
        s.add(e)
    for job in s.exec(select(ErasureJob).where(ErasureJob.request_id == req.id)).all():
        job.error = _scrub(job.error, pattern)
        s.add(job)
        for st in s.exec(select(ErasureStep).where(ErasureStep.job_id == job.id)).all():
            st.error, st.note = _scrub(st.error, pattern), _scrub(st.note, pattern)
            s.add(st)
    s.exec(delete(ReplyToken).where(ReplyToken.request_id == req.id))
    req.email_hmac = email_hmac(key, email)
    req.email, req.note, req.account_id, req.purged_at = "", "", None, now
    req.previous_email = None
    s.add(req)
    s.add(AuditEvent(request_id=req.id, at=now, actor="purge", event="purged",
                     reasons_json=json.dumps(["personal data removed after the backup window; "
                                              "a keyed hash of the address is kept"])))


def due_for_purge(s: Session, now: datetime, backup_days: int) -> list[DeletionRequest]:
    cutoff = now - timedelta(days=backup_days)
    rows = s.exec(select(DeletionRequest).where(DeletionRequest.state == State.ERASED.value,
                                                DeletionRequest.purged_at.is_(None))).all()
    return [r for r in rows if (as_utc(r.erased_at) or as_utc(r.updated_at)) <= cutoff]


def purge_expired(engine: Engine, now: datetime, *, backup_days: int = 30,
                  key: bytes | Callable[[], bytes]) -> list[int]:
    """Purge every erased request whose backup window has passed; one transaction each. Returns their ids.

    ``key`` may be a function, called only when there is something to purge (no key file appears
    on a fresh install that has erased nobody yet).
    """
    with transaction(engine) as s:
        ids = [r.id for r in due_for_purge(s, now, backup_days)]
    if ids and callable(key):
        key = key()
    done = []
    for request_id in ids:
        with transaction(engine) as s:
            req = s.get(DeletionRequest, request_id)
            if req is None or req.purged_at is not None:
                continue
            purge_request(s, req, key, now)
        done.append(request_id)
        log.info("purged the personal data of request %s (erased more than %s days ago)", request_id, backup_days)
    return done


def find_erased(engine: Engine, key: bytes, email: str) -> list[dict]:
    """Purged requests of this address (staff: "did we erase this customer?")."""
    digest = email_hmac(key, email)
    with transaction(engine) as s:
        rows = s.exec(select(DeletionRequest).where(DeletionRequest.email_hmac == digest)).all()
        return [{"id": r.id, "state": r.state, "created_at": as_utc(r.created_at).isoformat(),
                 "erased_at": as_utc(r.erased_at).isoformat() if r.erased_at else None,
                 "purged_at": as_utc(r.purged_at).isoformat()} for r in rows]
