"""Pure e-mail address and domain helpers shared by parsing, intake and triage.

One normal form everywhere (lower case, NFC, IDNA-encoded domain) so that an address is
compared, never "looked at": a lookalike domain can only ever be unequal (threats.md row 7).
"""

from __future__ import annotations

import contextlib
import unicodedata

# Scripts that legitimately share one domain label (Chinese, Japanese and Korean names
# mix Han with kana/hangul and often with Latin); any other mix is a homograph smell.
_COMPATIBLE_SCRIPTS = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)


def normalise_domain(domain: str) -> str:
    """Lower-case ASCII domain; a non-ASCII one is NFC-normalised and IDNA-encoded."""
    domain = unicodedata.normalize("NFC", domain.strip())
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return domain.lower()


def normalise_address(addr: str) -> str:
    """Lower-case local part and domain; IDNA-encode a non-ASCII domain (so lookalikes never equal)."""
    addr = unicodedata.normalize("NFC", addr.strip())
    local, _, domain = addr.rpartition("@")
    if not local:
        return addr.lower()
    return f"{local.lower()}@{normalise_domain(domain)}"


def domain_of(addr: str) -> str:
    """The normalised domain of an address (or of a bare domain, as in ``smtp.mailfrom=example.com``)."""
    return normalise_domain(addr.rpartition("@")[2])


def unicode_domain(domain: str) -> str:
    """The Unicode form of an IDNA domain, label by label; undecodable labels stay as they are."""
    labels = []
    for label in domain.split("."):
        try:
            labels.append(label.encode("ascii").decode("idna") if label.startswith("xn--") else label)
        except UnicodeError:
            labels.append(label)
    return ".".join(labels)


def _script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.replace("-", " ").split(" ", 1)[0] or "UNKNOWN"


def mixed_script_labels(domain: str) -> list[str]:
    """Labels of ``domain`` (IDNA or Unicode) that mix scripts, like Cyrillic 'с' in 'сustomer'."""
    mixed = []
    for label in unicode_domain(domain).split("."):
        scripts = {s for s in map(_script, label) if s}
        if len(scripts) > 1 and not any(scripts <= ok for ok in _COMPATIBLE_SCRIPTS):
            mixed.append(label)
    return mixed
