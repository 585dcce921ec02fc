"""Calendar periods: ids and UTC bounds per time zone, DST day lengths, week starts, the cache."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendwarden.streams.periods import WEEKDAYS, Calendar, Period, iso_utc

HOUR = 3600.0


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bounds(period: Period) -> tuple[str, str, str]:
    return period.id, iso_utc(period.start), iso_utc(period.end)


@pytest.mark.parametrize(
    ("zone", "kind", "ts", "expected"),
    [
        ("Europe/Berlin", "day", "2026-11-25T12:00:00Z",
         ("2026-11-25", "2026-11-24T23:00:00.000Z", "2026-11-25T23:00:00.000Z")),
        ("Europe/Berlin", "week", "2026-11-25T12:00:00Z",
         ("2026-11-23", "2026-11-22T23:00:00.000Z", "2026-11-29T23:00:00.000Z")),
        ("Europe/Berlin", "month", "2026-11-25T12:00:00Z",
         ("2026-11-01", "2026-10-31T23:00:00.000Z", "2026-11-30T23:00:00.000Z")),
        ("Europe/Berlin", "day", "2026-07-01T12:00:00Z",
         ("2026-07-01", "2026-06-30T22:00:00.000Z", "2026-07-01T22:00:00.000Z")),
        ("America/New_York", "day", "2026-11-25T12:00:00Z",
         ("2026-11-25", "2026-11-25T05:00:00.000Z", "2026-11-26T05:00:00.000Z")),
        ("America/New_York", "day", "2026-11-25T03:00:00Z",
         ("2026-11-24", "2026-11-24T05:00:00.000Z", "2026-11-25T05:00:00.000Z")),
        ("America/New_York", "month", "2026-11-25T12:00:00Z",
         ("2026-11-01", "2026-11-01T04:00:00.000Z", "2026-12-01T05:00:00.000Z")),
        ("Asia/Kolkata", "day", "2026-11-25T12:00:00Z",
         ("2026-11-25", "2026-11-24T18:30:00.000Z", "2026-11-25T18:30:00.000Z")),
        ("Asia/Kolkata", "day", "2026-11-25T19:00:00Z",
         ("2026-11-26", "2026-11-25T18:30:00.000Z", "2026-11-26T18:30:00.000Z")),
        ("Asia/Kolkata", "week", "2026-11-25T12:00:00Z",
         ("2026-11-23", "2026-11-22T18:30:00.000Z", "2026-11-29T18:30:00.000Z")),
        ("Asia/Kolkata", "month", "2026-11-25T12:00:00Z",
         ("2026-11-01", "2026-10-31T18:30:00.000Z", "2026-11-30T18:30:00.000Z")),
        ("Australia/Lord_Howe", "day", "2026-01-15T00:00:00Z",
         ("2026-01-15", "2026-01-14T13:00:00.000Z", "2026-01-15T13:00:00.000Z")),
        ("Australia/Lord_Howe", "day", "2026-07-15T00:00:00Z",
         ("2026-07-15", "2026-07-14T13:30:00.000Z", "2026-07-15T13:30:00.000Z")),
    ],
)
def test_ids_and_utc_bounds(zone: str, kind: str, ts: str, expected: tuple[str, str, str]) -> None:
    """A period is named by its local start date and bounded by local midnights in UTC."""
    assert bounds(Calendar(zone).period(kind, epoch(ts))) == expected


@pytest.mark.parametrize(
    ("zone", "ts", "hours"),
    [
        ("America/New_York", "2026-03-08T12:00:00Z", 23.0),  # DST starts
        ("America/New_York", "2026-11-01T12:00:00Z", 25.0),  # DST ends
        ("America/New_York", "2026-11-02T12:00:00Z", 24.0),
        ("Europe/Berlin", "2026-03-29T12:00:00Z", 23.0),
        ("Europe/Berlin", "2026-10-25T12:00:00Z", 25.0),
        ("Australia/Lord_Howe", "2026-10-04T00:00:00Z", 23.5),  # 30-minute DST starts
        ("Australia/Lord_Howe", "2026-04-05T00:00:00Z", 24.5),  # 30-minute DST ends
        ("Asia/Kolkata", "2026-03-08T12:00:00Z", 24.0),
    ],
)
def test_dst_day_lengths(zone: str, ts: str, hours: float) -> None:
    """DST-start days are short and DST-end days long (by 1 h, or 30 min on Lord Howe)."""
    period = Calendar(zone).period("day", epoch(ts))
    assert period.end - period.start == hours * HOUR


def test_new_york_dst_days_exact_bounds() -> None:
    """2026-03-08 runs 05:00Z→04:00Z (23 h) and 2026-11-01 runs 04:00Z→05:00Z next day (25 h)."""
    calendar = Calendar("America/New_York")
    assert bounds(calendar.period("day", epoch("2026-03-08T12:00:00Z"))) == (
        "2026-03-08", "2026-03-08T05:00:00.000Z", "2026-03-09T04:00:00.000Z")
    assert bounds(calendar.period("day", epoch("2026-11-01T12:00:00Z"))) == (
        "2026-11-01", "2026-11-01T04:00:00.000Z", "2026-11-02T05:00:00.000Z")
    # 01:30 local happens twice on 2026-11-01; both belong to that day.
    assert calendar.period("day", epoch("2026-11-01T05:30:00Z")).id == "2026-11-01"
    assert calendar.period("day", epoch("2026-11-01T06:30:00Z")).id == "2026-11-01"


@pytest.mark.parametrize(
    ("week_start", "ts", "week_id"),
    [
        ("monday", "2026-11-25T12:00:00Z", "2026-11-23"),  # a Wednesday
        ("sunday", "2026-11-25T12:00:00Z", "2026-11-22"),
        ("monday", "2026-11-29T12:00:00Z", "2026-11-23"),  # a Sunday
        ("sunday", "2026-11-29T12:00:00Z", "2026-11-29"),
        ("sunday", "2026-11-28T12:00:00Z", "2026-11-22"),  # a Saturday
        ("saturday", "2026-11-28T12:00:00Z", "2026-11-28"),
    ],
)
def test_week_start(week_start: str, ts: str, week_id: str) -> None:
    """The week starts on the tenant's week_start day and lasts 7 local days."""
    period = Calendar("UTC", week_start).period("week", epoch(ts))
    assert period.id == week_id
    assert period.end - period.start == 7 * 24 * HOUR


