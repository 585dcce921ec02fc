"""A dear model's debut (detectors/new_model.py) on crafted minute buckets: fires on the first
call of a model the scope never used that costs several times its usual call; quiet on known
models, cheap newcomers, warm-up; new again after two weeks without a call."""

from __future__ import annotations

import random

import pytest

from spendwarden.detectors import DetectorParameterError, NewModel, Score

MIN = 60.0
DAY = 86400.0
MIX = {"gpt-4o-mini": (0.6, 0.002), "gemini-2.0-flash": (0.3, 0.001), "claude-sonnet-4": (0.1, 0.02)}


def minute(rng: random.Random, extra: dict[str, float] | None = None) -> dict[str, float]:
    """One minute of a use case: 0-3 calls from the mix (the sonnet tenth is ten times dearer
    than the mean call), plus ``extra`` {model: USD per call} for one call each."""
    x: dict[str, float] = {}
    models, weights = list(MIX), [w for w, _ in MIX.values()]
    for model in rng.choices(models, weights, k=rng.randint(0, 3)):
        x["model:" + model] = x.get("model:" + model, 0) + 1
        x["usd:" + model] = x.get("usd:" + model, 0.0) + MIX[model][1] * rng.lognormvariate(0, 0.3)
    for model, usd in (extra or {}).items():
        x["model:" + model] = x.get("model:" + model, 0) + 1
        x["usd:" + model] = x.get("usd:" + model, 0.0) + usd
    return x


def run(start: float, minutes: int, det: NewModel, rng: random.Random,
        extra: dict[int, dict[str, float]] | None = None) -> list[Score]:
    """Score then learn each minute from ``start``; ``extra`` adds calls at given minutes."""
    scores = []
    for i in range(minutes):
        x = minute(rng, (extra or {}).get(i))
        t = start + (i + 1) * MIN
        scores.append(det.score_one(x, t))
        det.learn_one(x, t)
    return scores


def warm(seed: int = 1, days: float = 3) -> tuple[NewModel, random.Random]:
    det, rng = NewModel(), random.Random(seed)
    scores = run(0.0, int(days * 1440), det, rng)
    assert all(s.severity == "none" for s in scores)  # every model of the mix debuts in the warm-up
    return det, rng


def fired(scores: list[Score]) -> list[int]:
    return [i for i, s in enumerate(scores) if s.severity in ("medium", "high")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_week_of_the_usual_mix_stays_quiet(seed: int) -> None:
    det, rng = warm(seed)
    assert fired(run(3 * DAY, 7 * 1440, det, rng)) == []


def test_the_first_call_of_a_dear_new_model_fires_and_names_it() -> None:
    det, rng = warm()
    scores = run(3 * DAY, 120, det, rng, {30: {"claude-opus-4": 0.06}})
    assert fired(scores)[0] == 30
    top = scores[30]
    assert top.severity == "high" and top.value > 10
    assert top.reasons[0].startswith("model claude-opus-4 new to this scope (no call in 14 days): 1 call at ")


def test_the_debut_stays_scored_for_two_hours_then_the_model_is_known() -> None:
    det, rng = warm()
    scores = run(3 * DAY, 300, det, rng, {30: {"claude-opus-4": 0.06}, 200: {"claude-opus-4": 0.06}})
    assert fired(scores) == list(range(30, 151))  # its first two hours (active_min 120), not its next call
    assert "no model new" in scores[260].reasons[0]


def test_a_debut_cheapened_by_the_cache_is_judged_on_its_later_calls() -> None:
    """The first call of the dear model read most of its prompt from cache (2x the usual call);
    its next one, 70 minutes later, costs full price: the debut's mean fires then."""
    det, rng = warm()
    scores = run(3 * DAY, 120, det, rng, {10: {"claude-opus-4": 0.006}, 80: {"claude-opus-4": 0.08}})
    assert fired(scores)[0] == 80


def test_a_cheap_newcomer_and_a_known_dear_model_do_not_fire() -> None:
    det, rng = warm()
    scores = run(3 * DAY, 120, det, rng, {10: {"llama-3-8b": 0.001}, 20: {"claude-sonnet-4": 0.02}})
    assert fired(scores) == []


def test_a_debut_does_not_move_the_usual_price() -> None:
    det, rng = warm()
    usual = det.score_one({}, 3 * DAY).expected
    run(3 * DAY, 50, det, rng, {i: {"claude-opus-4": 0.06} for i in range(0, 50, 2)})
    assert det.score_one({}, 3 * DAY + 50 * MIN).expected == pytest.approx(usual, rel=0.15)


def test_a_model_unused_for_two_weeks_is_new_again() -> None:
    det, rng = warm()
    run(3 * DAY, 10, det, rng, {5: {"claude-opus-4": 0.06}})
    back_soon = NewModel().from_state(det.to_state())
    assert fired(run(13 * DAY, 10, back_soon, random.Random(5), {5: {"claude-opus-4": 0.06}})) == []
    assert fired(run(18 * DAY, 10, det, random.Random(5), {5: {"claude-opus-4": 0.06}}))[:1] == [5]


def test_no_alert_in_warm_up_and_it_says_so() -> None:
    det, rng = NewModel(), random.Random(1)
    scores = run(0.0, 1440, det, rng, {1000: {"claude-opus-4": 0.06}})
    assert fired(scores) == []
    assert "warming up" in scores[1000].text


def test_models_kept_are_capped() -> None:
    det, rng = warm()
    run(3 * DAY, 40, det, rng, {i: {f"model-{i}": 0.001} for i in range(40)})
    assert len(det.to_state()["m"]) == 12


def test_parameters_are_checked() -> None:
    with pytest.raises(DetectorParameterError, match="active_min 0 must be a finite number > 0"):
        NewModel(active_min=0)
    with pytest.raises(DetectorParameterError, match="warmup_calls -1"):
        NewModel(warmup_calls=-1)
