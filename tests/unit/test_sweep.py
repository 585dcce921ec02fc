"""replay/sweep.py and replay/compare.py: settings, rewriting rule data, the frontier, the diff."""

from __future__ import annotations

import pytest

from spendwarden.exceptions import ConfigError
from spendwarden.replay.compare import diff
from spendwarden.replay.evaluation import Episode
from spendwarden.replay.sweep import apply, frontier, parse_sweep, rewrite_threshold, split_values

FILES = {
    "a.yaml": {"budgets": [{"name": "uc"}], "rules": [
        {"name": "spend-spike", "budget": "uc", "when": "anomaly.spend.warm && anomaly.spend.score > 6"},
        {"name": "drift", "budget": "uc", "when": "4.5 <= anomaly.unit_cost.score && anomaly.spend.score >= 2"},
    ]},
    "b.yaml": {"detectors": {"spend": {"min_excess_usd": 1}}, "rules": [
        {"name": "cap", "budget": "uc", "when": "budget.used_ratio >= 1.0"}]},
}


def test_values_split_on_commas_outside_brackets() -> None:
    assert split_values("4, 6,8") == ["4", "6", "8"]
    assert split_values("[3,5,8],[4,6,9]") == ["[3,5,8]", "[4,6,9]"]
    assert parse_sweep("detectors.spend.thresholds=[3,5,8],[4,6,9]").values == ([3, 5, 8], [4, 6, 9])


def test_parse_both_forms() -> None:
    rule = parse_sweep("rule.spend-spike:anomaly.spend.score=4,6,8.5")
    assert (rule.target, rule.name, rule.param, rule.values) == ("rule", "spend-spike", "anomaly.spend.score",
                                                                 (4, 6, 8.5))
    assert rule.label == "rule.spend-spike:anomaly.spend.score"
    det = parse_sweep("detectors.unit_cost.per=requests,tokens")
    assert (det.target, det.name, det.param, det.values) == ("detectors", "unit_cost", "per", ("requests", "tokens"))


@pytest.mark.parametrize(("text", "needle"), [
    ("spend.thresholds=1,2", "expected detectors.KIND.PARAM"),
    ("detectors.latency.x=1", "KIND one of spend, unit_cost, tokens, profile, new_model, cache"),
    ("detectors.spend=1", "expected detectors.KIND.PARAM"),
    ("rule.spend-spike:anomaly.spend.score=", "expected"),
    ("rule.spend-spike:anomaly.spend.score=4,,6", "an empty value"),
    ("rule.spend-spike:anomaly.spend.score=high", "must be a number"),
    ("rule.:anomaly.spend.score=4", "expected rule.NAME:VAR"),
    ("rule.spend-spike:score=4", "expected rule.NAME:VAR"),
])
def test_malformed_settings_are_refused(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_sweep(text)


@pytest.mark.parametrize(("when", "var", "value", "expected"), [
    ("anomaly.spend.warm && anomaly.spend.score > 6", "anomaly.spend.score", 4,
     "anomaly.spend.warm && anomaly.spend.score > 4"),
    ("anomaly.spend.score>=6.5", "anomaly.spend.score", 7.25, "anomaly.spend.score>=7.25"),
    ("4.5 <= anomaly.unit_cost.score", "anomaly.unit_cost.score", 3, "3 <= anomaly.unit_cost.score"),
    ("anomaly.spend.score > 6", "anomaly.unit_cost.score", 3, None),
    ("anomaly.spend.score_x > 6", "anomaly.spend.score", 3, None),  # a longer name is another variable
])
def test_rewrite_threshold(when: str, var: str, value: float, expected: str | None) -> None:
    assert rewrite_threshold(when, var, value) == expected


def test_apply_a_rule_threshold_leaves_the_input_alone() -> None:
    out = apply(FILES, parse_sweep("rule.spend-spike:anomaly.spend.score=9"), 9)
    assert out["a.yaml"]["rules"][0]["when"] == "anomaly.spend.warm && anomaly.spend.score > 9"
    assert out["a.yaml"]["rules"][1] == FILES["a.yaml"]["rules"][1]
    assert FILES["a.yaml"]["rules"][0]["when"].endswith("> 6")


def test_apply_to_every_rule_comparing_a_variable() -> None:
    out = apply(FILES, parse_sweep("rule.*:anomaly.spend.score=3"), 3)
    assert [r["when"] for r in out["a.yaml"]["rules"]] == ["anomaly.spend.warm && anomaly.spend.score > 3",
                                                            "4.5 <= anomaly.unit_cost.score && anomaly.spend.score >= 3"]
    assert out["b.yaml"] == FILES["b.yaml"]


def test_apply_refuses_a_rule_that_does_not_compare_the_variable() -> None:
    with pytest.raises(ConfigError, match="rule cap's when does not compare anomaly.spend.score"):
        apply(FILES, parse_sweep("rule.cap:anomaly.spend.score=3"), 3)
    with pytest.raises(ConfigError, match="no rule named nope"):
        apply(FILES, parse_sweep("rule.nope:anomaly.spend.score=3"), 3)
    with pytest.raises(ConfigError, match="no rule compares window.calls_5m"):
        apply(FILES, parse_sweep("rule.*:window.calls_5m=3"), 3)


def test_apply_a_detector_parameter_where_the_section_is_or_in_the_first_file() -> None:
    out = apply(FILES, parse_sweep("detectors.spend.min_excess_usd=2"), 2)
    assert out["b.yaml"]["detectors"] == {"spend": {"min_excess_usd": 2}}
    assert "detectors" not in out["a.yaml"]
    out = apply(FILES, parse_sweep("detectors.unit_cost.min_change=0.1"), 0.1)
    assert out["b.yaml"]["detectors"] == {"spend": {"min_excess_usd": 1}, "unit_cost": {"min_change": 0.1}}
    bare = {"x.yaml": {"rules": []}, "y.yaml": {"rules": []}}
    assert apply(bare, parse_sweep("detectors.spend.min_scale=0.1"), 0.1)["x.yaml"]["detectors"] == {
        "spend": {"min_scale": 0.1}}


def test_frontier_keeps_the_points_nothing_beats() -> None:
    points = [
        (0.9, 10.0, 2.0, 0.0),   # frontier: best recall
        (0.8, 10.0, 1.0, 0.0),   # frontier: fewer false alerts
        (0.8, 12.0, 1.0, 0.0),   # beaten by the one above (slower, same otherwise)
        (0.7, 5.0, 3.0, 0.0),    # frontier: fastest
        (0.9, 10.0, 2.0, 1.0),   # beaten by the first (alerts on growth)
        (None, None, 0.0, 0.0),  # frontier: no alert at all is the fewest false alerts
    ]
    assert frontier(points) == [True, True, False, True, False, True]
    assert frontier([(0.5, 1.0, 1.0, 0.0), (0.5, 1.0, 1.0, 0.0)]) == [True, True]  # ties both stay


def test_compare_lists_alerts_that_appear_and_vanish() -> None:
    def e(rule: str, start: float, tenant: str = "t01") -> Episode:
        return Episode(rule, "spend", {"tenant_id": tenant, "use_case_id": "chat"}, start, start + 600)

    old = [e("spike", 60.0), e("spike", 7200.0), e("drift", 60.0)]
    new = [e("spike", 90.0), e("spike", 7200.0, "t02"), e("drift", 60.0)]  # 90 s is the same minute as 60
    appeared, vanished = diff(old, new)
    assert appeared == [new[1]]
    assert vanished == [old[1]]
