"""TokenProfile on crafted minute series: each costly shift fires within minutes; the usual mix,
volume growth and cheaper shifts stay quiet."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import orjson
import pytest

from spendwarden.detectors import DetectorParameterError, TokenProfile
from spendwarden.detectors.profile import AGES, DEPTHS, binomial_z, bucket, profile_counts

MIX = (("gpt-4o", 0.5), ("gpt-4o-mini", 0.35), ("claude-haiku-4", 0.15))
STEPS = ("plan", "retrieve", "answer")


@dataclass
class Traffic:
    """Traces of 1-6 calls (steps in order), models from a mix, cache hits, failures retried."""

    rate: float = 6.0  # traces per minute
    mix: tuple[tuple[str, float], ...] = MIX
    hit: float = 0.6
    fail: float = 0.04
    input_factor: float = 1.0
    loop_traces: int = 0  # traces that never end, each adding loop_rate calls a minute
    loop_rate: float = 0.0
    storm: float = 0.0  # extra stuck requests a minute: 2-4 failed attempts each
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    _traces: int = 0
    _loops: dict[str, int] = field(default_factory=dict)

    def _poisson(self, lam: float) -> int:
        limit, k, p = math.exp(-lam), 0, self.rng.random()
        while p > limit:
            k += 1
            p *= self.rng.random()
        return k

    def _call(self, x: dict[str, float], step: str, position: int, failed: bool = False,
              refail: bool = False) -> None:
        rng = self.rng
        model = rng.choices([m for m, _ in self.mix], [w for _, w in self.mix])[0]
        tokens = int(rng.lognormvariate(7, 0.6) * self.input_factor) + 20
        cached = int(tokens * 0.5) if rng.random() < self.hit else 0
        profile_counts("model_call", model, step, tokens, 0 if failed else int(rng.lognormvariate(5, 0.6)) + 5,
                       cached, x, position, refail)

    def minute(self) -> dict[str, float]:
        x: dict[str, float] = {}
        rng = self.rng
        for _ in range(self._poisson(self.rate)):
            self._traces += 1
            position = 0
            for i in range(rng.choices(range(1, 7), [25, 20, 20, 15, 12, 8])[0]):
                position += 1
                if rng.random() < self.fail:
                    self._call(x, STEPS[i % 3], position, failed=True)
                    position += 1
                self._call(x, STEPS[i % 3], position)
        for _ in range(self._poisson(self.storm)):
            for attempt in range(rng.randint(2, 4)):
                self._call(x, "answer", attempt + 1, failed=True, refail=attempt > 0)
        for trace in range(self.loop_traces):
            for _ in range(self._poisson(self.loop_rate)):
                self._loops[str(trace)] = self._loops.get(str(trace), 0) + 1
                self._call(x, "retrieve", self._loops[str(trace)])
        return x


def run(det: TokenProfile, traffic: Traffic, minutes: int, start: int = 0) -> list[float]:
    """Score (with the open minute) then learn each minute; the scores."""
    scores = []
    for m in range(start, start + minutes):
        x = traffic.minute()
        scores.append(det.score_one(x, 60.0 * (m + 1) - 1).value)
        det.learn_one(x, 60.0 * (m + 1))
    return scores


WARM = 3 * 1440  # three days of the usual traffic


@pytest.fixture(scope="module")
def trained() -> dict[str, object]:
    det, traffic = TokenProfile(), Traffic()
    quiet = run(det, traffic, WARM + 2 * 1440)  # two more days after the warm-up: the quiet ones
    return {"state": det.to_state(), "quiet": quiet[WARM:]}


def warm(trained: dict[str, object]) -> TokenProfile:
    return TokenProfile().from_state(trained["state"])  # type: ignore[arg-type]


def first_alert(scores: list[float], threshold: float = 6.0) -> int | None:
    return next((i for i, v in enumerate(scores) if v > threshold), None)


def test_the_usual_mix_stays_quiet(trained: dict[str, object]) -> None:
    """Two days of ordinary traffic after warm-up: no minute reaches the low threshold."""
    quiet = trained["quiet"]
    assert isinstance(quiet, list) and max(quiet) < 5.0  # the low threshold (and the pack's)


@pytest.mark.parametrize("change, within, feature", [
    ({"mix": (("gpt-4o", 0.35), ("gpt-4o-mini", 0.25), ("claude-haiku-4", 0.1), ("claude-opus-4", 0.3))}, 6,
     "model claude-opus-4"),
    ({"hit": 0.03}, 10, "cache hits"),
    ({"input_factor": 3.0}, 6, "input tokens"),
    ({"storm": 0.75}, 10, "failed"),  # failed calls x4 (0.25 failures a minute normally; 0.75 x 3 more)
    ({"loop_traces": 3, "loop_rate": 3.0}, 10, ("traces reaching", "step retrieve")),  # three endless traces
])
def test_a_costly_shift_fires_within_minutes_and_is_named(trained: dict[str, object], change: dict[str, object],
                                                          within: int, feature: str | tuple[str, ...]) -> None:
    det = warm(trained)
    traffic = Traffic(rng=random.Random(7), **change)  # type: ignore[arg-type]
    start = WARM + 2 * 1440
    for m in range(start, start + within):
        x = traffic.minute()
        score = det.score_one(x, 60.0 * (m + 1) - 1)
        if score.value > 6.0:
            break
        det.learn_one(x, 60.0 * (m + 1))
    else:
        pytest.fail(f"no alert within {within} minutes; last score {score.value:.1f}: {score.text}")
    assert any(reason.startswith(feature) for reason in score.reasons[:2]), score.reasons


def test_what_moved_is_named(trained: dict[str, object]) -> None:
    det = warm(trained)
    run(det, Traffic(rng=random.Random(8), hit=0.03), 20, start=WARM + 2 * 1440)
    score = det.score_one({}, 60.0 * (WARM + 2 * 1440 + 21))
    assert score.severity != "none" and score.reasons[0].startswith("cache hits")
    assert score.actual < 0.3 and score.expected > 0.5  # recent: the last 20 minutes, decayed


@pytest.mark.parametrize("change", [
    {"rate": 18.0},  # a surge: three times the traffic, same mix
    {"hit": 0.9},  # more cache hits: cheaper
    {"fail": 0.0},  # no failures
    {"input_factor": 0.5},  # shorter prompts
])
def test_growth_and_cheaper_shifts_stay_quiet(trained: dict[str, object], change: dict[str, object]) -> None:
    det = warm(trained)
    scores = run(det, Traffic(rng=random.Random(9), **change), 120, start=WARM + 2 * 1440)  # type: ignore[arg-type]
    assert max(scores) < 5.0


def test_a_model_gaining_share_is_reported_whichever_model_it_is(trained: dict[str, object]) -> None:
    """The detector does not know prices: all calls moving to the cheap model is a shift too.
    The default pack alerts on it (a change of route someone should know about); docs say so."""
    det = warm(trained)
    scores = run(det, Traffic(rng=random.Random(9), mix=(("gpt-4o-mini", 1.0),)), 30, start=WARM + 2 * 1440)
    assert max(scores) > 6


def test_no_alert_before_warm_up() -> None:
    det = TokenProfile()
    run(det, Traffic(), 600)
    run(det, Traffic(rng=random.Random(3), hit=0.0), 30, start=600)
    score = det.score_one({}, 60.0 * 631)
    assert score.value > 6 and score.severity == "none" and not score.warm
    assert "warming up" in score.text


def test_binomial_z_is_signed_and_grows_with_evidence() -> None:
    assert binomial_z(4, 100, 0.04) == pytest.approx(0.0)
    assert binomial_z(1, 100, 0.04) < 0 < binomial_z(8, 100, 0.04) < binomial_z(16, 200, 0.04)
    assert binomial_z(3, 5, 1e-4) > 6  # three calls of a never-seen model in five


def test_a_trace_counts_once_per_depth_and_age_bucket_it_reaches() -> None:
    x: dict[str, float] = {}
    reached = -1
    for position in range(1, 21):  # one trace of 20 calls over 7 minutes
        reached = profile_counts("tool", None, "retrieve", 0, 0, 0, x, position, False, position // 3, reached)
    profile_counts("tool", None, "retrieve", 0, 0, 0, x)  # no trace: counted as a call only
    assert [bucket(DEPTHS, p) for p in (1, 2, 3, 4, 7, 8, 15, 16, 63, 64, 10**6)] == [
        "1", "2-3", "2-3", "4-7", "4-7", "8-15", "8-15", "16-31", "32-63", "64+", "64+"]
    assert [bucket(AGES, m) for m in (0, 1, 3, 6, 16, 61)] == ["0m", "1-2m", "3-5m", "6-15m", "16-60m", "60m+"]
    assert x["traces"] == 1 and x["calls"] == 21 and "model_calls" not in x
    assert {k: v for k, v in x.items() if k.startswith("depth:")} == {
        "depth:1": 1, "depth:2-3": 1, "depth:4-7": 1, "depth:8-15": 1, "depth:16-31": 1}
    assert {k: v for k, v in x.items() if k.startswith("age:")} == {
        "age:0m": 1, "age:1-2m": 1, "age:3-5m": 1, "age:6-15m": 1}


@pytest.mark.parametrize("per_minute", [1, 300])
def test_categories_are_capped_and_names_cut(per_minute: int) -> None:
    """One new model a minute or 300 in one minute: at most 12 named plus ``~other``, in the
    baseline and in every recent view, and the state stays under its bound."""
    det = TokenProfile()
    for m in range(200 if per_minute == 1 else 3):
        x: dict[str, float] = {}
        for i in range(per_minute):
            profile_counts("model_call", f"model-{m}-{i}-" + "x" * 100, "s", 100, 10, 0, x)
        det.learn_one(x, 60.0 * (m + 1))
    det.learn_one({}, 60.0 * 400)  # let the recent views flow into the baseline
    state = det.to_state()
    for sums in [state["b"], *state["r"]]:
        models = [k for k in sums if k.startswith("model:")]
        assert len(models) <= 13 and max(map(len, models)) <= 6 + 48
    assert "model:~other" in state["b"]
    assert len(orjson.dumps(state)) <= TokenProfile.state_bound


def test_a_category_still_in_the_recent_views_is_not_pruned() -> None:
    """A slow recent view feeds the baseline little per minute; a new model must not be forgotten
    while it is still being called."""
    det = TokenProfile(recent_half_lives_min=(10, 120))
    for m in range(30):
        x: dict[str, float] = {}
        profile_counts("model_call", "new-model", "s", 100, 10, 0, x)
        det.learn_one(x, 60.0 * (m + 1))
    assert all(r.get("model:new-model", 0) > 1 for r in det.to_state()["r"])


def test_warm_up_needs_calls_as_well_as_hours() -> None:
    """Two days of a handful of calls are not a baseline: a model switch then is not an alert."""
    det = TokenProfile()
    for m in range(0, 3 * 1440, 240):  # one call every four hours
        x: dict[str, float] = {}
        profile_counts("model_call", "gpt-4o", "s", 100, 10, 0, x)
        det.learn_one(x, 60.0 * (m + 1))
    x = {}
    for _ in range(10):
        profile_counts("model_call", "claude-opus-4", "s", 100, 10, 0, x)
    score = det.score_one(x, 60.0 * 3 * 1440)
    assert not score.warm and score.severity == "none" and "calls of history" in score.text


def test_a_few_failures_in_a_busy_clean_scope_are_not_an_alert() -> None:
    """Three failed calls among thousands: failures must rise by half a point to count."""
    det = TokenProfile()
    for m in range(3 * 1440):
        x: dict[str, float] = {}
        for _ in range(50):
            profile_counts("model_call", "gpt-4o", "s", 100, 10, 0, x)
        det.learn_one(x, 60.0 * (m + 1))
    x = {}
    for i in range(50):
        profile_counts("model_call", "gpt-4o", "s", 100, 0 if i < 3 else 10, 0, x)
    assert det.score_one(x, 60.0 * (3 * 1440 + 1)).value < 6


@pytest.mark.parametrize("bad", [{"min_share_change": 1.0}, {"min_token_ratio": 0.9}, {"recent_half_lives_min": (10, 0)}, {"recent_half_lives_min": ()}])
def test_bad_parameters_are_refused_by_name(bad: dict[str, float]) -> None:
    with pytest.raises(DetectorParameterError, match=next(iter(bad))):
        TokenProfile(**bad)  # type: ignore[arg-type]
