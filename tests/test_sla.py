"""Business-calendar arithmetic: required examples, DST, config errors, and a minute-stepping oracle."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbox_bot.sla import BusinessCalendar

BERLIN = ZoneInfo("Europe/Berlin")
YEARS = range(2025, 2029)
CLOSED = frozenset(date(y, 12, d) for y in YEARS for d in (24, 31))
CAL = BusinessCalendar(holidays=("DE", "BE"), closed_dates=CLOSED)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def wall(moment: datetime) -> str:
    """Local wall clock with weekday, so a failing assertion reads like the spec."""
    return moment.strftime("%a %Y-%m-%d %H:%M:%S")


# --- required examples -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrival", "due"),
    [
        pytest.param(berlin(2026, 6, 2, 10), berlin(2026, 6, 3, 10), id="tue-10:00"),
        pytest.param(berlin(2026, 6, 5, 16), berlin(2026, 6, 8, 16), id="fri-16:00"),
        pytest.param(berlin(2026, 5, 22, 16), berlin(2026, 5, 26, 16), id="fri-16:00-whit-monday"),
        pytest.param(berlin(2026, 6, 6, 12), berlin(2026, 6, 8, 17), id="sat-12:00"),
        pytest.param(berlin(2026, 6, 2, 20), berlin(2026, 6, 3, 17), id="tue-20:00"),
        pytest.param(berlin(2026, 6, 2, 8, 59), berlin(2026, 6, 2, 17), id="tue-08:59"),
        pytest.param(berlin(2026, 6, 2, 9), berlin(2026, 6, 2, 17), id="tue-09:00-opening"),
        pytest.param(berlin(2026, 6, 2, 17), berlin(2026, 6, 3, 17), id="tue-17:00-closing"),
        pytest.param(
            berlin(2026, 6, 2, 16, 59, 59, 500000),
            berlin(2026, 6, 3, 16, 59, 59, 500000),
            id="tue-16:59:59.5",
        ),
        pytest.param(berlin(2026, 4, 2, 11), berlin(2026, 4, 7, 11), id="easter"),
        pytest.param(berlin(2025, 10, 2, 12), berlin(2025, 10, 6, 12), id="unity-day"),
        pytest.param(berlin(2027, 3, 5, 16), berlin(2027, 3, 9, 16), id="berlin-womens-day"),
        pytest.param(berlin(2026, 12, 23, 10), berlin(2026, 12, 28, 10), id="christmas-closed-24th"),
        pytest.param(berlin(2026, 12, 30, 15), berlin(2027, 1, 4, 15), id="new-year-closed-31st"),
    ],
)
def test_required_examples(arrival: datetime, due: datetime) -> None:
    result = CAL.deadline(arrival)
    assert wall(result) == wall(due)
    assert result.tzinfo is BERLIN
    assert result == due


def test_subdivision_matters() -> None:
    """8 March is a holiday in Berlin only."""
    federal = BusinessCalendar(holidays=("DE", None))
    assert wall(federal.deadline(berlin(2027, 3, 5, 16))) == "Mon 2027-03-08 16:00:00"


def test_without_holidays_christmas_is_a_working_day() -> None:
    assert wall(BusinessCalendar().deadline(berlin(2026, 12, 23, 10))) == "Thu 2026-12-24 10:00:00"


def test_multiple_days_and_business_day_length() -> None:
    assert CAL.business_day_length == timedelta(hours=8)
    assert wall(CAL.deadline(berlin(2026, 6, 2, 10), days=3)) == "Fri 2026-06-05 10:00:00"
    short = BusinessCalendar(business_hours=(time(8, 30), time(12, 15)))
    assert short.business_day_length == timedelta(hours=3, minutes=45)
    assert wall(short.deadline(berlin(2026, 6, 2, 12))) == "Wed 2026-06-03 12:00:00"


def test_is_business_day() -> None:
    assert CAL.is_business_day(date(2026, 6, 2))
    assert not CAL.is_business_day(date(2026, 6, 6))  # Saturday
    assert not CAL.is_business_day(date(2026, 12, 25))  # holiday
    assert not CAL.is_business_day(date(2026, 12, 24))  # closed date
    with pytest.raises(TypeError):
        CAL.is_business_day(berlin(2026, 6, 2, 10))


# --- daylight saving: arrivals given in UTC ------------------------------------------------------


@pytest.mark.parametrize(
    ("arrival", "due"),
    [
        # Spring forward (Sun 2026-03-29): Fri 16:00 CET -> Mon 16:00 CEST, only 71 real hours later.
        pytest.param(utc(2026, 3, 27, 15), utc(2026, 3, 30, 14), id="spring-fri-16:00"),
        pytest.param(utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 15), id="spring-sun-03:30-cest"),
        pytest.param(utc(2026, 3, 30, 7), utc(2026, 3, 30, 15), id="spring-mon-09:00-cest"),
        # Fall back (Sun 2026-10-25): Fri 16:00 CEST -> Mon 16:00 CET, 73 real hours later.
        pytest.param(utc(2026, 10, 23, 14), utc(2026, 10, 26, 15), id="fall-fri-16:00"),
        pytest.param(utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 16), id="fall-02:30-first"),
        pytest.param(utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 16), id="fall-02:30-second"),
        pytest.param(utc(2026, 10, 26, 8), utc(2026, 10, 26, 16), id="fall-mon-09:00-cet"),
    ],
)
def test_dst_does_not_shift_deadlines(arrival: datetime, due: datetime) -> None:
    result = CAL.deadline(arrival)
    assert result == due
    assert result.tzinfo is BERLIN
    assert CAL.business_time_between(arrival, result) == timedelta(hours=8)


def test_dst_in_another_zone_and_offset() -> None:
    new_york = BusinessCalendar(timezone="America/New_York", holidays=("US", "NY"))
    arrival = datetime(2026, 3, 7, 2, 0, tzinfo=timezone(timedelta(hours=5)))  # Fri 16:00 EST
    result = new_york.deadline(arrival)
    assert wall(result) == "Mon 2026-03-09 16:00:00"
    assert result == utc(2026, 3, 9, 20)  # EDT


# --- clock arithmetic ------------------------------------------------------------------------------


def test_business_time_between_and_elapsed_share() -> None:
    arrival, due = berlin(2026, 6, 2, 10), berlin(2026, 6, 3, 10)
    assert CAL.business_time_between(arrival, due) == timedelta(hours=8)
    assert CAL.business_time_between(due, arrival) == -timedelta(hours=8)
    assert CAL.business_time_between(berlin(2026, 6, 5, 12), berlin(2026, 6, 8, 12)) == timedelta(hours=8)
    assert CAL.elapsed_share(arrival, due, berlin(2026, 6, 2, 9)) == 0.0
    assert CAL.elapsed_share(arrival, due, berlin(2026, 6, 2, 16)) == 0.75
    assert CAL.elapsed_share(arrival, due, berlin(2026, 6, 3, 8)) == 0.875  # overnight does not count
    assert CAL.elapsed_share(arrival, due, due) == 1.0
    assert CAL.elapsed_share(arrival, due, berlin(2026, 6, 3, 12)) == 1.25  # overdue: not capped
    with pytest.raises(ValueError, match="no business time"):
        CAL.elapsed_share(arrival, arrival, due)


def test_zero_and_negative_delta() -> None:
    saturday = utc(2026, 6, 6, 10)
    assert CAL.add_business_time(saturday, timedelta(0)) == saturday
    assert CAL.add_business_time(saturday, timedelta(0)).tzinfo is BERLIN
    with pytest.raises(ValueError, match="negative"):
        CAL.add_business_time(saturday, -timedelta(seconds=1))
    for days in (0, -1, True):
        with pytest.raises(ValueError, match="days"):
            CAL.deadline(saturday, days=days)


def test_naive_datetimes_are_refused() -> None:
    naive, aware = datetime(2026, 6, 2, 10), berlin(2026, 6, 2, 10)
    with pytest.raises(ValueError, match="naive"):
        CAL.deadline(naive)
    with pytest.raises(ValueError, match="naive"):
        CAL.add_business_time(naive, timedelta(hours=1))
    with pytest.raises(ValueError, match="naive"):
        CAL.business_time_between(aware, naive)
    with pytest.raises(ValueError, match="naive"):
        CAL.elapsed_share(aware, aware + timedelta(days=1), naive)


def test_calendar_without_business_days_fails_fast() -> None:
    mondays = frozenset(date(2026, 1, 5) + timedelta(weeks=w) for w in range(52 * 5))
    never = BusinessCalendar(workdays=frozenset({0}), closed_dates=mondays)
    with pytest.raises(ValueError, match="no business time"):
        never.deadline(berlin(2026, 1, 1, 10))
    with pytest.raises(ValueError, match="workdays"):
        BusinessCalendar(workdays=frozenset())


def test_long_gap_is_fast() -> None:
    closed = frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(700))
    mostly_closed = BusinessCalendar(closed_dates=closed, holidays=("DE", "BE"))
    assert wall(mostly_closed.deadline(berlin(2026, 1, 1, 10), days=20)) == "Wed 2027-12-29 17:00:00"


# --- configuration ---------------------------------------------------------------------------------


def test_from_config_full() -> None:
    section = tomllib.loads(
        """
        timezone = "Europe/Berlin"
        business_hours = ["08:30", 16:00:00]
        workdays = ["Mon", "tue", "Wednesday", "thu", "fri"]
        holidays = {country = "de", subdivision = "be"}
        closed_dates = ["2026-12-24", 2026-12-31]
        """
    )
    cal = BusinessCalendar.from_config(section)
    assert cal == BusinessCalendar(
        business_hours=(time(8, 30), time(16)),
        holidays=("DE", "BE"),
        closed_dates=frozenset({date(2026, 12, 24), date(2026, 12, 31)}),
    )
    assert BusinessCalendar.from_config({}) == BusinessCalendar()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("timezone", "Mars/Olympus_Mons", "unknown timezone"),
        ("timezone", "", "unknown timezone"),
        ("timezone", 1, "IANA"),
        ("business_hours", ["9", "17:00"], "'9' is not a time"),
        ("business_hours", ["09:00", "24:00"], "'24:00' is not a time"),
        ("business_hours", ["17:00", "09:00"], "must be after start"),
        ("business_hours", ["09:00", "09:00"], "must be after start"),
        ("business_hours", ["09:00"], "expected"),
        ("business_hours", "09:00-17:00", "expected"),
        ("workdays", ["mon", "funday"], "unknown weekday 'funday'"),
        ("workdays", [0, 1, 2], "unknown weekday 0"),
        ("workdays", [], "at least one"),
        ("workdays", "mon", "expected a list"),
        ("holidays", {"country": "XX"}, "unknown holiday country 'XX'"),
        ("holidays", {"country": "DE", "subdivision": "ZZ"}, "unknown subdivision 'ZZ'"),
        ("holidays", {"subdivision": "BE"}, "country is required"),
        ("holidays", {"country": "DE", "region": "BE"}, "unknown key(s) region"),
        ("holidays", "DE", "expected a table"),
        ("closed_dates", ["2026-02-30"], "'2026-02-30' is not a date"),
        ("closed_dates", ["24.12.2026"], "'24.12.2026' is not a date"),
        ("closed_dates", [datetime(2026, 12, 24)], "is not a date"),
        ("closed_dates", "2026-12-24", "expected a list"),
        ("holiday", {"country": "DE"}, "unknown key (expected one of timezone,"),
    ],
)
def test_from_config_errors_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        BusinessCalendar.from_config({key: value})
    text = str(excinfo.value)
    assert text.startswith(f"sla.{key}: ")
    assert message in text


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="^timezone: "):
        BusinessCalendar(timezone="Nowhere/Special")
    with pytest.raises(ValueError, match="^business_hours: "):
        BusinessCalendar(business_hours=(time(17), time(9)))
    with pytest.raises(ValueError, match="^workdays: "):
        BusinessCalendar(workdays=frozenset({7}))
    with pytest.raises(ValueError, match="^holidays: "):
        BusinessCalendar(holidays=("DE", "XX"))
    assert BusinessCalendar(holidays=["DE"]).holidays == ("DE", None)


# --- property tests against an independent minute-stepping oracle ---------------------------------


@dataclass(frozen=True)
class OracleSpec:
    """The same calendar described for the oracle, which uses none of BusinessCalendar's code."""

    zone: str
    open_minute: int
    close_minute: int
    workdays: frozenset[int]
    closed: frozenset[date]
    holiday_dates: frozenset[date]

    def calendar(self, holiday_spec: tuple[str, str | None]) -> BusinessCalendar:
        return BusinessCalendar(
            timezone=self.zone,
            business_hours=(
                time(*divmod(self.open_minute, 60)),
                time(*divmod(self.close_minute, 60)),
            ),
            workdays=self.workdays,
            holidays=holiday_spec,
            closed_dates=self.closed,
        )


