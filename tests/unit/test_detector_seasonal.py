"""Seasonal baseline (detectors/seasonal.py) on crafted hourly series: quiet on seasonality with
noise, fires on a spike, a step and a ramp, warm-up said and respected, local time followed."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from spendwarden.detectors import DetectorParameterError, Score, SeasonalBaseline
from spendwarden.detectors.base import fmt

H = 3600
DAY = 24
T0 = 1_764_547_200  # 2025-12-01 00:00 UTC, a Monday
Shape = Callable[[int], float]  # multiplier on the normal spend at hour index i


def normal_rate(local: datetime) -> float:
    """Calls per hour of a business use case: busy office hours, quiet nights, weekends at 40%."""
    hod = local.hour
    rate = 300.0 if 9 <= hod < 18 else 120.0 if 7 <= hod < 21 else 20.0
    return rate * (0.4 if local.weekday() >= 5 else 1.0)


def run(hours: int, shape: Shape = lambda i: 1.0, seed: int = 1, tz: str = "UTC", start: int = T0,
        det: SeasonalBaseline | None = None, usd_per_call: float = 0.05) -> list[Score]:
    """Score then learn ``hours`` closed hours. Spend is calls x price with the noise of summing
    that many lognormal call prices (sigma 1): ~9% at 300 calls, ~37% at 20."""
    rng, zone = random.Random(seed), ZoneInfo(tz)
    det = det or SeasonalBaseline(tz=tz)
    scores = []
    for i in range(hours):
        t = start + i * H
        calls = normal_rate(datetime.fromtimestamp(t + H / 2, zone)) * shape(i)
        sd = math.sqrt((math.e - 1) / calls)
        x = {"spend_usd": calls * usd_per_call * rng.lognormvariate(-sd * sd / 2, sd)}
        scores.append(det.score_one(x, t))
        det.learn_one(x, t)
    return scores


def fired(scores: list[Score], hours: range | None = None) -> list[int]:
    """Hour indexes with any severity."""
    return [i for i in (hours or range(len(scores))) if scores[i].severity != "none"]


AT = 35 * DAY + 10  # anomalies start on day 35 (a Monday), 10:00, after five weeks of normal


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pure_seasonality_with_noise_stays_quiet(seed: int) -> None:
    """Six weeks of daily and weekly seasonality with count noise: no alert at all."""
    scores = run(42 * DAY, seed=seed)
    assert fired(scores) == []
    assert all(s.warm for s in scores[14 * DAY:]) and not any(s.warm for s in scores[:14 * DAY])
    assert max(s.value for s in scores[14 * DAY:]) < 4.0


def test_a_spike_fires_in_its_hour_only_and_does_not_lift_the_baseline() -> None:
    """One hour at 4x: alert in that hour, quiet the next two days, and a week later the same
    slot still expects what it did before the spike."""
    scores = run(AT + 8 * DAY, lambda i: 4.0 if i == AT else 1.0)
    assert fired(scores) == [AT]
    assert scores[AT].severity in ("medium", "high")
    assert scores[AT + 7 * DAY].expected == pytest.approx(scores[AT - 7 * DAY].expected, rel=0.15)


def test_a_step_fires_at_once_then_becomes_the_new_normal() -> None:
    """Spend x3 from one hour on: quiet before, an alert every hour of the working day from the
    first one; once the shift has lasted (``accept_z``) it is the new level and alerts stop."""
    scores = run(AT + 5 * DAY, lambda i: 3.0 if i >= AT else 1.0)
    assert fired(scores, range(AT)) == []
    assert fired(scores, range(AT, AT + 8)) == list(range(AT, AT + 8))
    assert scores[AT].severity == "high"
    assert fired(scores, range(AT + 2 * DAY, AT + 5 * DAY)) == []


def test_a_ramp_fires_before_spend_doubles() -> None:
    """Spend rising 10% an hour (a runaway agent growing): an alert before the factor reaches 2."""
    scores = run(AT + DAY, lambda i: 1.1 ** (i - AT) if i >= AT else 1.0)
    first = fired(scores)[0]
    assert AT <= first and 1.1 ** (first - AT) < 2.0


def test_a_drop_is_not_an_alert() -> None:
    """A day without spend scores far below zero but never raises a severity (spend watcher)."""
    scores = run(AT + DAY, lambda i: 0.0001 if i >= AT else 1.0)
    assert fired(scores) == [] and scores[AT].value < -4


def test_warm_up_is_stated_and_no_alert_fires_before_14_days() -> None:
    """A 5x spike on day 4 is scored against the hour-of-day fallback, but only said, not alerted;
    lowering warmup_days lets the same fallback alert."""
    spike = 4 * DAY + 11
    scores = run(5 * DAY, lambda i: 5.0 if i == spike else 1.0)
    score = scores[spike]
    assert score.severity == "none" and not score.warm and score.value > 6
    assert "hour-of-day profile from 4.5 days" in score.text and "warming up: 4.5 of 14 days" in score.text
    early = run(5 * DAY, lambda i: 5.0 if i == spike else 1.0, det=SeasonalBaseline(warmup_days=3))
    assert fired(early) == [spike]


def test_before_three_days_there_is_no_baseline() -> None:
    """Fewer than ``min_days`` samples of an hour of day: no expectation, no band, said so."""
    score = run(2 * DAY + 12)[-1]
    assert score.expected is None and score.band is None and score.value == 0.0
    assert "no baseline yet: 2.5 days of history, needs 3" in score.text


def test_reasons_say_actual_expected_band_sigmas_and_profile() -> None:
    """The alert text a person reads."""
    scores = run(AT + 1, lambda i: 4.0 if i == AT else 1.0)
    score = scores[AT]
    lo, hi = score.band  # type: ignore[misc]
    assert lo < score.expected < hi < score.actual  # type: ignore[operator]
    assert score.text.startswith(f"spend {fmt(score.actual)} USD/h vs expected {fmt(score.expected)} (band ")
    assert f"{score.value:.1f} robust sigmas above, hour-of-week profile from 35 days" in score.text


def test_an_excess_under_the_minimum_is_not_an_alert() -> None:
    """A tiny scope's 5x spike is a large z but a few cents: no severity, reason given."""
    spike = AT
    scores = run(AT + 1, lambda i: 5.0 if i == spike else 1.0, usd_per_call=0.0001)
    score = scores[spike]
    assert score.value > 6 and score.severity == "none"
    assert "under the 1 USD/h minimum" in score.text


def test_the_profile_follows_local_time_through_dst() -> None:
    """New York business hours across the March DST change: quiet in the tenant's zone; a
    detector left on UTC sees the shifted opening hour as a jump in spend."""
    start = int(datetime(2026, 2, 2, tzinfo=ZoneInfo("America/New_York")).timestamp())  # Monday
    hours = 8 * 7 * DAY  # to 30 March; DST starts 8 March
    assert fired(run(hours, tz="America/New_York", start=start)) == []
    blind = run(hours, tz="America/New_York", start=start, det=SeasonalBaseline(tz="UTC"))
    assert len(fired(blind)) >= 3


def test_parameters_are_checked() -> None:
    """Bad parameters fail at construction, naming the parameter."""
    with pytest.raises(DetectorParameterError, match="min_days"):
        SeasonalBaseline(min_days=0)
    with pytest.raises(DetectorParameterError, match="floor_usd"):
        SeasonalBaseline(floor_usd=-1)
    with pytest.raises(ValueError, match="unknown time zone .Europe/Pariss"):
        SeasonalBaseline(tz="Europe/Pariss")
