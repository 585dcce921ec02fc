"""The contract every detector in spendwarden.detectors.DETECTORS keeps (river's checks, plus state)."""

from __future__ import annotations

import doctest
import json
import math
import pickle
import random
from collections.abc import Callable, Iterator, Mapping

import orjson
import pytest

import spendwarden.detectors as detectors
from spendwarden.detectors import DETECTORS, Detector, DetectorParameterError, DetectorStateError, Score
from spendwarden.detectors.profile import profile_counts

H = 3600.0
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC, a Monday

Feed = Callable[[random.Random, int], Mapping[str, float]]


def _spend(rng: random.Random, hour: int) -> Mapping[str, float]:
    return {"spend_usd": 100 * (2 if 9 <= hour % 24 < 18 else 0.5) * rng.lognormvariate(0, 0.2)}


def _unit_cost(rng: random.Random, hour: int) -> Mapping[str, float]:
    n = rng.randint(5, 400)  # some buckets under min_volume: pooling is exercised too
    return {"cost_usd": n * 0.01 * rng.lognormvariate(0, 0.3), "requests": n, "tokens": n * 900}


def _tokens(rng: random.Random, hour: int) -> Mapping[str, float]:
    n = rng.randint(0, 60)  # some buckets under min_volume: pooling is exercised too
    return {"tokens": sum(1200 * rng.lognormvariate(0, 0.5) for _ in range(n)), "model_calls": n}


def _new_model(rng: random.Random, hour: int) -> Mapping[str, float]:
    x: dict[str, float] = {}
    for _ in range(rng.randint(0, 30)):
        model = rng.choice(["gpt-4o", "gpt-4o-mini"]) if rng.random() < 0.98 else f"rare-{rng.randrange(20)}"
        x["model:" + model] = x.get("model:" + model, 0) + 1
        x["usd:" + model] = x.get("usd:" + model, 0.0) + 0.01 * rng.lognormvariate(0, 1)
    return x


def _cache(rng: random.Random, hour: int) -> Mapping[str, float]:
    calls = rng.randint(0, 12)
    return {"model_calls": calls, "hits": sum(rng.random() < 0.45 for _ in range(calls))}


def _profile(rng: random.Random, hour: int) -> Mapping[str, float]:
    x: dict[str, float] = {}
    for _ in range(rng.randint(0, 30)):
        profile_counts("model_call" if rng.random() < 0.7 else "tool_call", rng.choice(["gpt-4o", "gpt-4o-mini"]),
                       rng.choice(["plan", "answer"]), int(rng.lognormvariate(7, 0.5)),
                       0 if rng.random() < 0.04 else int(rng.lognormvariate(5, 0.5)),
                       200 if rng.random() < 0.5 else 0, x)
    return x


FEEDS: dict[str, Feed] = {"seasonal": _spend, "unit_cost": _unit_cost, "tokens": _tokens, "profile": _profile,
                          "new_model": _new_model, "cache": _cache}