def _holiday_dates(country: str, subdivision: str) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=range(2024, 2032)))


SPECS = {
    "berlin": (
        OracleSpec("Europe/Berlin", 9 * 60, 17 * 60, frozenset(range(5)), CLOSED, _holiday_dates("DE", "BE")),
        ("DE", "BE"),
    ),
    "new-york-mon-sat": (
        OracleSpec(
            "America/New_York",
            8 * 60 + 30,
            12 * 60 + 15,
            frozenset(range(6)),
            frozenset({date(2026, 11, 27), date(2027, 7, 5)}),
            _holiday_dates("US", "NY"),
        ),
        ("US", "NY"),
    ),
    "sydney-sun-thu": (
        OracleSpec(
            "Australia/Sydney",
            7 * 60,
            19 * 60,
            frozenset({6, 0, 1, 2, 3}),
            frozenset(),
            _holiday_dates("AU", "NSW"),
        ),
        ("AU", "NSW"),
    ),
}
CALENDARS = {name: (spec, spec.calendar(holiday_spec)) for name, (spec, holiday_spec) in SPECS.items()}


def oracle_deadline(spec: OracleSpec, arrival: datetime, business_minutes: int) -> datetime:
    """Walk local wall-clock minutes one at a time, jumping only over closed stretches."""
    t = arrival.astimezone(ZoneInfo(spec.zone)).replace(tzinfo=None)
    assert t.second == 0 and t.microsecond == 0
    counted = 0
    while counted < business_minutes:
        minute = t.hour * 60 + t.minute
        day = t.date()
        open_day = t.weekday() in spec.workdays and day not in spec.holiday_dates and day not in spec.closed
        if not open_day or minute >= spec.close_minute:
            t = datetime(t.year, t.month, t.day) + timedelta(days=1, minutes=spec.open_minute)
        elif minute < spec.open_minute:
            t = datetime(t.year, t.month, t.day) + timedelta(minutes=spec.open_minute)
        else:
            counted += 1
            t += timedelta(minutes=1)
    return t


