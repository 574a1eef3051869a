"""Wires the parts together from a Config: engine, rules, composer, calendar, workflow, pipeline, I/O edges.

Commands call these functions; nothing here decides policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from inbox_bot.config import Config, ConfigError
from inbox_bot.digest import send_digest_if_due
from inbox_bot.erasure import worker
from inbox_bot.erasure.plan import ErasurePlan, plan_for
from inbox_bot.erasure.purge import audit_key, purge_expired
from inbox_bot.locking import exclusive
from inbox_bot.mail.compose import Composer
from inbox_bot.mail.outbox import deliver_pending
from inbox_bot.mail.sources import Source, open_source
from inbox_bot.mail.transports import open_transport
from inbox_bot.pipeline import Pipeline
from inbox_bot.rulebook import load_rulebook
from inbox_bot.sla import BusinessCalendar, SlaPolicy
from inbox_bot.sla_watch import SlaWatch, check_clocks
from inbox_bot.store.db import make_engine
from inbox_bot.store.models import DeletionRequest, OutboxMail
from inbox_bot.triage import TriageContext
from inbox_bot.workflow import Workflow

log = logging.getLogger("inbox_bot")


def utc_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class App:
    """The assembled bot for one configuration (built lazily: `classify` needs no database)."""

    cfg: Config
    clock: Callable[[], datetime] = utc_clock

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.cfg.database_url)

    @cached_property
    def rules(self) -> dict:
        return load_rulebook(self.cfg.rules_dir)

    def _from_sla_section(self, factory: Callable[[dict], object]):  # noqa: ANN202 - the factory's type
        """The [sla] section is validated by inbox_bot.sla; its ValueErrors name the key."""
        try:
            return factory(self.cfg.sla)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    @cached_property
    def calendar(self) -> BusinessCalendar:
        return self._from_sla_section(BusinessCalendar.from_config)

    @cached_property
    def sla_policy(self) -> SlaPolicy:
        return self._from_sla_section(SlaPolicy.from_config)

    @cached_property
    def sla_watch(self) -> SlaWatch:
        return SlaWatch(calendar=self.calendar, policy=self.sla_policy, composer=self.composer,
                        staff_address=self.cfg.staff_address, support_address=self.cfg.mailbox_address)

    @cached_property
    def composer(self) -> Composer:
        return Composer(self.cfg.templates_dir, from_address=self.cfg.mailbox_address,
                        from_name=self.cfg.from_name, message_id_domain=self.cfg.mailbox_domain)

    @cached_property
    def workflow(self) -> Workflow:
        return Workflow(cfg=self.cfg, composer=self.composer, calendar=self.calendar, plan=self.plan)

    @cached_property
    def plan(self) -> ErasurePlan:
        """The erasure plan, validated (a bad plan is a ConfigError naming the step and key)."""
        return plan_for(self.cfg)

    @cached_property
    def triage_context(self) -> TriageContext:
        return TriageContext(rules=self.rules, trusted_authserv_ids=self.cfg.trusted_authserv_ids,
                             mailbox_address=self.cfg.mailbox_address, own_domains=self.cfg.own_domains,
                             require_token_for_confirm=self.cfg.require_token_for_confirm)

    @cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline(engine=self.engine, workflow=self.workflow, context=self.triage_context, clock=self.clock)

    @property
    def lock_path(self) -> Path:
        return self.cfg.base_dir / ".inbox-bot.lock"

    def open_source(self) -> Source:
        return open_source(self.cfg.source, self.cfg.base_dir, imap=self.cfg.imap, engine=self.engine)

    def poll_once(self, source: Source | None = None) -> dict[str, int]:
        """Process every new message, then deliver the outbox (under the mailbox lock).

        ``source``: a long-lived one (the IMAP watcher keeps its connection); else one is opened and closed.
        """
        with exclusive(self.lock_path, "mailbox"):
            own = source is None
            source = self.open_source() if source is None else source
            try:
                counts = dict(self.pipeline.process(source))
            finally:
                if own:
                    source.close()
            counts.update({f"outbox_{k}": v for k, v in self.deliver_outbox().items()})
        return counts

    def deliver_outbox(self) -> dict[str, int]:
        """Deliver the due outbox mails (retries, rate limit); a mail that cannot be delivered is flagged."""
        transport = open_transport(self.cfg.transport, self.cfg.base_dir, self.cfg.outgoing, self.cfg.mailbox_address)
        try:
            return deliver_pending(self.engine, transport, self.clock, self.cfg.outgoing,
                                   on_failed=self.flag_failed_mail)
        finally:
            transport.close()

    def flag_failed_mail(self, s: Session, mail: OutboxMail, permanent: bool) -> None:
        """Hand an undeliverable mail's request to a person, in the transaction that marks it failed.

        A failed staff mail is flagged without a staff notification: that would fail the same way, forever.
        """
        req = s.get(DeletionRequest, mail.request_id) if mail.request_id is not None else None
        how = "failed permanently" if permanent else f"not delivered after {mail.attempts} attempts"
        to_staff = mail.to_addr == self.cfg.staff_address
        suggestion = ("check mailbox.staff_address and outgoing.transport" if to_staff else
                      "check the address on file and reach the customer another way; the mail is not retried")
        self.workflow.flag(s, req, reason=f"{mail.kind} mail to {mail.to_addr} {how}: {mail.last_error}",
                           now=self.clock(), suggestion=suggestion, notify=not to_staff,
                           evidence=[f"outbox mail {mail.id}: kind={mail.kind} message_id={mail.message_id} "
                                     f"attempts={mail.attempts}"])

    def check_sla(self) -> dict[str, int]:
        """Queue the SLA reminders and escalations that are due (delivered by the next mailbox pass)."""
        return check_clocks(self.engine, self.sla_watch, self.clock())

    def send_digest(self) -> dict[str, int]:
        """Queue today's staff digest if it is due and not yet sent."""
        return send_digest_if_due(self.engine, self.sla_watch, self.clock())

    def run_erasures(self) -> dict[str, int]:
        with exclusive(self.cfg.base_dir / ".inbox-bot-erasure.lock", "erasure"):
            return worker.run_due(self.engine, self.workflow, self.clock)

    def audit_key(self) -> bytes:
        return audit_key(self.cfg.erasure.audit_key_env, self.cfg.base_dir)

    def purge_expired(self) -> dict[str, int]:
        """Remove erased customers' personal data from our tables once the backup window has passed."""
        ids = purge_expired(self.engine, self.clock(), backup_days=self.cfg.erasure.backup_days,
                            key=self.audit_key)
        return {"purged": len(ids)} if ids else {}
