"""Deletion requests notified by the app by email (the second way in, besides ``request add``).

The format, documented in the README: a mail from the configured app sender with the header
``X-Clickport-Event: account-deletion-requested``, the account in ``X-Clickport-Account-Id``,
the customer's address in ``X-Clickport-Customer-Email`` and the customer's note as the plain
text body. When the account's address changed recently, the app adds the old one in
``X-Clickport-Previous-Email`` and the time of the change in ``X-Clickport-Email-Changed-At``
(ISO-8601 with offset). It counts only with a verified sender (the same proof as a customer's reply).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from inbox_bot.addresses import normalise_address
from inbox_bot.types import InboundMail, aware_datetime

EVENT_HEADER = "X-Clickport-Event"
EVENT_DELETION = "account-deletion-requested"


@dataclass(frozen=True)
class Notification:
    email: str | None
    account_id: str | None
    note: str
    problem: str | None = None
    previous_email: str | None = None
    email_changed_at: datetime | None = None


def parse_notification(mail: InboundMail) -> Notification | None:
    """The notification in ``mail``, or None when the mail is not one."""
    event = (mail.header(EVENT_HEADER) or "").strip().lower()
    if not event:
        return None
    email = (mail.header("X-Clickport-Customer-Email") or "").strip()
    account = (mail.header("X-Clickport-Account-Id") or "").strip() or None
    previous = (mail.header("X-Clickport-Previous-Email") or "").strip()
    changed_text = (mail.header("X-Clickport-Email-Changed-At") or "").strip()
    changed = _aware_time(changed_text)
    problem = None
    if event != EVENT_DELETION:
        problem = f"unknown {EVENT_HEADER}: {event!r}"
    elif "@" not in email or len(mail.header_all("X-Clickport-Customer-Email")) != 1:
        problem = "X-Clickport-Customer-Email missing, repeated or not an address"
    elif bool(previous) != bool(changed_text) or (previous and ("@" not in previous or changed is None)):
        problem = ("X-Clickport-Previous-Email and X-Clickport-Email-Changed-At (ISO-8601 with offset) "
                   "must come together and be valid")
    return Notification(email=normalise_address(email) if "@" in email else None, account_id=account,
                        note=mail.text.strip()[:2000], problem=problem,
                        previous_email=normalise_address(previous) if "@" in previous else None,
                        email_changed_at=changed)


def _aware_time(text: str) -> datetime | None:
    try:
        return aware_datetime(text)
    except ValueError:
        return None
