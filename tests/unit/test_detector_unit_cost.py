"""Unit-cost drift (detectors/unit_cost.py) on crafted hourly buckets: quiet on steady noise and on
growth, fires on a slow leak and a step, never on one wild point; pooling, warm-up, river parity."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from river import stats

from spendwarden.detectors import DetectorParameterError, Score, UnitCostDrift

H = 3600
DAY = 24
T0 = 1_764_547_200  # 2025-12-01 00:00 UTC, a Monday
Factor = Callable[[int], float]


def run(hours: int, price: Factor = lambda i: 1.0, volume: Factor = lambda i: 1.0, seed: int = 1,
        det: UnitCostDrift | None = None, calls_per_hour: float = 300.0) -> list[Score]:
    """Score then learn hourly buckets of a business use case: calls follow the working day and
    week; each call's price is lognormal (sigma 1, mean 0.02 USD x ``price(i)``), so a bucket's
    unit cost carries the noise of averaging that many calls."""
    rng, det = random.Random(seed), det or UnitCostDrift()
    scores = []
    for i in range(hours):
        hod, weekend = i % 24, (i // 24) % 7 >= 5
        rate = calls_per_hour * (1.0 if 9 <= hod < 18 else 0.4 if 7 <= hod < 21 else 0.07)
        rate *= (0.4 if weekend else 1.0) * volume(i)
        calls = max(0, round(rng.gauss(rate, math.sqrt(rate))))
        cv2 = math.e - 1
        sd = math.sqrt(math.log(1 + cv2 / calls)) if calls else 0.0
        cost = calls * 0.02 * price(i) * rng.lognormvariate(-sd * sd / 2, sd)
        x = {"cost_usd": cost, "requests": calls, "tokens": calls * 1500}
        t = T0 + (i + 1) * H  # a bucket's time is its end
        scores.append(det.score_one(x, t))
        det.learn_one(x, t)
    return scores


def fired(scores: list[Score], hours: range | None = None) -> list[int]:
    return [i for i in (hours or range(len(scores))) if scores[i].severity != "none"]


AT = 28 * DAY + 10  # incidents start on day 28 (a Monday) at 10:00, after four weeks of normal


@pytest.mark.parametrize(("seed", "cycle"), [(1, 0.0), (2, 0.0), (3, 0.3)])
def test_steady_unit_cost_with_noise_stays_quiet(seed: int, cycle: float) -> None:
    """Six weeks of steady prices with daily and weekly volume swings, and (cycle 0.3) a daily
    +-30% swing of the unit cost itself (night batch jobs on a cheaper model): no alert."""
    scores = run(42 * DAY, seed=seed, price=lambda i: 1 + cycle * math.sin(math.pi * (i % 24) / 12))
    assert fired(scores) == []
    assert max(abs(s.value) for s in scores[3 * DAY:]) < 4.0


def test_growth_is_not_an_anomaly() -> None:
    """Volume up 50% over a week, then a day at 3x (a marketing surge), unit cost steady: spend
    grows, the unit-cost drift does not move."""
    def volume(i: int) -> float:
        grown = 1 + 0.5 * min(1.0, max(0.0, (i - AT) / (7 * DAY)))
        return grown * (3.0 if AT + 10 * DAY <= i < AT + 11 * DAY else 1.0)
    scores = run(AT + 14 * DAY, volume=volume)
    assert fired(scores) == []
    assert max(abs(s.value) for s in scores[AT:]) < 4.0


def test_a_slow_leak_of_3_percent_a_day_fires_within_its_ten_days() -> None:
    """Unit cost +3% a day for ten days: quiet before, an alert before the leak ends, and it
    stays up once it fires (the baseline lags a sustained drift)."""
    leak: Factor = lambda i: 1.03 ** (min(i - AT, 10 * DAY) / DAY) if i >= AT else 1.0
    scores = run(AT + 12 * DAY, price=leak)
    assert fired(scores, range(AT)) == []
    first = fired(scores)[0]
    assert AT < first < AT + 10 * DAY
    assert fired(scores, range(first, AT + 10 * DAY)) == list(range(first, AT + 10 * DAY))
    score = scores[first]
    assert "drift" in score.text and score.actual > score.expected  # type: ignore[operator]


def test_a_step_in_unit_cost_fires_within_hours() -> None:
    """30% of calls misrouted to a model 10x the price (unit cost x3.7) from one hour on: each
    point is clipped, so a step is confirmed over a few hourly points, not one."""
    scores = run(AT + 2 * DAY, price=lambda i: 3.7 if i >= AT else 1.0)
    assert fired(scores, range(AT)) == []
    assert AT <= fired(scores)[0] <= AT + 6


@pytest.mark.parametrize("factor", [20.0, 0.05])
@pytest.mark.parametrize("offset", [0, 5, 14, 5 * DAY])  # 10:00, 15:00, midnight, a Saturday
def test_one_wild_point_cannot_fire(factor: float, offset: int) -> None:
    """One bucket at 20x (or 1/20) the usual unit cost, at a busy, a quiet or a weekend hour: no
    alert, and the score moves by under 2 standard errors against the same series without it
    (the point is clipped at 3 of its sigmas and weighs at most twice the recent average; part
    of the move is the ordinary bucket's own noise it replaces)."""
    at = AT + offset
    base = run(at + 3)
    spiked = run(at + 3, price=lambda i: factor if i == at else 1.0)
    assert fired(spiked) == []
    assert max(abs(spiked[i].value - base[i].value) for i in range(at, at + 3)) < 2.0


def test_a_one_hour_spike_in_unit_cost_is_not_a_drift() -> None:
    """A single hour at 3x, then back to normal: no alert (the loop and spend detectors own spikes)."""
    assert fired(run(AT + DAY, price=lambda i: 3.0 if i == AT else 1.0)) == []


def test_cheaper_is_not_an_alert() -> None:
    """Unit cost halving scores far below zero and raises nothing."""
    scores = run(AT + 2 * DAY, price=lambda i: 0.5 if i >= AT else 1.0)
    assert fired(scores) == [] and scores[-1].value < -6


def test_warm_up_is_stated_and_no_alert_fires_before_it() -> None:
    """A step on the second day scores high but is only said: warming up for 72 hours."""
    scores = run(2 * DAY + 12, price=lambda i: 3.7 if i >= 36 else 1.0)
    assert fired(scores) == [] and scores[-1].value > 6
    assert "warming up: 59 of 72 hours of history" in scores[-1].text


def test_quiet_buckets_are_pooled_so_one_expensive_call_does_not_fire() -> None:
    """At ~3 calls an hour, buckets pool to ``min_volume`` calls; a single call at 50x the price
    is diluted and clipped. The same scope's step still fires."""
    quiet = run(AT + 3 * DAY, calls_per_hour=12.0)
    assert fired(quiet) == []
    once = run(AT + 3 * DAY, calls_per_hour=12.0, price=lambda i: 50.0 if i == AT else 1.0)
    assert fired(once) == []
    step = run(AT + 3 * DAY, calls_per_hour=12.0, price=lambda i: 3.7 if i >= AT else 1.0)
    assert fired(step) and fired(step)[0] < AT + DAY


def test_per_thousand_tokens_names_its_unit() -> None:
    """per="tokens" tracks USD per 1k tokens and says so."""
    det = UnitCostDrift(per="tokens")
    score = run(4 * DAY, det=det)[-1]
    assert "USD per 1k tokens" in score.text
    assert score.expected == pytest.approx(0.02 / 1.5, rel=0.1)


def test_reasons_say_recent_baseline_band_drift_and_half_lives() -> None:
    scores = run(AT + 3 * DAY, price=lambda i: 1.5 if i >= AT else 1.0)
    score = scores[fired(scores)[0]]
    lo, hi = score.band  # type: ignore[misc]
    assert lo < score.expected < hi < score.actual  # type: ignore[operator]
    assert score.text.startswith("unit cost ") and " USD/request recently vs baseline " in score.text
    assert "standard errors above, half-lives 24 h recent, 7 days baseline" in score.text


def test_the_recent_mean_is_rivers_ewmean_once_warm() -> None:
    """With one point an hour of even volume and no clipping, the recent mean of log unit cost is
    river's EWMean with fading factor 1 - 0.5**(1/half-life), the same statistic kept as JSON
    floats; it differs in the fifth digit only because weights follow the noise fit as it learns."""
    det = UnitCostDrift(huber_k=1e6)
    river_mean = stats.EWMean(fading_factor=1 - 0.5 ** (1 / det.fast_half_life_h))
    rng = random.Random(4)
    for i in range(2000):
        unit = 0.02 * rng.lognormvariate(0, 0.2)
        det.learn_one({"cost_usd": unit * 100, "requests": 100}, T0 + i * H)
        river_mean.update(math.log(unit))
    assert math.log(det.score_one({}, T0 + 2000 * H).actual) == pytest.approx(river_mean.get(), abs=1e-4)


def test_parameters_are_checked() -> None:
    with pytest.raises(DetectorParameterError, match="per 'calls' must be one of requests, tokens, outcomes"):
        UnitCostDrift(per="calls")
    with pytest.raises(DetectorParameterError, match="fast_half_life_h 200 must be less than slow_half"):
        UnitCostDrift(fast_half_life_h=200)
