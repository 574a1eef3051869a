"""Holds: reasons in the app's own data that an account must not be erased without a person.

A paying customer with a chargeback, an unpaid invoice or a legal hold must never be erased by a
mail alone (threats row 23). The erasure plan lists them as ``[[holds]]``, each a read-only SQL query
that returns a row while the hold applies::

    [[holds]]
    name = "chargeback"
    description = "a disputed payment is open"
    query = "SELECT 1 FROM subscriptions WHERE account_id = :account_id AND status = 'disputed'"

They are checked twice: when a customer's confirm arrives (a hit turns it into a flag for a person,
no job is queued) and when a job is about to start (a hit holds the job behind a flag). A query that
cannot run counts as a hit: not knowing is a reason for a person, never for erasing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inbox_bot.erasure.executors import SettingError, SqlExecutor

HOLD_KEYS = frozenset({"name", "description", "query", "url", "url_env"})
HOLD_PARAMS = frozenset({"account_id", "email", "request_id"})  # no job exists yet at confirm time


@dataclass(frozen=True)
class Hold:
    name: str
    description: str
    settings: Mapping[str, Any]  # normalised by the sql executor: url, url_env, require (the query), binds

    def applies(self, params: Mapping[str, Any]) -> str | None:
        """Why this hold stops the erasure of the account in ``params`` (None: it does not apply)."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.pool import NullPool

        url = SqlExecutor.url_of(self.settings)
        if not url:
            return f"hold {self.name}: cannot check, environment variable {self.settings['url_env']} is not set"
        query = self.settings["require"]
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                bound = {k: params.get(k) for k in text(query).compile().params}
                hit = conn.execute(text(query), bound).first() is not None
        except SQLAlchemyError as exc:
            return f"hold {self.name}: cannot check ({type(exc).__name__}: {getattr(exc, 'orig', exc)})"
        finally:
            engine.dispose()
        return f"hold {self.name}: {self.description or query}" if hit else None


def parse_hold(raw: Any, sql_defaults: Mapping[str, Any], base_dir: Path) -> Hold:
    """One ``[[holds]]`` table, validated; errors raise ``SettingError`` naming the key."""
    if not isinstance(raw, dict):
        raise SettingError("holds", "must be a table ([[holds]])")
    extra = set(raw) - HOLD_KEYS
    if extra:
        raise SettingError(sorted(extra)[0], f"unknown key for a hold (known: {', '.join(sorted(HOLD_KEYS))})")
    name, description, query = raw.get("name"), raw.get("description", ""), raw.get("query")
    if not isinstance(name, str) or not name:
        raise SettingError("name", "a hold needs a name")
    if not isinstance(description, str):
        raise SettingError("description", "must be a string")
    if not isinstance(query, str) or not query.strip():
        raise SettingError("query", "a hold needs a query that returns a row while the hold applies")
    settings = {k: v for k, v in raw.items() if k in ("url", "url_env")} or dict(sql_defaults)
    normalised = SqlExecutor().validate({**settings, "require": query}, base_dir)
    unknown = set(normalised["binds"]) - HOLD_PARAMS
    if unknown:
        raise SettingError("query", f":{sorted(unknown)[0]} is not known before a job exists "
                                    f"(known: :{', :'.join(sorted(HOLD_PARAMS))})")
    return Hold(name=name, description=description, settings=normalised)


def holds_applying(holds: tuple[Hold, ...], params: Mapping[str, Any]) -> list[str]:
    """The reasons of every hold that applies to the account in ``params``."""
    return [why for hold in holds if (why := hold.applies(params)) is not None]
