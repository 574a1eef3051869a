"""Business-calendar arithmetic for the support SLA ("a reply within one business day").

Pure code: no I/O and no clock of its own; every function takes the instants it needs.

Business time is counted on the calendar's *local wall clock*: a business day 09:00-17:00 is
always 8 hours, so a message that arrives on Friday 16:00 is due on Monday 16:00 even when a
daylight-saving change falls on the weekend. Arrivals may carry any UTC offset; results are aware
datetimes in the calendar's timezone. (Business hours that contain a DST jump, unusual since
changes happen at night, still count as ``end - start`` of wall-clock time on that day.)

Boundaries: business hours are half-open for arrivals, [start, end). A message arriving exactly at
the opening time starts the clock at once; one arriving exactly at closing time starts it on the
next business day. A deadline that uses up a day's last minute lands *on* the closing time
(Tue 09:00 + 1 business day = Tue 17:00, not Wed 09:00).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib

SEARCH_HORIZON = timedelta(days=3 * 366)
"""How far ahead a search may walk before the calendar is declared broken (e.g. no business days)."""

_ONE_DAY = timedelta(days=1)
_ZERO = timedelta(0)
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS = {name: i for i, full in enumerate(_DAY_NAMES) for name in (full, full[:3])}
_HHMM = re.compile(r"(\d{1,2}):(\d{2})")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

HolidaySpec = tuple[str, str | None]


@dataclass(frozen=True)
class BusinessCalendar:
    """When the support team works: local business hours on workdays, minus holidays and closed dates."""

    timezone: str = "Europe/Berlin"
    business_hours: tuple[time, time] = (time(9), time(17))
    workdays: frozenset[int] = frozenset(range(5))
    """Weekday numbers as in ``date.weekday()``: Monday=0 ... Sunday=6."""
    holidays: HolidaySpec | None = None
    """(country, subdivision or None) as understood by the ``holidays`` package, e.g. ("DE", "BE")."""
    closed_dates: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        checks: dict[str, Callable[[Any], Any]] = {
            "timezone": _check_timezone,
            "business_hours": _check_hours,
            "workdays": _check_workdays,
            "holidays": _check_holidays,
            "closed_dates": _check_dates,
        }
        for name, check in checks.items():
            try:
                object.__setattr__(self, name, check(getattr(self, name)))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> BusinessCalendar:
        """Build from the ``[sla]`` TOML table; a bad value raises ``ValueError("sla.<key>: ...")``.

        Missing keys keep their defaults. Unknown keys are refused: the table belongs to this class
        and to ``SlaPolicy`` (which reads its own keys), and a misspelt ``holiday`` silently meaning
        "no holidays" would break the promise.
        """
        parsers: dict[str, Callable[[Any], Any]] = {
            "timezone": _check_timezone,
            "business_hours": _parse_hours,
            "workdays": _parse_workdays,
            "holidays": _parse_holidays,
            "closed_dates": _parse_dates,
        }
        known = (*parsers, *SlaPolicy.KEYS)
        for key in section:
            if key not in known:
                raise ValueError(f"sla.{key}: unknown key (expected one of {', '.join(known)})")
        kwargs: dict[str, Any] = {}
        for key, parse in parsers.items():
            if key in section:
                try:
                    kwargs[key] = parse(section[key])
                except ValueError as exc:
                    raise ValueError(f"sla.{key}: {exc}") from None
        return cls(**kwargs)

    @cached_property
    def zone(self) -> ZoneInfo:
        """The tzinfo for ``timezone``, resolved once (the field stays a plain, comparable name)."""
        return ZoneInfo(self.timezone)

    @property
    def business_day_length(self) -> timedelta:
        """Business time in one full business day (8 h for 09:00-17:00)."""
        start, end = self.business_hours
        return datetime.combine(date.min, end) - datetime.combine(date.min, start)

    @cached_property
    def _holiday_dates(self) -> Mapping[date, str]:
        if self.holidays is None:
            return {}
        country, subdivision = self.holidays
        return holidays_lib.country_holidays(country, subdiv=subdivision)

    def is_business_day(self, day: date) -> bool:
        """True if ``day`` (a local calendar date) has business hours."""
        if isinstance(day, datetime):
            raise TypeError("is_business_day() takes a local date, not a datetime")
        return (
            day.weekday() in self.workdays and day not in self.closed_dates and day not in self._holiday_dates
        )

    def add_business_time(self, start: datetime, delta: timedelta) -> datetime:
        """The instant at which ``delta`` of business time has passed since ``start``.

        A zero ``delta`` returns ``start`` itself (in the calendar's timezone), even outside hours.
        """
        if delta < _ZERO:
            raise ValueError(f"delta must not be negative, got {delta}")
        cursor = self._to_local(start, "start")
        if delta == _ZERO:
            return self._to_aware(cursor)
        remaining = delta
        for opens, closes in self._business_windows(cursor):
            available = closes - opens
            if remaining <= available:
                return self._to_aware(opens + remaining)
            remaining -= available
        raise AssertionError("unreachable: _business_windows() is endless or raises")

    def deadline(self, arrival: datetime, days: int = 1) -> datetime:
        """When a reply promised within ``days`` business days of ``arrival`` is due."""
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValueError(f"days must be a positive integer, got {days!r}")
        return self.add_business_time(arrival, days * self.business_day_length)

    def business_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Business time from ``a`` to ``b``; negative if ``b`` comes first."""
        lo, hi = self._to_local(a, "a"), self._to_local(b, "b")
        if hi < lo:
            return -self._business_time(hi, lo)
        return self._business_time(lo, hi)

    def elapsed_share(self, arrival: datetime, due: datetime, now: datetime) -> float:
        """Share of the business time between ``arrival`` and ``due`` used up at ``now``.

        0.0 before arrival, 1.0 at the deadline, above 1.0 once overdue (not capped, so callers
        can tell "due" from "overdue").
        """
        total = self.business_time_between(arrival, due)
        if total <= _ZERO:
            raise ValueError(f"due {due.isoformat()} leaves no business time after {arrival.isoformat()}")
        return max(0.0, self.business_time_between(arrival, now) / total)

    def _to_local(self, moment: datetime, name: str) -> datetime:
        """Naive local wall-clock time of an aware instant (business hours are wall-clock times)."""
        if not isinstance(moment, datetime):
            raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
        return moment.astimezone(self.zone).replace(tzinfo=None)

    def _to_aware(self, wall: datetime) -> datetime:
        return wall.replace(tzinfo=self.zone)

    def _business_windows(self, cursor: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Local (open, close) business intervals from ``cursor`` on, one per business day.

        Whole non-business days are skipped with one date check each; raises instead of looping
        forever when the calendar has no business time within ``SEARCH_HORIZON``.
        """
        open_at, close_at = self.business_hours
        horizon = cursor + SEARCH_HORIZON
        day = cursor.date()
        while datetime.combine(day, open_at) <= horizon:
            if self.is_business_day(day):
                opens = max(cursor, datetime.combine(day, open_at))
                closes = datetime.combine(day, close_at)
                if opens < closes:
                    yield opens, closes
            day += _ONE_DAY
        raise ValueError(
            f"no business time found between {cursor:%Y-%m-%d} and {horizon:%Y-%m-%d}: "
            "check workdays, holidays and closed_dates"
        )

    def _business_time(self, lo: datetime, hi: datetime) -> timedelta:
        open_at, close_at = self.business_hours
        total = _ZERO
        day = lo.date()
        while day <= hi.date():
            if self.is_business_day(day):
                span = min(hi, datetime.combine(day, close_at)) - max(lo, datetime.combine(day, open_at))
                if span > _ZERO:
                    total += span
            day += _ONE_DAY
        return total


@dataclass(frozen=True)
class SlaPolicy:
    """When staff hear about the clocks: the reminder threshold and the digest's local time.

    Lives in ``[sla]`` next to the calendar because both describe the same promise; kept apart from
    ``BusinessCalendar`` so the calendar stays pure arithmetic.
    """

    KEYS: ClassVar[tuple[str, ...]] = ("reminder_share", "digest_time")

    reminder_share: float = 0.75
    """Share of a clock's business time after which staff get a reminder (0 < share < 1)."""
    digest_time: time = time(8, 30)
    """Local wall-clock time (calendar timezone) of the daily digest on business days."""

    def __post_init__(self) -> None:
        share = self.reminder_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ValueError(f"sla.reminder_share: expected a number between 0 and 1 (exclusive), got {share!r}")
        if not isinstance(self.digest_time, time) or self.digest_time.tzinfo is not None:
            raise ValueError(f"sla.digest_time: expected a naive datetime.time, got {self.digest_time!r}")
        object.__setattr__(self, "reminder_share", float(share))

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SlaPolicy:
        """Read this class's keys from the ``[sla]`` table (the calendar validates the rest)."""
        kwargs: dict[str, Any] = {}
        if "reminder_share" in section:
            kwargs["reminder_share"] = section["reminder_share"]
        if "digest_time" in section:
            try:
                kwargs["digest_time"] = _parse_time(section["digest_time"])
            except ValueError as exc:
                raise ValueError(f"sla.digest_time: {exc}") from None
        return cls(**kwargs)


def _check_timezone(name: Any) -> str:
    if not isinstance(name, str):
        raise ValueError(f"expected an IANA timezone name, got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (expected an IANA name like 'Europe/Berlin')") from None
    return name


def _check_hours(hours: Any) -> tuple[time, time]:
    if not isinstance(hours, tuple | list) or len(hours) != 2:
        raise ValueError(f"expected [start, end], got {hours!r}")
    start, end = hours
    for t in (start, end):
        if not isinstance(t, time) or t.tzinfo is not None:
            raise ValueError(f"expected naive datetime.time values, got {t!r}")
    if end <= start:
        raise ValueError(f"end {end:%H:%M} must be after start {start:%H:%M}")
    return start, end


def _check_workdays(days: Any) -> frozenset[int]:
    if isinstance(days, str) or not isinstance(days, Iterable):
        raise ValueError(f"expected a set of weekday numbers 0-6, got {days!r}")
    result = frozenset(days)
    for d in result:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 6:
            raise ValueError(f"expected weekday numbers 0 (Monday) to 6 (Sunday), got {d!r}")
    if not result:
        raise ValueError("at least one workday is required")
    return result


def _check_holidays(spec: Any) -> HolidaySpec | None:
    """Canonical (country, subdivision) or None; codes are matched case-insensitively."""
    if spec is None:
        return None
    if not isinstance(spec, tuple | list) or len(spec) not in (1, 2):
        raise ValueError(f"expected (country, subdivision) or None, got {spec!r}")
    country, subdivision = (*spec, None) if len(spec) == 1 else spec
    if not isinstance(country, str):
        raise ValueError(f"country must be a string, got {country!r}")
    supported = holidays_lib.list_supported_countries()
    if country.upper() not in supported:
        raise ValueError(f"unknown holiday country {country!r}")
    country = country.upper()
    if subdivision is None:
        return country, None
    if not isinstance(subdivision, str):
        raise ValueError(f"subdivision must be a string, got {subdivision!r}")
    known = {s.upper(): s for s in supported[country]}
    if subdivision.upper() not in known:
        raise ValueError(
            f"unknown subdivision {subdivision!r} for {country} (known: {', '.join(supported[country])})"
        )
    return country, known[subdivision.upper()]


def _check_dates(dates: Any) -> frozenset[date]:
    if isinstance(dates, str) or not isinstance(dates, Iterable):
        raise ValueError(f"expected a set of dates, got {dates!r}")
    result = frozenset(dates)
    for d in result:
        if isinstance(d, datetime) or not isinstance(d, date):
            raise ValueError(f"expected datetime.date values, got {d!r}")
    return result


def _parse_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    match = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            return time(int(match[1]), int(match[2]))
        except ValueError:
            pass
    raise ValueError(f'{value!r} is not a time of day like "09:00"')


def _parse_hours(value: Any) -> tuple[time, time]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f'expected ["HH:MM", "HH:MM"], got {value!r}')
    return _check_hours((_parse_time(value[0]), _parse_time(value[1])))


def _parse_workdays(value: Any) -> frozenset[int]:
    """Weekday names only: numbers are refused because Monday is 0 in Python but 1 in ISO 8601."""
    if not isinstance(value, list | tuple):
        raise ValueError(f'expected a list of weekday names like ["mon", "tue"], got {value!r}')
    days = set()
    for name in value:
        if not isinstance(name, str) or name.strip().lower() not in _WEEKDAYS:
            raise ValueError(f"unknown weekday {name!r} (use mon, tue, wed, thu, fri, sat, sun)")
        days.add(_WEEKDAYS[name.strip().lower()])
    return _check_workdays(days)


def _parse_holidays(value: Any) -> HolidaySpec:
    if not isinstance(value, Mapping):
        raise ValueError(f'expected a table like {{country = "DE", subdivision = "BE"}}, got {value!r}')
    unknown = set(value) - {"country", "subdivision"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} (expected country, subdivision)")
    if "country" not in value:
        raise ValueError("country is required")
    spec = _check_holidays((value["country"], value.get("subdivision")))
    assert spec is not None
    return spec


def _parse_dates(value: Any) -> frozenset[date]:
    if not isinstance(value, list | tuple):
        raise ValueError(f'expected a list of dates like ["2026-12-24"], got {value!r}')
    dates = set()
    for item in value:
        if isinstance(item, date) and not isinstance(item, datetime):
            dates.add(item)
            continue
        try:
            if not (isinstance(item, str) and _ISO_DATE.fullmatch(item)):
                raise ValueError
            dates.add(date.fromisoformat(item))
        except ValueError:
            raise ValueError(f'{item!r} is not a date like "2026-12-24"') from None
    return _check_dates(dates)
