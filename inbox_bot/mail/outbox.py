"""Deliver pending outbox rows through a transport; a row is marked sent only after delivery."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from inbox_bot.mail.transports import Transport, TransportError
from inbox_bot.store.db import transaction
from inbox_bot.store.models import OutboxMail, as_utc

log = logging.getLogger("inbox_bot.outbox")
MAX_ATTEMPTS = 8


def deliver_pending(engine: Engine, transport: Transport, clock: Callable[[], datetime]) -> dict[str, int]:
    """Deliver every pending mail, oldest first. Returns counts: sent, retry, failed."""
    counts = {"sent": 0, "retry": 0, "failed": 0}
    with transaction(engine) as s:
        ids = list(s.exec(select(OutboxMail.id).where(OutboxMail.status == "pending").order_by(OutboxMail.id)))
    for mail_id in ids:
        with transaction(engine) as s:
            row = s.get(OutboxMail, mail_id)
            if row is None or row.status != "pending":
                continue
            row.attempts += 1
            created = as_utc(row.created_at)
            try:
                transport.deliver(row.id, row.to_addr, row.raw, int(created.timestamp() * 1e9))
                row.status, row.sent_at, row.last_error = "sent", clock(), None
                counts["sent"] += 1
                log.info("outbox sent id=%s kind=%s to=%s message_id=%s", row.id, row.kind, row.to_addr,
                         row.message_id)
            except TransportError as exc:
                row.last_error = str(exc)
                if exc.permanent or row.attempts >= MAX_ATTEMPTS:
                    row.status = "failed"
                    counts["failed"] += 1
                    log.error("outbox failed id=%s to=%s: %s", row.id, row.to_addr, exc)
                else:
                    counts["retry"] += 1
                    log.warning("outbox retry id=%s to=%s attempt=%s: %s", row.id, row.to_addr, row.attempts, exc)
            s.add(row)
    return counts
