"""Token creep (detectors/tokens.py) on crafted hourly buckets of a small use case: quiet on
steady noise, on growth and on one busy hour; fires on a +3%/day creep and on a step."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from spendwarden.detectors import DetectorParameterError, Score, TokenDrift

H = 3600
DAY = 24
T0 = 1_764_547_200  # 2025-12-01 00:00 UTC, a Monday
AT = 21 * DAY + 10  # changes start after three weeks of normal traffic
Factor = Callable[[int], float]


def run(hours: int, tokens: Factor = lambda i: 1.0, volume: Factor = lambda i: 1.0, seed: int = 1,
        calls_per_hour: float = 10.0, det: TokenDrift | None = None) -> list[Score]:
    """Score then learn hourly buckets of a use case with ~100 model calls a day (working hours
    busy, nights and weekends quiet); each call's tokens are lognormal (median 1,500, sigma 0.6
    as the scenario generator draws prompts) times ``tokens(i)``."""
    rng, det = random.Random(seed), det or TokenDrift()
    scores = []
    for i in range(hours):
        hod, weekend = i % 24, (i // 24) % 7 >= 5
        rate = calls_per_hour * (1.0 if 9 <= hod < 18 else 0.1) * (0.3 if weekend else 1.0) * volume(i)
        calls = max(0, round(rng.gauss(rate, math.sqrt(rate))))
        total = sum(1500 * tokens(i) * rng.lognormvariate(0, 0.6) for _ in range(calls))
        x = {"tokens": total, "model_calls": calls}
        t = T0 + (i + 1) * H
        scores.append(det.score_one(x, t))
        det.learn_one(x, t)
    return scores


def fired(scores: list[Score], hours: range | None = None) -> list[int]:
    return [i for i in (hours or range(len(scores))) if scores[i].severity in ("medium", "high")]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_steady_tokens_with_noise_stay_quiet(seed: int) -> None:
    scores = run(42 * DAY, seed=seed)
    assert fired(scores) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_creep_of_3_percent_a_day_fires_within_ten_days(seed: int) -> None:
    """On ~200 model calls a working day (at ~100 the creep reaches 4.6-6.2 standard errors by
    day ten: the detector's limit, docs/detectors.md)."""
    scores = run(AT + 10 * DAY, tokens=lambda i: 1.03 ** max(0.0, (i - AT) / DAY), calls_per_hour=20, seed=seed)
    assert fired(scores, range(AT)) == []
    first = fired(scores, range(AT, AT + 10 * DAY))
    assert first and first[0] - AT < 8 * DAY
    assert "tokens per model call" in scores[first[0]].text and "tokens/call" in scores[first[0]].text


def test_a_step_fires_within_two_days() -> None:
    scores = run(AT + 3 * DAY, tokens=lambda i: 1.5 if i >= AT else 1.0)
    assert fired(scores) and AT <= fired(scores)[0] < AT + 2 * DAY


def test_growth_in_calls_at_steady_tokens_is_not_an_anomaly() -> None:
    scores = run(AT + 10 * DAY, volume=lambda i: 1 + 0.5 * min(1.0, max(0.0, (i - AT) / (7 * DAY))))
    assert fired(scores) == []


@pytest.mark.parametrize("factor", [3.0, 10.0])
def test_one_busy_hour_of_long_prompts_is_not_a_creep(factor: float) -> None:
    scores = run(AT + 3 * DAY, tokens=lambda i: factor if i == AT else 1.0)
    assert fired(scores) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hours_of_sudden_prompt_bloat_leave_no_creep_behind(seed: int) -> None:
    """Prompts x3 for six hours are the call profile's to report; the creep detector, its
    hours clipped at 1.5 sigmas, stays quiet during and after them. Clipped at 3 sigmas (the
    unit-cost default) the same hours reach 4.8-7.1 standard errors."""
    bloat = lambda i: 3.0 if AT <= i < AT + 6 else 1.0  # noqa: E731
    clipped = run(AT + 4 * DAY, tokens=bloat, calls_per_hour=30, seed=seed)
    assert fired(clipped) == []
    loose = run(AT + 4 * DAY, tokens=bloat, calls_per_hour=30, seed=seed, det=TokenDrift(huber_k=3.0))
    assert max(s.value for s in loose[AT:]) > max(s.value for s in clipped[AT:]) + 1.5


def test_shorter_calls_are_not_an_alert() -> None:
    scores = run(AT + 5 * DAY, tokens=lambda i: 0.5 if i >= AT else 1.0)
    assert fired(scores) == [] and min(s.value for s in scores[AT:]) < -5


def test_warm_up_is_a_week_and_says_so() -> None:
    scores = run(7 * DAY, tokens=lambda i: 2.0 if i >= 4 * DAY else 1.0)
    assert fired(scores) == []
    assert "warming up" in scores[5 * DAY].text


def test_parameters_are_checked() -> None:
    with pytest.raises(DetectorParameterError, match="fast_half_life_h 400 must be less than slow_half"):
        TokenDrift(fast_half_life_h=400)
    assert TokenDrift(min_volume=5).from_state(None).params()["min_volume"] == 5
