"""Spend forecasts for a budget period: burn rates, a local-time profile, time of exhaustion.

Pure: the engine hands in an hourly history (UTC hour index -> nano-dollars, sparse: an absent
hour after the first recorded one spent nothing) and the clock; nothing here reads the wall
clock or does I/O. The profile is built only from complete local days before today, so it is
stable all day: build it once (:func:`build_profile`) and call the cheap :func:`project` on every
status or rule evaluation; :func:`forecast` does both. Method and limits: docs/forecast.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import accumulate, repeat
from typing import Any
from zoneinfo import ZoneInfo

from spendwarden.streams.money import usd_text
from spendwarden.streams.periods import Calendar, Period, iso_utc, zone

HOUR = 3600
WEEK_MIN_HOURS = 13 * 24  # two weeks less a day, so a full 15-day history qualifies all day (see docs)
DAY_MIN_HOURS = 3 * 24
LEVEL_MIN, LEVEL_MAX = 0.25, 4.0
LEVEL_MIN_SHARE = 0.1  # today's level counts once its elapsed part expects >= 10% of the day
LINEAR_BAND = 0.5  # the linear fallback's interval: remaining spend +-50%
Z80 = 1.2816  # two-sided 80% normal quantile
_WEEK_ALIGN = 72  # 1970-01-01 was a Thursday: (local hour index + 72) % 168 is Monday-based

Segments = tuple[tuple[int, int, int], ...]  # (first hour, end hour, local-minus-UTC hour shift)


def burn_rate_nanos_per_hour(history: Mapping[int, int], now: float, hours: float) -> float:
    """Spend over ``[now - hours, now)`` per hour. Buckets are uniform in time: the oldest counts
    by its overlap, the current one by the share of its elapsed part inside the window (all of it
    unless the window is shorter than that part)."""
    if hours <= 0:
        raise ValueError(f"hours {hours!r} must be positive")
    start, current = now - hours * HOUR, int(now // HOUR)
    oldest, get = int(start // HOUR), history.get
    if oldest == current:  # the window lies inside the current hour's elapsed part
        return get(current, 0) * (now - start) / (now - current * HOUR) / hours
    total = get(oldest, 0) * ((oldest + 1) * HOUR - start) / HOUR
    return (total + sum(map(get, range(oldest + 1, current + 1), repeat(0)))) / hours


@dataclass(frozen=True, slots=True)
class Forecast:
    """End-of-period spend with an ~80% interval and the projected time the limit is reached."""

    end_nanos: int
    low_nanos: int
    high_nanos: int
    end_ratio: float | None  # end / limit; None without a limit
    exhausts_at: float | None  # epoch seconds; ``now`` if already at or over; None if not this period
    method: str  # seasonal-week, seasonal-day, linear or none
    history_hours: int
    burn_1h_nanos: int  # per hour
    burn_24h_nanos: int  # per hour
    level: float  # today's spend over the profile's expectation for it (1 when not judged)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: money as exact dollar text, times as RFC 3339 UTC."""
        ratio = self.end_ratio
        return {
            "method": self.method, "end_usd": usd_text(self.end_nanos), "low_usd": usd_text(self.low_nanos),
            "high_usd": usd_text(self.high_nanos),
            "end_ratio": ratio if ratio is None or math.isfinite(ratio) else None,
            "exhausts_at": None if self.exhausts_at is None else iso_utc(self.exhausts_at),
            "history_hours": self.history_hours, "level": round(self.level, 4),
            "burn_1h_usd_per_hour": usd_text(self.burn_1h_nanos),
            "burn_24h_usd_per_hour": usd_text(self.burn_24h_nanos),
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """Typical spend per local hour slot from complete days before ``day_start``; valid until
    ``day_end`` (the next local midnight), when today becomes history."""

    method: str
    tz: ZoneInfo
    day_start: float
    day_end: float
    first_hour: int | None  # oldest recorded hour (linear fallback's observed span)
    hours: int  # history hours the slots were built from
    values: tuple[float, ...] = ()  # 168 hour-of-week or 24 hour-of-day slots, nanos per hour
    prefix: tuple[float, ...] = ()  # running sums over two cycles: any window sum in O(1)
    days: tuple[tuple[int, tuple[float, ...]], ...] = ()  # (slot base, 25 running sums) per past day
    day_band: tuple[float, float] = (1 - LINEAR_BAND, 1 + LINEAR_BAND)  # past days' total / profile
    inflate: float = 1.0  # widens in-sample spreads to out-of-sample ones
    bands: dict[int, tuple[float, float]] = field(default_factory=dict, compare=False, repr=False)

    def rest_band(self, hour: int, frac: float) -> tuple[float, float]:
        """The rest-of-day ratio band at local ``hour`` + ``frac``: backtests run once per local
        hour (memoised here) and are interpolated within it."""
        lo0, hi0 = self.bands.get(hour) or self.bands.setdefault(hour, _rest_band(self, hour))
        nxt = min(hour + 1, 23)
        lo1, hi1 = self.bands.get(nxt) or self.bands.setdefault(nxt, _rest_band(self, nxt))
        return lo0 + frac * (lo1 - lo0), hi0 + frac * (hi1 - hi0)


def build_profile(history: Mapping[int, int], tz: Calendar | ZoneInfo | str, now: float) -> Profile:
    """The seasonal profile (or the linear/none fallback) for the local day containing ``now``."""
    tzinfo = _tz(tz)
    day_start, day_end = _day_bounds(tzinfo, now)
    cutoff = int(day_start // HOUR)  # its bucket (a :30 zone's straddles midnight) belongs to today
    first = min(history) if history else None
    span = 0 if first is None else cutoff - first
    if span < DAY_MIN_HOURS:
        return Profile("none" if first is None else "linear", tzinfo, day_start, day_end, first, 0)
    cycle = 168 if span >= WEEK_MIN_HOURS else 24
    vals = list(map(history.get, range(first, cutoff), repeat(0)))
    samples: list[list[int]] = [[] for _ in range(cycle)]
    days: dict[int, list[int]] = {}
    for a, b, shift in _segments(tzinfo, first, cutoff):
        for o in range(min(cycle, b - a)):  # a slot's samples are every cycle-th hour of a segment
            samples[(a + o + shift + _WEEK_ALIGN) % cycle].extend(vals[a - first + o:b - first:cycle])
        for day in range((a + shift) // 24, (b - 1 + shift) // 24 + 1):
            lo, hi = max(a + shift, day * 24), min(b + shift, day * 24 + 24)
            part = vals[lo - shift - first:hi - shift - first]
            if hi - lo == 24:
                days[day] = part
            else:  # a DST day spans two segments: a 25-hour day adds its repeated hour twice
                row = days.setdefault(day, [0] * 24)
                for k, spent in enumerate(part, lo - day * 24):
                    row[k] += spent
    # A trimmed mean per slot (drop the highest and lowest once there are three) keeps one spike
    # day from lifting every later forecast; with one or two samples it is the plain mean.
    values = tuple(0.0 if not xs else (sum(xs) - min(xs) - max(xs)) / (len(xs) - 2) if len(xs) >= 3
                   else sum(xs) / len(xs) for xs in samples)
    prefix = tuple(accumulate(values + values, initial=0.0))
    first_local = first + _shift(tzinfo, first)
    if first_local % 24:
        days.pop(first_local // 24, None)  # history began mid-day: not a complete day
    past = tuple((((d + 3) % 7) * 24 if cycle == 168 else 0, tuple(accumulate(row, initial=0.0)))
                 for d, row in sorted(days.items()))
    ratios = [x[24] / total for base, x in past if (total := prefix[base + 24] - prefix[base]) > 0]
    typical = sorted(map(len, samples))[cycle // 2]  # samples per slot
    inflate = math.sqrt((typical + 1) / (typical - 1)) if typical > 1 else 2.0
    method = "seasonal-week" if cycle == 168 else "seasonal-day"
    return Profile(method, tzinfo, day_start, day_end, first, span, values, prefix, past,
                   _band(ratios, inflate), inflate)


def forecast(history: Mapping[int, int], period: Period, now: float, spend_nanos: int,
             limit_nanos: int | None, tz: Calendar | ZoneInfo | str) -> Forecast:
    """Build the profile and project: for a one-off status call (rules should reuse a profile)."""
    return project(build_profile(history, tz, now), history, period, now, spend_nanos, limit_nanos)


def project(profile: Profile, history: Mapping[int, int], period: Period, now: float, spend_nanos: int,
            limit_nanos: int | None) -> Forecast:
    """Current spend plus the expected rest of ``period`` from a prebuilt profile (rebuilt here if
    ``now`` left its day). Cost: tens of microseconds, independent of the period's length."""
    if not profile.day_start <= now < profile.day_end:
        profile = build_profile(history, profile.tz, now)
    burn_1h = burn_rate_nanos_per_hour(history, now, 1)
    burn_24h = burn_rate_nanos_per_hour(history, now, 24)
    end_t = max(now, period.end)
    level, exhausts = 1.0, None
    if profile.method in ("none", "linear"):
        first = profile.first_hour if profile.first_hour is not None else min(history, default=None)
        if first is None:
            method, used, rest, low, high = "none", 0, 0.0, 0.0, 0.0
        else:
            method, window = "linear", min(24.0, max(1.0, (now - first * HOUR) / HOUR))
            used = math.ceil(window)
            rate = burn_24h if window == 24.0 else burn_rate_nanos_per_hour(history, now, window)
            rest = rate * (end_t - now) / HOUR
            low, high = rest * (1 - LINEAR_BAND), rest * (1 + LINEAR_BAND)
            if limit_nanos is not None and rate > 0 and spend_nanos < limit_nanos:
                exhausts = now + (limit_nanos - spend_nanos) / rate * HOUR
    else:
        method, used = profile.method, profile.hours
        start_hour, now_hour = int(profile.day_start // HOUR), int(now // HOUR)
        segs = _segments(profile.tz, start_hour, math.ceil(max(end_t, profile.day_end) / HOUR))
        actual = sum(map(history.get, range(start_hour, now_hour + 1), repeat(0)))
        expected = _expect(profile, segs, start_hour * HOUR, now)
        whole_day = _range(profile, segs, start_hour, int(profile.day_end // HOUR))
        if expected > 0 and expected >= LEVEL_MIN_SHARE * whole_day:
            level = min(LEVEL_MAX, max(LEVEL_MIN, actual / expected))
        today = _expect(profile, segs, now, min(end_t, profile.day_end))
        later = _expect(profile, segs, profile.day_end, end_t) if end_t > profile.day_end else 0.0
        frac = now / HOUR - now_hour
        rest_lo, rest_hi = profile.rest_band((now_hour + _lookup(segs, now_hour)) % 24, frac)
        rest = level * (today + later)
        low = level * (today * rest_lo + later * profile.day_band[0])
        high = level * (today * rest_hi + later * profile.day_band[1])
        if limit_nanos is not None and spend_nanos < limit_nanos <= spend_nanos + rest:
            exhausts = _reach(profile, segs, now, end_t, (limit_nanos - spend_nanos) / level)
    end = spend_nanos + round(rest)
    if limit_nanos is not None and spend_nanos >= limit_nanos:
        exhausts = now
    elif exhausts is not None and exhausts > end_t:
        exhausts = None
    ratio = None if limit_nanos is None else (
        end / limit_nanos if limit_nanos > 0 else math.inf if end > 0 else 0.0)
    return Forecast(end, min(end, spend_nanos + round(low)), max(end, spend_nanos + round(high)), ratio,
                    exhausts, method, used, round(burn_1h), round(burn_24h), level)


def _tz(tz: Calendar | ZoneInfo | str) -> ZoneInfo:
    return tz.tz if isinstance(tz, Calendar) else tz if isinstance(tz, ZoneInfo) else zone(tz)


def _day_bounds(tz: ZoneInfo, now: float) -> tuple[float, float]:
    """The local day around ``now`` as UTC bounds (23 or 25 hours long on DST days)."""
    day = datetime.fromtimestamp(now, tz).date()
    after = day + timedelta(days=1)
    return (datetime(day.year, day.month, day.day, tzinfo=tz).timestamp(),
            datetime(after.year, after.month, after.day, tzinfo=tz).timestamp())


@lru_cache(maxsize=16384)
def _shift(tz: ZoneInfo, hour: int) -> int:
    """Local hour index minus UTC hour index for a bucket, judged at its midpoint (a :30 zone's
    bucket goes to the later local hour). Cached: a zone lookup costs about a microsecond."""
    offset = datetime.fromtimestamp(hour * HOUR + HOUR // 2, tz).utcoffset()
    return (HOUR // 2 + int(offset.total_seconds() if offset else 0)) // HOUR


@lru_cache(maxsize=4096)
def _segments(tz: ZoneInfo, a: int, b: int) -> Segments:
    """Split hours ``[a, b)`` where the zone's offset changes: probes a week apart, then bisects
    (zones change offset at most once a week, in practice twice a year)."""
    segs: list[tuple[int, int, int]] = []
    start, shift, probe = a, _shift(tz, a), a
    while probe < b - 1:
        nxt = min(probe + 168, b - 1)
        if _shift(tz, nxt) == shift:
            probe = nxt
            continue
        lo, hi = probe, nxt
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _shift(tz, mid) == shift else (lo, mid)
        segs.append((start, hi, shift))
        start, shift, probe = hi, _shift(tz, hi), hi
    segs.append((start, max(a, b), shift))
    return tuple(segs)


def _lookup(segs: Segments, hour: int) -> int:
    for a, b, shift in segs:
        if hour < b:
            return shift
    return segs[-1][2]


def _range(p: Profile, segs: Segments, a: int, b: int) -> float:
    """Expected spend over whole hours ``[a, b)``: whole cycles plus a wrapped slot run per segment."""
    cycle, total = len(p.values), 0.0
    for s0, s1, shift in segs:
        lo, hi = max(a, s0), min(b, s1)
        if hi > lo:
            whole, part = divmod(hi - lo, cycle)
            first = (lo + shift + _WEEK_ALIGN) % cycle
            total += whole * p.prefix[cycle] + p.prefix[first + part] - p.prefix[first]
    return total


def _expect(p: Profile, segs: Segments, t0: float, t1: float) -> float:
    """Expected spend over ``[t0, t1)`` in seconds, partial hours pro rata."""
    if t1 <= t0:
        return 0.0
    h0, h1, cycle = int(t0 // HOUR), int(t1 // HOUR), len(p.values)
    rate0 = p.values[(h0 + _lookup(segs, h0) + _WEEK_ALIGN) % cycle]
    if h0 == h1:
        return rate0 * (t1 - t0) / HOUR
    total = rate0 * ((h0 + 1) * HOUR - t0) / HOUR + _range(p, segs, h0 + 1, h1)
    if t1 > h1 * HOUR:
        total += p.values[(h1 + _lookup(segs, h1) + _WEEK_ALIGN) % cycle] * (t1 - h1 * HOUR) / HOUR
    return total


def _reach(p: Profile, segs: Segments, now: float, end: float, target: float) -> float:
    """When the expected spend from ``now`` reaches ``target`` (the caller checked it does by
    ``end``): bisect whole hours, then interpolate within one; O(log hours), a month costs ~a day."""
    first = int(now // HOUR) + 1
    head = _expect(p, segs, now, min(end, first * HOUR))
    lo, hi = first, int(end // HOUR)  # smallest hour boundary b with head + range(first, b) >= target
    if head >= target:
        lo = first
    elif head + _range(p, segs, first, hi) < target:
        lo = hi + 1  # in the partial hour before ``end``
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if head + _range(p, segs, first, mid) >= target else (mid + 1, hi)
    start = max(now, (lo - 1) * HOUR)
    rate = p.values[(lo - 1 + _lookup(segs, lo - 1) + _WEEK_ALIGN) % len(p.values)]
    got = head + _range(p, segs, first, lo - 1) if lo > first else 0.0
    return min(end, start + (target - got) / rate * HOUR) if rate > 0 else start


def _rest_band(p: Profile, hour: int) -> tuple[float, float]:
    """Backtest on past days: each day's actual rest-of-day from this local time over what the
    method (its own level times the profile) would have forecast; the 10th/90th percentiles."""
    ratios, pre = [], p.prefix
    for base, x in p.days:
        done, expected = x[hour], pre[base + hour] - pre[base]
        whole = pre[base + 24] - pre[base]
        level = 1.0
        if expected > 0 and expected >= LEVEL_MIN_SHARE * whole:
            level = min(LEVEL_MAX, max(LEVEL_MIN, done / expected))
        if whole - expected > 0:
            ratios.append((x[24] - done) / (level * (whole - expected)))
    return _band(ratios, p.inflate)


def _band(ratios: list[float], inflate: float) -> tuple[float, float]:
    """10th/90th percentiles of actual/forecast ratios (normal +-1.28 sigma under ten samples),
    widened around the centre by ``inflate``; the low end never below zero."""
    n = len(ratios)
    if n < 2:
        return 1 - LINEAR_BAND, 1 + LINEAR_BAND
    xs = sorted(ratios)
    if n >= 10:
        lo, mid, hi = _quantile(xs, 0.1), _quantile(xs, 0.5), _quantile(xs, 0.9)
    else:
        mid = sum(xs) / n
        sd = math.sqrt(sum((x - mid) ** 2 for x in xs) / (n - 1))
        lo, hi = mid - Z80 * sd, mid + Z80 * sd
    return max(0.0, mid - inflate * (mid - lo)), mid + inflate * (hi - mid)


def _quantile(xs: list[float], q: float) -> float:
    """Rank ``q * (n + 1)``: a new sample falls below it with probability ``q`` (the plain
    ``q * (n - 1)`` rank gives a 10-90% band that holds only ~70% of new days at n = 14)."""
    pos = min(max(q * (len(xs) + 1) - 1, 0.0), len(xs) - 1.0)
    i = int(pos)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (pos - i) * (xs[i + 1] - xs[i])
