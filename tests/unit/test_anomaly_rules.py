"""Rules reading `anomaly.*`: detectors taught by closed hours, scored on the last 60 minutes."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from conftest import build_event

from spendwarden.exceptions import RuleFileError
from spendwarden.streams.effects import AlertFiring
from spendwarden.streams.engine import Engine, position

RULES = """
tenants:
  acme: {timezone: Europe/Paris}
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100000}
rules:
  - name: spend-spike
    budget: uc-day
    when: "anomaly.spend.warm && anomaly.spend.score > 6"
    severity: high
DETECTORS
"""
DAY0 = 1_767_222_000.0  # 2026-01-01T00:00:00+01:00


def hourly_usd(hour: int, rng: random.Random) -> float:
    """Office-hours seasonality in Paris (busy 9-18 on weekdays) with noise."""
    local = (hour + 0) % 24
    weekday = (hour // 24 + 3) % 7  # 2026-01-01 is a Thursday
    base = 20.0 if 9 <= local < 18 and weekday < 5 else 4.0
    return base * rng.lognormvariate(0, 0.15)


class Feed:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.offset, self.fired = engine, 0, []

    def hour(self, hour: int, usd: float, calls: int = 6, start_minute: int = 0) -> None:
        for i in range(calls):
            self.offset += 1
            ts = DAY0 + hour * 3600 + (start_minute + i * (60 - start_minute) // calls) * 60
            effects = self.engine.process(build_event(f"{usd / calls:.6f}", tenant="acme", ts=ts), position(self.offset))
            self.fired += [(e.rule, ts, e.summary) for e in effects if isinstance(e, AlertFiring)]


def test_a_spike_fires_within_minutes_after_warm_up_and_normal_weeks_stay_quiet(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES.replace("DETECTORS", "")))
    feed, rng = Feed(engine), random.Random(7)
    for hour in range(21 * 24):  # three normal weeks: warm-up (14 days) and a week of scoring
        feed.hour(hour, hourly_usd(hour, rng))
    assert feed.fired == []
    spike_hour = 21 * 24 + 10  # a Thursday, 10:00 Paris: 10x the usual rate from minute 0
    for hour in range(21 * 24, spike_hour):
        feed.hour(hour, hourly_usd(hour, rng))
    for minute in range(0, 30, 2):
        feed.offset += 1
        ts = DAY0 + spike_hour * 3600 + minute * 60
        effects = engine.process(build_event("14", tenant="acme", ts=ts), position(feed.offset))
        feed.fired += [(e.rule, ts, e.summary) for e in effects if isinstance(e, AlertFiring)]
        alerts = [e for e in effects if isinstance(e, AlertFiring)]
        if alerts and len(feed.fired) == 1:
            first = alerts[0]
    assert feed.fired, "the spike was not detected"
    rule, ts, summary = feed.fired[0]
    assert rule == "spend-spike" and ts - (DAY0 + spike_hour * 3600) <= 15 * 60
    assert "robust sigmas above" in summary and "hour-of-week profile" in summary
    # the alert carries the detector's expected vs actual, not only the budget's linear burn
    spend = first.anomaly["spend"]
    assert spend["severity"] != "none" and spend["actual"] > 3 * spend["expected"] > 0
    assert spend["reasons"] and spend["value"] > 6 and set(first.anomaly) == {"spend"}  # the ones its rules read


def test_detector_state_survives_a_checkpoint_and_scores_the_same(ruleset_from_yaml: Any) -> None:
    rules = ruleset_from_yaml(RULES.replace("DETECTORS", ""))
    state: dict[Any, Any] = {}
    first = Feed(Engine(rules, state))
    rng = random.Random(3)
    for hour in range(16 * 24):
        first.hour(hour, hourly_usd(hour, rng))
    first.engine.sync_state()  # what a checkpoint does first
    copied = copy.deepcopy(state)
    restarted = Engine(rules, copied)
    key = ("acme", "uc-day", ("acme", "chat"))
    now = DAY0 + 16 * 24 * 3600 + 600
    assert restarted._anomaly.context(key, now) == first.engine._anomaly.context(key, now)
    assert copied[("det",) + key]["spend"]  # the detectors were taught and checkpointed


def test_detector_parameters_come_from_the_rules_and_bad_ones_are_refused(ruleset_from_yaml: Any) -> None:
    tuned = ruleset_from_yaml(RULES.replace("DETECTORS", "detectors:\n  spend: {thresholds: [3, 5, 8]}"))
    assert tuned.detector_params["spend"] == {"thresholds": [3, 5, 8]}
    with pytest.raises(RuleFileError, match="detectors.spend"):
        ruleset_from_yaml(RULES.replace("DETECTORS", "detectors:\n  spend: {thresholds: [5, 3, 8]}"))
    with pytest.raises(RuleFileError, match="detectors.unit_cost"):
        ruleset_from_yaml(RULES.replace("DETECTORS", "detectors:\n  unit_cost: {per: miles}"))
    with pytest.raises(RuleFileError, match="anomaly.latency is not a known field"):
        ruleset_from_yaml(RULES.replace("DETECTORS", "").replace("anomaly.spend.score", "anomaly.latency.score"))


def test_a_firing_anomaly_resolves_on_the_clock_once_the_window_has_cooled(ruleset_from_yaml: Any) -> None:
    from spendwarden.streams.effects import AlertResolved

    engine = Engine(ruleset_from_yaml(RULES.replace("DETECTORS", "")))
    feed, rng = Feed(engine), random.Random(11)
    for hour in range(15 * 24 + 10):
        feed.hour(hour, hourly_usd(hour, rng))
    spike = 15 * 24 + 10
    feed.hour(spike, 300.0, calls=20)
    assert [rule for rule, _, _ in feed.fired] == ["spend-spike"]
    resolved = []
    for minute in range(1, 121):  # no traffic: the last 60 minutes empty out
        resolved += [e for e in engine.advance(DAY0 + (spike + 1) * 3600 + minute * 60) if isinstance(e, AlertResolved)]
    assert [e.rule for e in resolved] == ["spend-spike"]


def test_anomaly_score_thresholds_are_native_guards_and_expected_matches_scoring() -> None:
    from spendwarden.detectors import SeasonalBaseline
    from spendwarden.rules.compiler import Guard, extract_guards

    guards, rest = extract_guards("anomaly.spend.warm && anomaly.spend.score > 6 && 2.5 <= anomaly.unit_cost.score")
    assert guards == (Guard("anomaly", "spend.score", True, 6.0), Guard("anomaly", "unit_cost.score", False, 2.5))
    assert rest == "anomaly.spend.warm"
    det, rng = SeasonalBaseline(tz="Europe/Paris"), random.Random(5)
    for hour in range(10 * 24):
        det.learn_one({"spend_usd": hourly_usd(hour, rng)}, DAY0 + hour * 3600)
    for hour in range(10 * 24, 11 * 24):
        t = DAY0 + hour * 3600
        assert det.expected(t) == pytest.approx(det.score_one({"spend_usd": 1.0}, t).expected)


def test_a_burst_inside_one_minute_is_scored_again_as_it_grows(ruleset_from_yaml: Any) -> None:
    """Regression (review): the first event of a minute set the memo and the burst behind it
    read that stale score, so a loop cut off within the minute was never seen."""
    engine = Engine(ruleset_from_yaml(RULES.replace("DETECTORS", "")))
    feed, rng = Feed(engine), random.Random(7)
    for hour in range(21 * 24 + 10):
        feed.hour(hour, hourly_usd(hour, rng))
    start = DAY0 + (21 * 24 + 10) * 3600 + 20 * 60
    feed.offset += 1
    engine.process(build_event("0.01", tenant="acme", ts=start), position(feed.offset))
    for second in range(30):
        feed.offset += 1
        effects = engine.process(build_event("20", tenant="acme", ts=start + 1 + second), position(feed.offset))
        feed.fired += [(e.rule, e.at, e.summary) for e in effects if isinstance(e, AlertFiring)]
    assert [rule for rule, _, _ in feed.fired] == ["spend-spike"]


def test_anomaly_on_a_budget_across_tenants_and_unknown_nested_fields_are_refused(ruleset_from_yaml: Any) -> None:
    across = RULES.replace("DETECTORS", "").replace("for_each: [tenant_id, use_case_id]", "for_each: [use_case_id]")
    with pytest.raises(RuleFileError, match="needs a budget per tenant"):
        ruleset_from_yaml(across)
    with pytest.raises(RuleFileError, match="anomaly.spend.bogus is not a known field"):
        ruleset_from_yaml(RULES.replace("DETECTORS", "").replace("anomaly.spend.warm", "anomaly.spend.bogus"))
    with pytest.raises(RuleFileError, match="forecast.day.finish is not a known field"):
        ruleset_from_yaml(RULES.replace("DETECTORS", "").replace("anomaly.spend.warm", "forecast.day.finish > 1"))


def test_an_unreadable_detector_state_starts_the_series_again(ruleset_from_yaml: Any) -> None:
    state: dict[Any, Any] = {("det", "acme", "uc-day", ("acme", "chat")): {"spend": {"v": "from-the-future"}}}
    engine = Engine(ruleset_from_yaml(RULES.replace("DETECTORS", "")), state)
    feed = Feed(engine)
    feed.hour(0, 5.0)
    feed.hour(1, 5.0)  # teaches hour 0: reads the stored state first
    assert engine._anomaly.errors == 1
    engine.sync_state()
    assert state[("det", "acme", "uc-day", ("acme", "chat"))]["spend"]["v"] != "from-the-future"


def _spiked_fortnight(engine: Engine) -> list[tuple[str, float, str]]:
    feed, rng = Feed(engine), random.Random(11)
    for hour in range(15 * 24 + 10):
        feed.hour(hour, hourly_usd(hour, rng))
    feed.hour(15 * 24 + 10, 300.0, calls=20)
    return feed.fired


def test_a_detector_every_rule_requires_warm_is_not_scored_while_it_warms_up(
        ruleset_from_yaml: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring a detector that no rule can pass on until it is warm is skipped; the alerts are
    the same as with it scored all along."""
    from spendwarden.detectors import SeasonalBaseline
    from spendwarden.rules.compiler import CompiledBudget

    rules = ruleset_from_yaml(RULES.replace("DETECTORS", ""))
    assert rules.budgets[0].warm_gated == {"spend"}
    scored: list[float] = []
    real = SeasonalBaseline.score_one
    monkeypatch.setattr(SeasonalBaseline, "score_one", lambda self, x, t: scored.append(t) or real(self, x, t))
    gated = _spiked_fortnight(Engine(rules))
    assert [rule for rule, _, _ in gated] == ["spend-spike"]
    assert scored and min(scored) >= DAY0 + 14 * 24 * 3600  # not before 14 days were learned
    scored.clear()
    monkeypatch.setattr(CompiledBudget, "warm_gated", property(lambda self: frozenset()))
    assert _spiked_fortnight(Engine(rules)) == gated
    assert min(scored) < DAY0 + 24 * 3600  # scored from the first day when not gated