def _extreme(kind: str, rng: random.Random, hour: int) -> Mapping[str, float]:
    """Values across twelve orders of magnitude, zeros included: the state must stay bounded."""
    size = 10 ** rng.uniform(-6, 6) if rng.random() > 0.05 else 0.0
    if kind == "seasonal":
        return {"spend_usd": size}
    if kind == "profile":  # many long model and step names: the categories are capped
        x: dict[str, float] = {}
        for _ in range(rng.choice([0, 1, 40])):
            profile_counts("model_call", "m" * 150 + str(rng.randrange(10**6)), "s" * 150 + str(rng.randrange(10**6)),
                           int(size), int(size), int(size), x)
        return x
    n = rng.choice([0, 1, 25, 10**6])
    if kind == "tokens":
        return {"tokens": size * n, "model_calls": n}
    if kind == "cache":
        calls = rng.choice([0, 1, 25, 10**6])
        return {"model_calls": calls, "hits": rng.choice([0, calls // 2, calls, 10**9])}
    if kind == "new_model":  # many long model names: the models kept are capped
        name = f"{'m' * 150}{rng.randrange(10**6)}"
        return {f"model:{name}": n, f"usd:{name}": size}
    return {"cost_usd": size, "requests": n, "tokens": n * 1000}


def feed(det: Detector, kind: str, hours: range, seed: int = 1) -> Iterator[Score]:
    """Score then learn each hour of ``hours`` (river's order), yielding the scores."""
    rng = random.Random(seed)
    for hour in hours:
        x = FEEDS[kind](rng, hour)
        t = T0 + (hour + 1) * H - 1
        yield det.score_one(x, t)
        det.learn_one(x, t)


@pytest.fixture(params=sorted(DETECTORS))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_every_detector_is_exported_and_follows_the_protocol(kind: str) -> None:
    """Each registered detector satisfies the Detector protocol and is in __all__."""
    cls = DETECTORS[kind]
    assert cls.__name__ in detectors.__all__
    assert isinstance(cls(), Detector)
    assert cls.state_bound > 0


def test_score_before_learn_is_quiet_and_says_why(kind: str) -> None:
    """A new series scores without error: no severity, not warm, a reason given."""
    score = DETECTORS[kind]().score_one(FEEDS[kind](random.Random(0), 10), T0)
    assert score.severity == "none" and not score.warm and score.expected is None
    assert any("no baseline" in r for r in score.reasons)
    json.dumps(score.to_dict())


def test_score_one_does_not_change_state(kind: str) -> None:
    """Scoring is read-only: the state after scoring many points is the state before."""
    det = DETECTORS[kind]()
    list(feed(det, kind, range(24 * 20)))
    before = det.to_state()
    for hour in range(24 * 20, 24 * 21):
        det.score_one(FEEDS[kind](random.Random(hour), hour), T0 + hour * H)
    assert det.to_state() == before


def test_warm_at_is_false_only_where_the_score_is_not_warm(kind: str) -> None:
    """``warm_at(t)`` False means ``score_one(x, t)`` says not warm (rules gated on warm skip
    scoring on it), and it turns True once the series has warmed up."""
    det = DETECTORS[kind]()
    rng = random.Random(7)
    seen_warm = False
    for hour in range(24 * 21):
        x = FEEDS[kind](rng, hour)
        t = T0 + (hour + 1) * H - 1
        score = det.score_one(x, t)
        if not det.warm_at(t):
            assert not score.warm, (hour, score)
        seen_warm = seen_warm or (det.warm_at(t) and score.warm)
        det.learn_one(x, t)
    assert seen_warm


def test_learning_is_deterministic(kind: str) -> None:
    """The same series gives the same states and scores."""
    a, b = DETECTORS[kind](), DETECTORS[kind]()
    assert list(feed(a, kind, range(24 * 16))) == list(feed(b, kind, range(24 * 16)))
    assert a.to_state() == b.to_state()


def test_a_checkpoint_anywhere_changes_nothing(kind: str) -> None:
    """JSON round trips of the state (as the changelog does) at any hour give identical scores
    and states to a detector that was never checkpointed."""
    proto, plain = DETECTORS[kind](), DETECTORS[kind]()
    restored = proto.from_state(None)
    rng_a, rng_b = random.Random(5), random.Random(5)
    for hour in range(24 * 22):
        t = T0 + hour * H
        xa, xb = FEEDS[kind](rng_a, hour), FEEDS[kind](rng_b, hour)
        assert plain.score_one(xa, t) == restored.score_one(xb, t)
        plain.learn_one(xa, t)
        restored.learn_one(xb, t)
        if hour % 7 == 0:
            restored = proto.from_state(orjson.loads(orjson.dumps(restored.to_state())))
    assert plain.to_state() == restored.to_state()


def test_pickling_keeps_parameters_and_state(kind: str) -> None:
    """A pickled detector scores like the original (river's check)."""
    det = DETECTORS[kind]()
    list(feed(det, kind, range(24 * 16)))
    copy = pickle.loads(pickle.dumps(det))
    x = FEEDS[kind](random.Random(9), 3)
    assert copy.score_one(x, T0 + 400 * H) == det.score_one(x, T0 + 400 * H)
    assert copy.to_state() == det.to_state()


def test_redelivered_observation_is_not_learned_twice(kind: str) -> None:
    """learn_one of a time at or before the last one learned is a no-op."""
    det = DETECTORS[kind]()
    list(feed(det, kind, range(24 * 4)))
    before = det.to_state()
    det.learn_one(FEEDS[kind](random.Random(3), 5), T0 + 24 * 4 * H - 1)
    det.learn_one(FEEDS[kind](random.Random(3), 5), T0)
    assert det.to_state() == before


def test_state_stays_under_its_stated_bound(kind: str) -> None:
    """Ten weeks of values over twelve orders of magnitude: compact JSON under ``state_bound``
    (the figure docs/detectors.md states), and every value finite."""
    cls, rng = DETECTORS[kind], random.Random(11)
    det, largest = cls(), 0
    for hour in range(24 * 70):
        det.learn_one(_extreme(kind, rng, hour), T0 + hour * H)
        if hour % 97 == 0 or hour > 24 * 69:
            largest = max(largest, len(orjson.dumps(det.to_state())))
    assert 0 < largest <= cls.state_bound
    numbers = list(_numbers(orjson.loads(orjson.dumps(det.to_state()))))
    assert numbers and all(math.isfinite(v) for v in numbers)


def _numbers(value: object) -> Iterator[float]:
    """Every number inside a JSON value, however nested."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)


def test_a_foreign_or_damaged_state_is_refused(kind: str) -> None:
    """from_state checks the tag and the shape, so a key mix-up or a damaged value fails loudly."""
    det = DETECTORS[kind]()
    list(feed(det, kind, range(48)))
    state = det.to_state()
    with pytest.raises(DetectorStateError):
        det.from_state({**state, "v": "other-1"})
    with pytest.raises(DetectorStateError):
        det.from_state({k: v[:-1] if isinstance(v, list) and v else "damaged" if isinstance(v, dict) else v
                        for k, v in state.items()})
    for other in set(DETECTORS) - {kind}:
        foreign = DETECTORS[other]()
        list(feed(foreign, other, range(48)))
        with pytest.raises(DetectorStateError):
            det.from_state(foreign.to_state())


def test_from_state_keeps_the_prototypes_parameters(kind: str) -> None:
    """The prototype's parameters carry over; the prototype's own state does not."""
    proto = DETECTORS[kind](thresholds=(2.0, 3.0, 5.0))
    list(feed(proto, kind, range(48)))
    fresh = proto.from_state({})
    assert fresh.params() == proto.params() and fresh.to_state() == {}


@pytest.mark.parametrize("bad", [(4.0, 3.0, 5.0), (0.0, 1.0, 2.0), (1.0, 2.0, math.inf), "high"])
def test_bad_thresholds_are_refused_with_the_parameter_named(kind: str, bad: object) -> None:
    """Error messages name the parameter and the constraint."""
    with pytest.raises(DetectorParameterError, match="thresholds"):
        DETECTORS[kind](thresholds=bad)  # type: ignore[arg-type]


def test_doctests_run(kind: str) -> None:
    """The seeded example in each detector's docstring holds."""
    module = __import__(DETECTORS[kind].__module__, fromlist=["_"])
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
