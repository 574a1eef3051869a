"""The vocabulary every layer shares: parsed mail, request snapshots, evidence and decisions.

Kept free of mail, DB and network code so that the pure triage chain can import it
without pulling in any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Intent(StrEnum):
    CONFIRM = "confirm"
    CANCEL = "cancel"
    QUESTION = "question"
    NONE = "none"


class Action(StrEnum):
    QUEUE_ERASURE = "queue_erasure"
    CANCEL = "cancel"
    FLAG_HUMAN = "flag_human"
    IGNORE = "ignore"
    UNMATCHED = "unmatched"
    DUPLICATE = "duplicate"


class State(StrEnum):
    RECEIVED = "received"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    ERASURE_QUEUED = "erasure_queued"
    ERASING = "erasing"
    ERASED = "erased"
    CANCELLED = "cancelled"


class AutoKind(StrEnum):
    """What kind of machine-generated mail a message is ("" for a person's mail)."""

    HUMAN = ""
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    LIST = "list"


def aware_datetime(text: str) -> datetime:
    """An ISO-8601 time with its UTC offset; ValueError saying what is wrong otherwise.

    Without an offset the time would be read in whatever zone the machine runs in, a guess that
    deadlines and the address-change window must not rest on.
    """
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time with offset") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} needs a UTC offset, e.g. 2026-12-01T10:00:00+01:00")
    return value


# Headers that say who sent a mail, to whom, and in which thread (threats row 3): the Sender check rejects a
# duplicate of any, and our own DKIM check does not count a signature that leaves an instance of one unsigned.
# Shared here so that the mail layer need not import triage.
GUARDED_HEADERS = (
    "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
)


@dataclass(frozen=True)
class DkimSignature:
    """Our own verdict on one DKIM-Signature (computed at the edge, where DNS is; read by the pure Sender).

    ``passed`` is dkimpy's cryptographic verdict; ``problems`` say why the signature must not count even so
    (``l=``, guarded headers it leaves unsigned). It counts only when it passed with no problems.
    """

    domain: str
    selector: str = ""
    signed_headers: tuple[str, ...] = ()  # h=, lower-case, repeats kept (oversigning)
    passed: bool = False
    body_limit: bool = False  # l= present
    problems: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        return self.passed and not self.problems


@dataclass(frozen=True)
class DkimResult:
    """Every DKIM-Signature's verdict; ``problem`` when none could be checked (no signature, unreadable)."""

    signatures: tuple[DkimSignature, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class InboundMail:
    """One received message, decoded once at the edge so that triage never parses bytes.

    Addresses are normalised addr-specs (lower-case, IDNA domain). ``headers`` keeps every
    header in order (name, unfolded value) because several checks need the raw order
    (Authentication-Results: only the topmost trusted ones count).
    """

    source_key: str
    raw_sha256: str
    size: int
    message_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    from_addrs: tuple[str, ...] = ()
    from_defects: tuple[str, ...] = ()
    to_addrs: tuple[str, ...] = ()
    cc_addrs: tuple[str, ...] = ()
    reply_to: tuple[str, ...] = ()
    return_path: str | None = None
    subject: str = ""
    date: datetime | None = None
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain"
    part_types: tuple[str, ...] = ()
    text: str = ""
    html: str = ""
    charsets: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    embedded_ids: tuple[str, ...] = ()
    dkim: DkimResult | None = None  # our own DKIM check ([security] verify_dkim); None: not checked

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [value for key, value in self.headers if key.lower() == low]

    @property
    def from_addr(self) -> str | None:
        """The single From address, or None when there is not exactly one."""
        return self.from_addrs[0] if len(self.from_addrs) == 1 else None


@dataclass(frozen=True)
class RequestSnapshot:
    """What triage may know about one deletion request: a read-only copy, no DB handle."""

    id: int
    email: str
    state: State
    open_flag: bool = False
    account_id: str | None = None


@dataclass(frozen=True)
class Candidates:
    """The requests the pipeline found for a message, by each way of matching.

    The pipeline does the lookups (I/O); the pure ``match`` check decides which one counts.
    """

    by_thread: RequestSnapshot | None = None
    by_token: RequestSnapshot | None = None
    token_seen: bool = False
    by_sender: tuple[RequestSnapshot, ...] = ()
    token_problem: str | None = None  # the token was found but is used or expired: it cannot confirm
    token_expired: bool = False  # the problem is the token's age: the customer is told the link expired


@dataclass(frozen=True)
class Evidence:
    """One check's finding: whether it hit, a one-line human detail, and data for --json."""

    check: str
    hit: bool
    detail: str
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.check}: {'HIT' if self.hit else 'miss'} - {self.detail}"


@dataclass(frozen=True)
class RuleHit:
    """A classifier rule that fired: its id, its intent/role and the words it matched."""

    rule: str
    role: str
    matched: str
    language: str = ""


@dataclass
class Facts:
    """What the triage checks have established so far; each check fills its own fields."""

    auto_kind: AutoKind = AutoKind.HUMAN
    auto_reasons: list[str] = field(default_factory=list)
    request: RequestSnapshot | None = None
    matched_by: str | None = None
    match_conflict: bool = False
    token_problem: str | None = None
    token_expired: bool = False
    token_missing: bool = False  # the request's reply token is not in To/Cc, and a confirm needs it
    sender_verified: bool = False
    sender_reasons: list[str] = field(default_factory=list)
    reply_text: str = ""
    cut: list[str] = field(default_factory=list)
    readable: bool = True
    intent: Intent = Intent.NONE
    rule_hits: list[RuleHit] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """The outcome of triage: the one action to take, why, and every check's evidence."""

    action: Action
    intent: Intent
    reasons: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    facts: Facts
    request_id: int | None = None

    def explain(self) -> str:
        lines = [f"action: {self.action.value}", f"intent: {self.intent.value}"]
        lines += [f"reason: {r}" for r in self.reasons]
        lines += [f"  {e.line()}" for e in self.evidence]
        return "\n".join(lines)
