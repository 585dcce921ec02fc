"""Cache collapse (detectors/cache.py) on crafted minute buckets of a small use case: quiet on
the usual hit rate and on busier traffic; fires on hours without hits; resolves when hits
return; scopes that rarely hit the cache are not tested."""

from __future__ import annotations

import random

import pytest

from spendwarden.detectors import CacheCollapse, DetectorParameterError, Score

MIN = 60.0
DAY = 1440
AT = 3 * DAY + 600  # the collapse starts on day four at 10:00


def run(minutes: int, hit_rate: float = 0.45, calls_every: int = 6, seed: int = 1,
        collapse: range = range(0), det: CacheCollapse | None = None) -> list[Score]:
    """Score then learn each minute: a model call every ``calls_every`` minutes on average,
    hitting the cache at ``hit_rate``; inside ``collapse`` no call hits."""
    rng, det = random.Random(seed), det or CacheCollapse()
    scores = []
    for i in range(minutes):
        calls = sum(rng.random() < 1 / calls_every for _ in range(2))
        rate = 0.0 if i in collapse else hit_rate
        x = {"model_calls": calls, "hits": sum(rng.random() < rate for _ in range(calls))}
        t = (i + 1) * MIN
        scores.append(det.score_one(x, t))
        det.learn_one(x, t)
    return scores


def fired(scores: list[Score], minutes: range | None = None) -> list[int]:
    return [i for i in (minutes or range(len(scores))) if scores[i].severity in ("medium", "high")]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_two_weeks_at_the_usual_hit_rate_stay_quiet(seed: int) -> None:
    assert fired(run(14 * DAY, seed=seed)) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hours_without_a_hit_fire_within_the_collapse_and_resolve_after(seed: int) -> None:
    """A call every three minutes, none hitting for four hours: fired within two hours, and
    quiet again within half an hour of hits coming back."""
    scores = run(AT + 480, seed=seed, calls_every=3, collapse=range(AT, AT + 240))
    hits = fired(scores)
    assert hits and AT <= hits[0] < AT + 120 and max(hits) < AT + 240 + 30
    reason = scores[hits[0]].reasons[0]
    assert reason.startswith("cache hits: 0 of ") and reason.endswith("% usual")
    assert 0.38 < scores[hits[0]].expected < 0.52  # type: ignore[operator]


def test_after_a_collapse_the_test_restarts_so_a_few_misses_later_do_not_fire() -> None:
    """Evidence capped at 25 nats, five hits bring it under 15 (the alert resolves): what is
    left must not carry the next four misses (+2.6 nats) over the line again."""
    det = CacheCollapse()
    t = 0.0
    for i in range(3 * 24 * 20):  # three days at 50% hits, a call every three minutes
        t += 180
        det.learn_one({"model_calls": 1, "hits": i % 2}, t)
    for calls, hits in [(1, 0)] * 60 + [(1, 1)] * 5:
        t += 180
        det.learn_one({"model_calls": calls, "hits": hits}, t)
    assert det.score_one({}, t).severity == "none"
    for _ in range(4):
        t += 180
        det.learn_one({"model_calls": 1, "hits": 0}, t)
    assert det.score_one({}, t).value < 5


def test_a_busy_scope_fires_within_minutes() -> None:
    scores = run(AT + 60, calls_every=1, hit_rate=0.5, collapse=range(AT, AT + 60))
    assert fired(scores) and fired(scores)[0] - AT < 20


def test_fewer_hits_but_not_a_collapse_does_not_fire() -> None:
    """45% to 30%: a drift, not a collapse to a tenth; the call profile's to judge."""
    det = CacheCollapse()
    run(AT, det=det, calls_every=2)
    assert fired(run(DAY, hit_rate=0.3, calls_every=2, seed=9, det=det)) == []


def test_a_scope_that_rarely_hits_the_cache_is_not_tested() -> None:
    scores = run(AT + 600, hit_rate=0.08, calls_every=2, collapse=range(AT, AT + 600))
    assert fired(scores) == [] and "not tested" in scores[-1].reasons[0]


def test_no_alert_in_warm_up_and_it_says_so() -> None:
    scores = run(DAY + 600, calls_every=2, collapse=range(DAY, DAY + 600))
    assert fired(scores) == [] and "warming up" in scores[-1].text


def test_parameters_are_checked() -> None:
    with pytest.raises(DetectorParameterError, match="drop_to 1.5 must be a number between 0 and 1"):
        CacheCollapse(drop_to=1.5)
    with pytest.raises(DetectorParameterError, match="min_hit_rate 0 must be a number between 0 and 1"):
        CacheCollapse(min_hit_rate=0)
