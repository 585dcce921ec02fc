"""Local hour slots of UTC hours, for seasonal profiles in a tenant's time zone."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

HOUR = 3600
_WEEK_ALIGN = 72  # 1970-01-01 was a Thursday: (local hour index + 72) % 168 is Monday-based


@lru_cache(maxsize=65536)
def _shift(tz: str, hour: int) -> int:
    """Local minus UTC hour index of a bucket, judged at its midpoint (as streams/forecast.py
    does: a :30 zone's bucket goes to the later local hour). Cached: a lookup costs ~1 µs."""
    offset = datetime.fromtimestamp(hour * HOUR + HOUR // 2, ZoneInfo(tz)).utcoffset()
    return (HOUR // 2 + int(offset.total_seconds() if offset else 0)) // HOUR


def local_slots(tz: str, hour: int) -> tuple[int, int]:
    """(hour of day 0-23, hour of week 0-167 from Monday 00:00) of UTC hour index ``hour``.

    On a 25-hour DST day one local slot gets two buckets; on a 23-hour day one gets none.
    """
    local = hour if tz == "UTC" else hour + _shift(tz, hour)
    return local % 24, (local + _WEEK_ALIGN) % 168
