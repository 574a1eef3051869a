"""Reply tokens: an unguessable tag in the Reply-To address (support+TOKEN@domain) that binds a reply
to one request. Only a hash is stored; the format is checked before any lookup.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable

TOKEN_RE = re.compile(r"^[a-z2-7]{26}$")


def new_token() -> str:
    """128 random bits as 26 lower-case base32 characters."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def reply_address(mailbox: str, token: str) -> str:
    local, _, domain = mailbox.partition("@")
    return f"{local}+{token}@{domain}"


def tokens_in(addresses: Iterable[str], mailbox: str) -> list[str]:
    """Well-formed tokens found in ``addresses`` sent to our mailbox (malformed tags are ignored)."""
    local, _, domain = mailbox.lower().partition("@")
    found = []
    for addr in addresses:
        a_local, _, a_domain = addr.lower().rpartition("@")
        base, plus, tag = a_local.partition("+")
        if plus and base == local and a_domain == domain and TOKEN_RE.match(tag):
            found.append(tag)
    return found
