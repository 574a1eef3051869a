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

from inbox_bot.config import Config
from inbox_bot.erasure import worker
from inbox_bot.erasure.plan import DEFAULT_PLAN
from inbox_bot.locking import exclusive
from inbox_bot.mail.compose import Composer
from inbox_bot.mail.outbox import deliver_pending
from inbox_bot.mail.sources import open_source
from inbox_bot.mail.transports import open_transport
from inbox_bot.pipeline import Pipeline
from inbox_bot.rulebook import load_rulebook
from inbox_bot.sla import BusinessCalendar
from inbox_bot.store.db import make_engine
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

    @cached_property
    def calendar(self) -> BusinessCalendar:
        try:
            return BusinessCalendar.from_config(self.cfg.sla)
        except ValueError as exc:
            from inbox_bot.config import ConfigError

            raise ConfigError(str(exc)) from exc

    @cached_property
    def composer(self) -> Composer:
        return Composer(self.cfg.templates_dir, from_address=self.cfg.mailbox_address,
                        from_name=self.cfg.from_name, message_id_domain=self.cfg.mailbox_domain)

    @cached_property
    def workflow(self) -> Workflow:
        return Workflow(cfg=self.cfg, composer=self.composer, calendar=self.calendar, plan=DEFAULT_PLAN)

    @cached_property
    def triage_context(self) -> TriageContext:
        return TriageContext(rules=self.rules, trusted_authserv_ids=self.cfg.trusted_authserv_ids,
                             mailbox_address=self.cfg.mailbox_address, own_domains=self.cfg.own_domains)

    @cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline(engine=self.engine, workflow=self.workflow, context=self.triage_context, clock=self.clock)

    @property
    def lock_path(self) -> Path:
        return self.cfg.base_dir / ".inbox-bot.lock"

    def poll_once(self) -> dict[str, int]:
        """Process every new message, then deliver the outbox (under the mailbox lock)."""
        with exclusive(self.lock_path, "mailbox"):
            source = open_source(self.cfg.source, self.cfg.base_dir)
            try:
                counts = dict(self.pipeline.process(source))
            finally:
                source.close()
            counts.update({f"outbox_{k}": v for k, v in self.deliver_outbox().items()})
        return counts

    def deliver_outbox(self) -> dict[str, int]:
        transport = open_transport(self.cfg.transport, self.cfg.base_dir)
        try:
            return deliver_pending(self.engine, transport, self.clock)
        finally:
            transport.close()

    def run_erasures(self) -> dict[str, int]:
        with exclusive(self.cfg.base_dir / ".inbox-bot-erasure.lock", "erasure"):
            return worker.run_due(self.engine, self.workflow, self.clock)
