"""Spend forecasts: burn rates, the seasonal profile, the level factor, intervals, exhaustion, DST."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from spendwarden.streams.forecast import (
    build_profile, burn_rate_nanos_per_hour, forecast, project,
)
from spendwarden.streams.money import NANOS_PER_USD as USD
from spendwarden.streams.periods import Calendar, Period

HOUR = 3600
DAY = 24 * HOUR
Rate = Callable[[datetime], float]  # dollars per hour at a local time


def at(tz: str, text: str) -> float:
    """Epoch seconds of local wall-clock ``text`` in ``tz`` (the first one on an ambiguous hour)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def series(tz: str, start: float, end: float, rate: Rate) -> dict[int, int]:
    """Hourly buckets over ``[start, end)``: ``rate`` at the bucket's local midpoint, pro rata for a
    partial bucket; zero hours left out, as the engine keeps them."""
    zone, out = ZoneInfo(tz), {}
    for hour in range(int(start // HOUR), math.ceil(end / HOUR)):
        seconds = min(end, (hour + 1) * HOUR) - max(start, hour * HOUR)
        nanos = round(rate(datetime.fromtimestamp(hour * HOUR + HOUR / 2, zone)) * seconds / HOUR * USD)
        if nanos:
            out[hour] = nanos
    return out


def spent(history: dict[int, int], period: Period, now: float) -> int:
    return sum(v for h, v in history.items() if period.start <= h * HOUR < now)


def business(dt: datetime) -> float:
    return 10.0 if 9 <= dt.hour < 17 else 1.0


def usual_day(tz: str, day: str, now_text: str, days: int, rate: Rate = business,
              today: Rate | None = None) -> tuple[dict[int, int], Period, float]:
    """``days`` past days of ``rate`` then today (``day``) up to ``now_text`` at ``today``'s rate."""
    now, midnight = at(tz, f"{day}T{now_text}"), at(tz, f"{day}T00:00")
    history = series(tz, midnight - days * DAY, midnight, rate) | series(tz, midnight, now, today or rate)
    return history, Calendar(tz).period("day", now), now


def test_burn_rate_weights_the_oldest_bucket_by_overlap_and_counts_the_current_hour() -> None:
    now = 1000 * HOUR + 600  # ten minutes into hour 1000
    history = {998: 5000, 999: 3600, 1000: 1000}
    assert burn_rate_nanos_per_hour(history, now, 1) == pytest.approx(1000 + 3600 * 50 / 60)
    assert burn_rate_nanos_per_hour(history, now, 2) == pytest.approx((5000 * 50 / 60 + 3600 + 1000) / 2)
    assert burn_rate_nanos_per_hour(history, now, 0.25) == pytest.approx((1000 + 3600 * 5 / 60) / 0.25)
    # A window shorter than the current hour's elapsed ten minutes takes its share of that bucket.
    assert burn_rate_nanos_per_hour(history, now, 5 / 60) == pytest.approx(1000 * 5 / 10 / (5 / 60))
    assert burn_rate_nanos_per_hour(history, now, 24) == pytest.approx((5000 + 3600 + 1000) / 24)
    assert burn_rate_nanos_per_hour({}, now, 24) == 0
    with pytest.raises(ValueError):
        burn_rate_nanos_per_hour(history, now, 0)


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize(("days", "method"), [(15, "seasonal-week"), (5, "seasonal-day"), (1, "linear")])
def test_constant_spend_forecasts_the_linear_expectation_and_exact_exhaustion(tz: str, days: int,
                                                                              method: str) -> None:
    """7.20 $/h all the time: the day ends at 24 x 7.20 whatever the method, and a limit 5 h of
    spend away is reached exactly 5 h from now (Kolkata's day starts mid-bucket, at :30 UTC)."""
    now = at(tz, "2026-06-10T10:30")
    history = series(tz, (now - days * DAY) // HOUR * HOUR, now, lambda _dt: 7.2)
    period = Calendar(tz).period("day", now)
    spend = round(7.2 * (now - period.start) / HOUR * USD)
    fc = forecast(history, period, now, spend, spend + 36 * USD, tz)
    assert fc.method == method
    assert fc.end_nanos == pytest.approx(round(24 * 7.2 * USD), abs=2)
    assert fc.exhausts_at == pytest.approx(now + 5 * HOUR, abs=1e-3)
    assert fc.burn_1h_nanos == fc.burn_24h_nanos == pytest.approx(7.2 * USD, abs=2)
    assert spend <= fc.low_nanos <= fc.end_nanos <= fc.high_nanos
    near_end = forecast(history, period, now, spend, round((24 - 0.1) * 7.2 * USD), tz)
    assert near_end.exhausts_at == pytest.approx(period.end - 0.1 * HOUR, abs=1e-3)
    if method == "linear":  # +-50% of the remaining 13.5 h
        assert fc.low_nanos - spend == pytest.approx(0.5 * 13.5 * 7.2 * USD, abs=2)
        assert fc.high_nanos - spend == pytest.approx(1.5 * 13.5 * 7.2 * USD, abs=2)
    else:  # every past day was exactly like this one
        assert fc.high_nanos - fc.low_nanos <= 2


def test_business_hours_profile_beats_linear_extrapolation_of_the_last_hour() -> None:
    """Busy 09-17 local: at 10:00 the last hour was busy, but the night ahead is quiet."""
    rng = random.Random(11)

    def noisy(dt: datetime) -> float:
        return business(dt) * rng.uniform(0.85, 1.15)

    tz = "America/New_York"
    history, period, now = usual_day(tz, "2026-06-10", "10:00", 7, noisy)
    rest = series(tz, now, period.end, noisy)
    truth = spent(history, period, now) + sum(rest.values())
    spend = spent(history, period, now)
    fc = forecast(history, period, now, spend, None, tz)
    linear = spend + fc.burn_1h_nanos * 14
    assert fc.method == "seasonal-day"
    assert abs(fc.end_nanos - truth) <= 0.05 * truth
    assert abs(fc.end_nanos - truth) * 5 < abs(linear - truth)
    assert fc.low_nanos <= truth <= fc.high_nanos


@pytest.mark.parametrize(("factor", "level"), [(2.0, 2.0), (0.5, 0.5), (10.0, 4.0)])
def test_a_day_running_above_its_profile_scales_the_rest(factor: float, level: float) -> None:
    """Today at 2x its usual 19 $ by 10:00 forecasts 2x the usual 77 $ after; the level is
    clamped to [0.25, 4]."""
    history, period, now = usual_day("Europe/Paris", "2026-06-10", "10:00", 7,
                                     today=lambda dt: factor * business(dt))
    fc = forecast(history, period, now, spent(history, period, now), None, "Europe/Paris")
    assert fc.level == pytest.approx(level)
    assert fc.end_nanos == pytest.approx((19 * factor + 77 * level) * USD, rel=1e-9)


def test_one_spike_day_does_not_lift_the_profile() -> None:
    """A runaway afternoon at 20x is dropped by the per-slot trimmed mean (a plain mean would
    expect ~37 $/h then, and today's normal morning cannot tell)."""
    spike = at("UTC", "2026-06-07T12:00")

    def rate(dt: datetime) -> float:
        return business(dt) * (20 if spike <= dt.timestamp() < spike + 5 * HOUR else 1)

    history, period, now = usual_day("UTC", "2026-06-10", "10:00", 7, rate)
    fc = forecast(history, period, now, spent(history, period, now), None, "UTC")
    assert fc.end_nanos == pytest.approx(96 * USD, rel=1e-9)


def test_the_80_percent_interval_holds_the_realised_day_most_of_the_time() -> None:
    """200 noisy days (a day-wide factor and per-hour noise), asked at a random time of day with
    6 or 14 past days: the interval holds the realised day total in roughly 80% of them."""
    rng, tz, hits, methods = random.Random(2026), "Europe/Paris", 0, set()
    for i in range(200):
        factors: dict[object, float] = {}

        def rate(dt: datetime) -> float:
            factor = factors.setdefault(dt.date(), rng.lognormvariate(0, 0.2))
            return business(dt) * factor * rng.lognormvariate(0, 0.4)

        midnight = at(tz, "2026-05-01T00:00") + rng.randrange(60) * DAY
        days = 14 if i % 2 else 6
        full = series(tz, midnight - days * DAY, midnight + DAY, rate)
        now = midnight + rng.uniform(HOUR, 23 * HOUR)
        hour = int(now // HOUR)
        seen = {h: v for h, v in full.items() if h < hour}
        seen[hour] = round(full.get(hour, 0) * (now / HOUR - hour))
        period = Calendar(tz).period("day", now)
        fc = forecast(seen, period, now, spent(seen, period, now), None, tz)
        methods.add(fc.method)
        hits += fc.low_nanos <= spent(full, period, period.end) <= fc.high_nanos
    assert methods == {"seasonal-day", "seasonal-week"}
    assert 0.65 * 200 <= hits <= 0.95 * 200


@pytest.mark.parametrize(("day", "hours", "total"), [("2026-03-29", 23, 95), ("2026-10-25", 25, 97)])
def test_dst_days_follow_local_hours(day: str, hours: int, total: int) -> None:
    """Paris loses 02:00 in March and repeats it in October: the business day is 95 $ or 97 $ and
    the busy hours stay 09-17 local although their UTC hours moved."""
    history, period, now = usual_day("Europe/Paris", day, "10:00", 7)
    assert period.end - period.start == hours * HOUR
    fc = forecast(history, period, now, spent(history, period, now), None, "Europe/Paris")
    assert fc.end_nanos == pytest.approx(total * USD, rel=1e-9)


@pytest.mark.parametrize(("day", "limit", "reached"), [
    ("2026-03-29", 9.0, "09:15"),  # 0.5 + six quiet hours 03-09 (02 does not exist) + 2.5 busy
    ("2026-10-25", 10.5, "09:12"),  # 0.5 + 02 twice + 03-09 + 2 busy
])
def test_exhaustion_walks_across_a_dst_change(day: str, limit: float, reached: str) -> None:
    history, period, now = usual_day("Europe/Paris", day, "01:30", 7)
    spend = spent(history, period, now)
    fc = forecast(history, period, now, spend, spend + round(limit * USD), "Europe/Paris")
    assert fc.exhausts_at == pytest.approx(at("Europe/Paris", f"{day}T{reached}"), abs=1e-3)


def test_no_history_forecasts_nothing_more() -> None:
    now = at("UTC", "2026-06-10T10:00")
    period = Calendar("UTC").period("day", now)
    fc = forecast({}, period, now, 5 * USD, 10 * USD, "UTC")
    assert (fc.method, fc.end_nanos, fc.low_nanos, fc.high_nanos) == ("none", 5 * USD, 5 * USD, 5 * USD)
    assert (fc.exhausts_at, fc.end_ratio, fc.history_hours) == (None, 0.5, 0)
    assert forecast({}, period, now, 10 * USD, 10 * USD, "UTC").exhausts_at == now


def test_short_history_extrapolates_its_own_rate() -> None:
    """Three hours of 2 $/h: linear over those three hours (not diluted over 24), +-50%."""
    now = at("UTC", "2026-06-10T10:00")
    history = series("UTC", now - 3 * HOUR, now, lambda _dt: 2.0)
    period = Calendar("UTC").period("day", now)
    fc = forecast(history, period, now, 6 * USD, None, "UTC")
    assert (fc.method, fc.history_hours, fc.end_nanos) == ("linear", 3, (6 + 28) * USD)
    assert (fc.low_nanos, fc.high_nanos) == ((6 + 14) * USD, (6 + 42) * USD)


@pytest.mark.parametrize("over", [0, 1])
def test_at_or_over_the_limit_exhausts_now(over: int) -> None:
    history, period, now = usual_day("UTC", "2026-06-10", "10:00", 7)
    spend = spent(history, period, now)
    fc = forecast(history, period, now, spend, spend - over * USD, "UTC")
    assert fc.exhausts_at == now
    assert fc.end_ratio is not None and fc.end_ratio > 1


def weekly(dt: datetime) -> float:
    return business(dt) if dt.weekday() < 5 else 0.5


@pytest.mark.parametrize(("kind", "now_text"), [
    ("month", "2026-06-12T10:00"), ("week", "2026-06-10T10:00"), ("month", "2026-10-20T12:00"),
])
def test_longer_periods_follow_the_week_profile(kind: str, now_text: str) -> None:
    """Weekdays busy, weekends at 0.50 $/h: the rest of a week or month (with October's 25-hour
    day) sums the right days, and exhaustion lands where an hour-by-hour walk says."""
    tz = "Europe/Paris"
    now = at(tz, now_text)
    history = series(tz, now - 15 * DAY, now, weekly)
    period = Calendar(tz).period(kind, now)
    spend = 1000 * USD
    ahead = series(tz, now, period.end, weekly)
    limit = spend + sum(ahead.values()) // 2
    fc = forecast(history, period, now, spend, limit, tz)
    assert fc.method == "seasonal-week"
    assert fc.end_nanos == pytest.approx(spend + sum(ahead.values()), rel=1e-9)
    total, crossing = spend, None
    for hour in sorted(ahead):
        if total + ahead[hour] >= limit:
            crossing = hour * HOUR + (limit - total) / ahead[hour] * HOUR
            break
        total += ahead[hour]
    assert fc.exhausts_at == pytest.approx(crossing, abs=1e-3)


def test_to_dict_is_json_ready_with_exact_dollars_and_utc_times() -> None:
    history, period, now = usual_day("UTC", "2026-06-10", "10:00", 7)
    spend = spent(history, period, now)
    fc = forecast(history, period, now, spend, 48 * USD, "UTC")
    out = json.loads(json.dumps(fc.to_dict()))
    assert (out["method"], out["end_usd"], out["end_ratio"]) == ("seasonal-day", "96", 2.0)
    assert (out["burn_1h_usd_per_hour"], out["burn_24h_usd_per_hour"]) == ("10", "4")
    assert out["exhausts_at"] == "2026-06-10T12:54:00.000Z"  # 19 $ by 10:00, 29 $ more at 10 $/h


def test_a_prebuilt_profile_gives_the_same_forecast_and_rebuilds_the_next_day() -> None:
    history, period, now = usual_day("UTC", "2026-06-10", "23:00", 14)
    profile = build_profile(history, Calendar("UTC"), now - 13 * HOUR)
    spend = spent(history, period, now)
    assert project(profile, history, period, now, spend, None) == forecast(history, period, now, spend,
                                                                           None, "UTC")
    later = now + 2 * HOUR
    nxt = Calendar("UTC").period("day", later)
    assert project(profile, history, nxt, later, 0, None) == forecast(history, nxt, later, 0, None, "UTC")


@pytest.mark.parametrize(("days", "method"), [(2, "linear"), (3, "seasonal-day"), (12, "seasonal-day"),
                                              (13, "seasonal-week")])
def test_the_method_follows_the_complete_days_of_history(days: int, method: str) -> None:
    history, period, now = usual_day("UTC", "2026-06-10", "20:00", days)
    fc = forecast(history, period, now, spent(history, period, now), None, "UTC")
    assert fc.method == method
    assert fc.history_hours == (days * 24 if method != "linear" else 24)