def test_a_rule_reading_a_detector_without_requiring_warm_keeps_it_scored(ruleset_from_yaml: Any) -> None:
    """One rule of the budget reading the score whether warm or not is enough to keep scoring."""
    both = RULES.replace("DETECTORS", """  - name: raw-spike
    budget: uc-day
    when: "anomaly.spend.score > 9 || anomaly.spend.warm"
""")
    assert ruleset_from_yaml(both).budgets[0].warm_gated == frozenset()
    assert ruleset_from_yaml(RULES.replace("DETECTORS", "")).budgets[0].read_cold == frozenset()


def test_a_rule_reload_keeps_what_the_detectors_learned(ruleset_from_yaml: Any) -> None:
    """Reloading rules builds new detector objects from state: what the old ones learned since
    the last flush is written first, so the states end as without the reload."""
    rules = ruleset_from_yaml(RULES.replace("DETECTORS", ""))
    steady, reloaded = Engine(rules), Engine(rules)
    for engine in (steady, reloaded):
        feed, rng = Feed(engine), random.Random(5)
        for hour in range(3 * 24):
            feed.hour(hour, hourly_usd(hour, rng))
            if engine is reloaded and hour % 7 == 3:
                engine.set_rules(ruleset_from_yaml(RULES.replace("DETECTORS", "")))
        engine.sync_state()

    def learned(engine: Engine) -> dict[Any, Any]:
        return {key: value for key, value in engine.state.items() if key[0] == "det"}

    assert learned(reloaded) == learned(steady) and learned(steady)