def test_new_york_week_across_dst_end_is_169_hours() -> None:
    """A Sunday-start week containing the DST end is one hour longer."""
    period = Calendar("America/New_York", "sunday").period("week", epoch("2026-11-03T12:00:00Z"))
    assert period.id == "2026-11-01"
    assert period.end - period.start == 169 * HOUR


def test_month_rollover_december_to_january() -> None:
    """The last millisecond of December is in December; local midnight starts January."""
    calendar = Calendar("America/New_York")
    december = calendar.period("month", epoch("2027-01-01T04:59:59.999Z"))
    january = calendar.period("month", epoch("2027-01-01T05:00:00Z"))
    assert bounds(december) == ("2026-12-01", "2026-12-01T05:00:00.000Z", "2027-01-01T05:00:00.000Z")
    assert bounds(january) == ("2027-01-01", "2027-01-01T05:00:00.000Z", "2027-02-01T05:00:00.000Z")
    assert calendar.period("week", epoch("2027-01-01T05:00:00Z")).id == "2026-12-28"
    berlin = Calendar("Europe/Berlin")
    assert berlin.period("month", epoch("2026-12-31T22:59:59.999Z")).id == "2026-12-01"
    assert berlin.period("month", epoch("2026-12-31T23:00:00Z")).id == "2027-01-01"


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])
def test_last_millisecond_and_local_midnight(zone: str) -> None:
    """23:59:59.999 local counts to that day and 00:00:00 local to the next."""
    tz = ZoneInfo(zone)
    last = datetime(2026, 11, 25, 23, 59, 59, 999000, tzinfo=tz).timestamp()
    midnight = datetime(2026, 11, 26, tzinfo=tz).timestamp()
    calendar = Calendar(zone)
    assert calendar.period("day", last).id == "2026-11-25"
    assert calendar.period("day", midnight).id == "2026-11-26"
    assert calendar.period("day", last).end == midnight == calendar.period("day", midnight).start


def test_cache_handles_backward_jumps() -> None:
    """The one-entry cache gives the right period when time jumps back, forward and back again."""
    calendar = Calendar("Asia/Kolkata")
    sequence = ["2026-11-25T12:00:00Z", "2026-11-24T12:00:00Z", "2026-11-25T18:29:59Z",
                "2026-11-25T18:30:00Z", "2026-11-25T18:29:59.999Z", "2026-10-01T00:00:00Z",
                "2026-11-25T12:00:00Z"]
    for ts in sequence:
        for kind in ("day", "week", "month"):
            fresh = Calendar("Asia/Kolkata").period(kind, epoch(ts))
            assert calendar.period(kind, epoch(ts)) == fresh, (ts, kind)


def test_unknown_zone_and_week_start_are_refused() -> None:
    """A typo in a zone or week start is a clear ValueError."""
    with pytest.raises(ValueError, match="unknown time zone"):
        Calendar("Europe/Berlinn")
    with pytest.raises(ValueError, match="week_start"):
        Calendar("UTC", "sundai")


# ------------------------------------------------------------------ properties

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Havana",
         "America/Santiago"]
START = epoch("2026-01-01T00:00:00Z")
END = epoch("2028-01-01T00:00:00Z")


def expected_period(zone: str, week_start: str, kind: str, ts: float) -> tuple[str, float, float]:
    """Independent reference: local date via zoneinfo, bounds as first instant of the local date."""
    tz = ZoneInfo(zone)
    today = datetime.fromtimestamp(ts, tz).date()
    if kind == "day":
        first, after = today, today + timedelta(days=1)
    elif kind == "week":
        first = today - timedelta(days=(today.weekday() - WEEKDAYS.index(week_start)) % 7)
        after = first + timedelta(days=7)
    else:
        first = date(today.year, today.month, 1)
        after = date(today.year + (today.month == 12), today.month % 12 + 1, 1)
    return first.isoformat(), _first_instant(first, tz), _first_instant(after, tz)


def _first_instant(day: date, tz: ZoneInfo) -> float:
    """The earliest UTC instant whose local date is ``day`` (searched, not computed by offset)."""
    guess = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() - 15 * HOUR
    step = 1800.0  # every zone here changes offset on a half-hour boundary
    while datetime.fromtimestamp(guess, tz).date() < day:
        guess += step
    return guess


@settings(max_examples=150, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    week_start=st.sampled_from(WEEKDAYS),
    stamps=st.lists(st.integers(int(START * 1000), int(END * 1000)), min_size=1, max_size=12),
)
def test_calendar_matches_reference_in_any_order(zone: str, week_start: str, stamps: list[int]) -> None:
    """Timestamps in any order (jumping back and forth) get the reference period from one calendar."""
    calendar = Calendar(zone, week_start)
    for ms in stamps:
        ts = ms / 1000
        for kind in ("day", "week", "month"):
            period = calendar.period(kind, ts)
            assert period.contains(ts)
            assert (period.id, period.start, period.end) == expected_period(zone, week_start, kind, ts)
