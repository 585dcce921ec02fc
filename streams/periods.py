"""Budget periods: calendar day, week and month in a tenant's time zone (DST-correct).

A period is named by its local start date (``2026-11-25`` for a day, the week's first day for
a week, ``2026-11-01`` for a month) and carries its UTC bounds, so counters keyed by period
need no reset job. Lookups are cached per calendar: events of the current period cost a
comparison, not a time zone conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PeriodKind = Literal["day", "week", "month"]
PERIOD_KINDS: tuple[str, ...] = ("day", "week", "month")
WEEKDAYS: tuple[str, ...] = (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
)


@dataclass(frozen=True, slots=True)
class Period:
    """One calendar period: ``[start, end)`` in UTC epoch seconds, named by its local start."""

    kind: str
    id: str
    start: float
    end: float

    def contains(self, ts: float) -> bool:
        return self.start <= ts < self.end


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; a clear error for a typo."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris") from None


def _local_midnight(day: date, tz: ZoneInfo) -> float:
    # Midnight may not exist on a DST day in a few zones; fold=0 picks the first valid instant.
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


class Calendar:
    """Period arithmetic for one time zone and week start, with a one-entry cache per kind."""

    __slots__ = ("name", "tz", "week_start", "_cache")

    def __init__(self, timezone_name: str = "UTC", week_start: str = "monday") -> None:
        self.name = timezone_name
        self.tz = zone(timezone_name)
        if week_start not in WEEKDAYS:
            raise ValueError(f"week_start {week_start!r} must be one of {', '.join(WEEKDAYS)}")
        self.week_start = WEEKDAYS.index(week_start)
        self._cache: dict[str, Period] = {}

    def period(self, kind: str, ts: float) -> Period:
        """The period of ``kind`` that contains UTC epoch second ``ts``."""
        cached = self._cache.get(kind)
        if cached is not None and cached.start <= ts < cached.end:
            return cached
        found = self._compute(kind, ts)
        self._cache[kind] = found
        return found

    def local(self, ts: float) -> datetime:
        """Wall-clock time in this zone (for ``local.hour`` and friends)."""
        return datetime.fromtimestamp(ts, self.tz)

    def _compute(self, kind: str, ts: float) -> Period:
        today = datetime.fromtimestamp(ts, self.tz).date()
        if kind == "day":
            first, after = today, today + timedelta(days=1)
        elif kind == "week":
            first = today - timedelta(days=(today.weekday() - self.week_start) % 7)
            after = first + timedelta(days=7)
        elif kind == "month":
            first = today.replace(day=1)
            after = (first + timedelta(days=32)).replace(day=1)
        else:
            raise ValueError(f"period {kind!r} must be one of {', '.join(PERIOD_KINDS)}")
        return Period(kind, first.isoformat(), _local_midnight(first, self.tz), _local_midnight(after, self.tz))


@lru_cache(maxsize=8192)
def iso_utc(ts: float) -> str:
    """RFC 3339 UTC text for epoch seconds, millisecond precision (cached: effects repeat period
    ends and minute-aligned engine times)."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
