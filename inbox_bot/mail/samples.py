"""Build customer replies to the bot's own mails (the demo's and the tests' customers)."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

PASS = "mx.clickport.io; dkim=pass header.d={d} header.s=s1; spf=pass smtp.mailfrom={d}; dmarc=pass header.from={d}"


def last_sent(sent_dir: Path) -> dict[str, EmailMessage]:
    """The last mail delivered to each address in a Maildir (what a customer would reply to)."""
    last: dict[str, EmailMessage] = {}
    for sub in ("new", "cur"):
        folder = sent_dir / sub
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            last[msg["To"].addresses[0].addr_spec] = msg
    return last


def build_reply(to_msg: EmailMessage, from_addr: str, body: str, *, auth: str | None = None,
                subject_prefix: str = "Re: ", extra_headers: dict[str, str] | None = None,
                quote: bool = True) -> bytes:
    """A reply in ``to_msg``'s thread, to its Reply-To, quoting its first lines like a mail client.

    ``auth`` is the Authentication-Results value; by default a trusted, aligned pass for the From domain.
    """
    domain = from_addr.rpartition("@")[2]
    msg = EmailMessage()
    msg["Authentication-Results"] = auth if auth is not None else PASS.format(d=domain)
    msg["From"] = from_addr
    msg["To"] = str(to_msg["Reply-To"] or to_msg["From"])
    msg["Subject"] = subject_prefix + str(to_msg["Subject"])
    msg["Date"] = format_datetime(email.utils.localtime())
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["In-Reply-To"] = to_msg["Message-ID"]
    msg["References"] = to_msg["Message-ID"]
    for key, value in (extra_headers or {}).items():
        msg[key] = value
    text = body
    if quote:
        original = to_msg.get_body(("plain",)).get_content().splitlines()[:6]
        text += "\n\nOn Tue, 1 Dec 2026 at 10:02, Clickport Support <support@clickport.io> wrote:\n"
        text += "\n".join("> " + line for line in original) + "\n"
    msg.set_content(text)
    return msg.as_bytes()