def _special_days() -> list[date]:
    """Holidays, closed dates and DST change days of all zones, where bugs would hide."""
    days: set[date] = set()
    for spec, _ in SPECS.values():
        days |= {d for d in spec.holiday_dates | spec.closed if d.year in YEARS}
        zone = ZoneInfo(spec.zone)
        for n in range((date(2028, 12, 31) - date(2025, 1, 1)).days):
            d = date(2025, 1, 1) + timedelta(days=n)
            if (
                datetime(d.year, d.month, d.day, tzinfo=zone).utcoffset()
                != (datetime(d.year, d.month, d.day, tzinfo=zone) + timedelta(days=1)).utcoffset()
            ):
                days.add(d)
    return sorted(days)


OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), BERLIN]
uniform_instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 28), timezones=st.just(UTC)
)
near_special_days = st.builds(
    lambda d, minutes: datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(minutes=minutes),
    st.sampled_from(_special_days()),
    st.integers(-4 * 24 * 60, 4 * 24 * 60),
)
instants = st.tuples(st.one_of(uniform_instants, near_special_days), st.sampled_from(OFFSETS)).map(
    lambda pair: pair[0].astimezone(pair[1])
)
minute_instants = instants.map(lambda t: t.replace(second=0, microsecond=0))
calendar_names = st.sampled_from(sorted(CALENDARS))


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=calendar_names, arrival=minute_instants, days=st.integers(1, 3))
def test_deadline_matches_minute_oracle(name: str, arrival: datetime, days: int) -> None:
    spec, cal = CALENDARS[name]
    expected = oracle_deadline(spec, arrival, days * (spec.close_minute - spec.open_minute))
    result = cal.deadline(arrival, days=days)
    assert result.tzinfo is ZoneInfo(spec.zone)
    assert wall(result.replace(tzinfo=None)) == wall(expected)


@settings(max_examples=1000, deadline=None)
@given(name=calendar_names, arrival=instants)
def test_deadline_is_later_and_inside_business_hours(name: str, arrival: datetime) -> None:
    _, cal = CALENDARS[name]
    due = cal.deadline(arrival)
    assert due > arrival
    opens, closes = cal.business_hours
    assert cal.is_business_day(due.date())
    assert opens < due.timetz().replace(tzinfo=None) <= closes
    assert cal.business_time_between(arrival, due) == cal.business_day_length
    assert cal.elapsed_share(arrival, due, due) == 1.0


@settings(max_examples=1000, deadline=None)
@given(
    name=calendar_names,
    start=instants,
    first=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4)),
    second=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4)),
)
def test_adding_in_two_parts_equals_adding_at_once(
    name: str, start: datetime, first: timedelta, second: timedelta
) -> None:
    _, cal = CALENDARS[name]
    halfway = cal.add_business_time(start, first)
    at_once = cal.add_business_time(start, first + second)
    assert cal.add_business_time(halfway, second) == at_once
    assert cal.business_time_between(start, at_once) == first + second
