"""replay/evaluation.py: each Definition of issue 6 on crafted alerts and labels."""

from __future__ import annotations

from typing import Any

import pytest

from spendwarden.replay.evaluation import (
    ALL, Episode, detector_of, episodes, evaluate, parse_labels, parse_time, quantile, scope_matches,
)

T0 = "2026-11-16T00:00:00Z"


def at(minutes: float) -> str:
    """ISO time ``minutes`` after 2026-11-20T10:00Z (after the warm-up)."""
    from datetime import datetime, timedelta, timezone

    base = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    return (base + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def window(wid: str, kind: str, tenant: str, start: float, end: float, *, use_case: str = "chat",
           step: str | None = None, incident: bool = True) -> dict[str, Any]:
    entry = {"id": wid, "kind": kind, "tenant_id": tenant, "use_case_id": use_case, "start": at(start),
             "end": at(end), "is_incident": incident}
    if step:
        entry["workflow_step"] = step
    return entry


def labels(*windows: dict[str, Any], tenants: int = 10, days: int = 28) -> Any:
    """Labels over ``days`` days with a 14-day warm-up and ``tenants`` tenants."""
    return parse_labels({
        "scenario": "crafted", "seed": 3, "start": "2026-11-02T00:00:00Z",
        "end": f"2026-11-{2 + days:02d}T00:00:00Z" if days < 29 else "2026-12-02T00:00:00Z",
        "warmup_end": T0, "tenants": [{"tenant_id": f"t{i:02d}"} for i in range(tenants)],
        "incidents": list(windows),
    })


def ep(start: float, end: float, tenant: str = "t01", use_case: str | None = "chat", step: str | None = None,
       detector: str = "spend") -> Episode:
    scope = {"tenant_id": tenant}
    if use_case:
        scope["use_case_id"] = use_case
    if step:
        scope["workflow_step"] = step
    return Episode("r-" + detector, detector, scope, parse_time(at(start)), parse_time(at(end)))


def loop(end: float = 30) -> dict[str, Any]:
    return window("agent-loop-01", "agent-loop", "t01", 0, end, step="draft")


# ------------------------------------------------------------------ detection and delay
@pytest.mark.parametrize(("fires_after_end", "detected"), [(0, True), (14, True), (15, True), (16, False)])
def test_a_firing_within_15_minutes_after_the_window_detects_it(fires_after_end: float, detected: bool) -> None:
    result = evaluate([ep(30 + fires_after_end, 100)], labels(loop(30)))
    kind = result.detectors["spend"].kinds["agent-loop"]
    assert (kind.detected, kind.windows) == (int(detected), 1)
    assert kind.delays_min == ([30 + fires_after_end] if detected else [])
    assert kind.missed == ([] if detected else ["agent-loop-01"])


def test_an_episode_firing_before_the_window_is_no_detection_but_no_false_alert() -> None:
    """Detection needs a firing inside the window; an earlier episode still overlapping it is
    neither a detection nor a false alert."""
    score = evaluate([ep(-10, 5)], labels(loop())).detectors["spend"]
    assert score.kinds["agent-loop"].detected == 0
    assert (score.on_incident, score.false_alerts) == (1, 0)


def test_delay_is_from_window_start_to_the_first_matching_firing() -> None:
    found = [ep(12, 20), ep(7, 9, detector="unit_cost"), ep(3, 4, tenant="t02")]  # t02 is another scope
    result = evaluate(found, labels(loop()))
    assert result.detectors["spend"].kinds["agent-loop"].delays_min == [12]
    assert result.detectors["unit_cost"].kinds["agent-loop"].delays_min == [7]
    assert result.detectors[ALL].kinds["agent-loop"].delays_min == [7]  # the union: first of any


def test_the_per_window_table_lists_each_delay_or_miss_with_the_tenant_size() -> None:
    from spendwarden.replay.report import window_table

    windows = [window(f"misroute-{i:02d}", "misroute", f"t{i:02d}", 0, 60) for i in (1, 2)]
    lab = labels(*windows)
    lab = type(lab)(**{**lab.__dict__, "peaks": {"t01": 2000.0, "t02": 40.0}})
    result = evaluate([ep(7, 30, tenant="t01")], lab)
    assert result.detectors[ALL].kinds["misroute"].delay_of == {"misroute-01": 7.0, "misroute-02": None}
    rows = window_table(result).splitlines()[2:]
    assert "t01/chat" in rows[0] and "2,000" in rows[0] and rows[0].rstrip(" |").endswith("7")
    assert "t02/chat" in rows[1] and "| 40 " in rows[1] and "missed" in rows[1]


def test_recall_median_and_p90_over_windows() -> None:
    windows = [window(f"misroute-{i:02d}", "misroute", f"t{i:02d}", 0, 60) for i in range(1, 6)]
    found = [ep(d, d + 30, tenant=f"t{i:02d}") for i, d in zip(range(1, 5), (2, 4, 6, 40))]
    score = evaluate(found, labels(*windows)).detectors["spend"]
    kind = score.kinds["misroute"]
    assert (kind.windows, kind.detected, kind.recall) == (5, 4, 0.8)
    assert kind.missed == ["misroute-05"]
    assert quantile(kind.delays_min, 0.5) == 5.0
    assert quantile(kind.delays_min, 0.9) == pytest.approx(6 + 0.7 * 34)
    assert score.recall == 0.8 and score.windows == 5


# ------------------------------------------------------------------ false alerts
@pytest.mark.parametrize(("start", "end", "false"), [
    (-20, -1, True),     # before the window, resolved before it starts
    (-20, 0, False),     # touches the start
    (10, 20, False),     # inside
    (44, 60, False),     # 14 min after the end: inside the grace
    (45, 60, False),     # exactly end + 15 min
    (46, 60, True),      # 16 min after the end
])
def test_an_episode_overlapping_no_window_plus_grace_is_false(start: float, end: float, false: bool) -> None:
    score = evaluate([ep(start, end)], labels(loop(30))).detectors["spend"]
    assert score.false_alerts == int(false)
    assert score.on_incident == int(not false)
    assert score.precision == (0.0 if false else 1.0)


def test_an_alert_on_another_scope_during_a_window_is_false() -> None:
    found = [ep(5, 20, tenant="t02"), ep(5, 20, use_case="search"), ep(5, 20, step="review")]
    score = evaluate(found, labels(loop())).detectors["spend"]
    assert score.false_alerts == 3 and score.on_incident == 0
    assert score.kinds["agent-loop"].detected == 0


def test_an_episode_that_never_resolved_runs_to_the_data_end() -> None:
    alerts = [{"kind": "alert_firing", "fingerprint": "f1", "rule": "spike", "tenant_id": "t01",
               "scope": {"use_case_id": "chat"}, "at": at(-120)}]
    lab = labels(loop())
    (found,) = episodes(alerts, {"spike": "spend"}, lab.end)
    assert found.end == lab.end
    assert evaluate([found], lab).detectors["spend"].on_incident == 1  # it overlaps the loop


# ------------------------------------------------------------------ growth and surge
def test_alerts_on_growth_and_surge_are_counted_apart_and_are_not_misses() -> None:
    lab = labels(window("growth-01", "growth", "t01", 0, 7 * 1440, incident=False),
                 window("surge-01", "surge", "t02", 0, 1440, incident=False),
                 window("surge-02", "surge", "t03", 0, 1440, incident=False))
    found = [ep(100, 160), ep(3000, 3100), ep(7 * 1440 + 10, 7 * 1440 + 20),  # growth, within its grace
             ep(1440 + 20, 1500, tenant="t02")]  # 20 min after the surge: false
    score = evaluate(found, lab).detectors["spend"]
    assert (score.on_growth_surge, score.false_alerts, score.on_incident) == (3, 1, 0)
    assert score.kinds["growth"].alerted == 1 and score.kinds["growth"].episodes == 3
    assert score.kinds["surge"].alerted == 0 and score.kinds["surge"].windows == 2
    assert score.kinds["growth"].recall is None  # not an incident: nothing to miss
    assert score.windows == 0 and score.recall is None
    assert score.precision == 0.0


def test_an_episode_on_an_incident_and_a_growth_window_counts_for_the_incident() -> None:
    lab = labels(window("growth-01", "growth", "t01", -3000, 7 * 1440, incident=False), loop())
    score = evaluate([ep(5, 20)], lab).detectors["spend"]
    assert (score.on_incident, score.on_growth_surge) == (1, 0)


# ------------------------------------------------------------------ normalisation and warm-up
def test_false_alerts_per_10_tenant_weeks() -> None:
    lab = labels(tenants=35, days=28)  # 35 tenants x 2 weeks after a 14-day warm-up = 70 tenant-weeks
    assert lab.tenant_weeks == pytest.approx(70)
    found = [ep(100 * i, 100 * i + 30) for i in range(7)]
    score = evaluate(found, lab).detectors["spend"]
    assert score.false_alerts == 7
    assert score.false_per_10_tenant_weeks == pytest.approx(1.0)


def test_episodes_firing_in_the_warm_up_are_set_aside() -> None:
    lab = labels(loop())
    early = Episode("r", "spend", {"tenant_id": "t01", "use_case_id": "chat"}, lab.warmup_end - 60,
                    lab.warmup_end + 60)
    score = evaluate([early, ep(500, 510)], lab).detectors["spend"]
    assert (score.in_warmup, score.episodes, score.false_alerts) == (1, 1, 1)


# ------------------------------------------------------------------ scopes
@pytest.mark.parametrize(("alert", "matches"), [
    ({"tenant_id": "t01", "use_case_id": "chat"}, True),  # a use-case alert matches a loop on its step
    ({"tenant_id": "t01", "use_case_id": "chat", "workflow_step": "draft"}, True),
    ({"tenant_id": "t01", "use_case_id": "chat", "workflow_step": "review"}, False),
    ({"tenant_id": "t01", "use_case_id": "search"}, False),
    ({"tenant_id": "t01"}, True),  # tenant-wide
    ({"tenant_id": "t02", "use_case_id": "chat"}, False),
    ({"use_case_id": "chat"}, False),  # no tenant
])
def test_scope_matching(alert: dict[str, str], matches: bool) -> None:
    assert scope_matches(alert, {"tenant_id": "t01", "use_case_id": "chat", "workflow_step": "draft"}) is matches


def test_a_step_alert_matches_a_use_case_window() -> None:
    assert scope_matches({"tenant_id": "t01", "use_case_id": "chat", "workflow_step": "draft"},
                         {"tenant_id": "t01", "use_case_id": "chat"})


# ------------------------------------------------------------------ alerts into episodes
def test_alert_effects_pair_into_episodes_and_budget_rules_are_skipped() -> None:
    def firing(fp: str, rule: str, minute: float, **scope: str) -> dict[str, Any]:
        return {"kind": "alert_firing", "fingerprint": fp, "rule": rule, "tenant_id": "t01",
                "scope": {"tenant_id": "t01", **scope}, "at": at(minute), "labels": {}}

    def resolved(fp: str, rule: str, minute: float) -> dict[str, Any]:
        return {"kind": "alert_resolved", "fingerprint": fp, "rule": rule, "at": at(minute)}

    alerts = [firing("a", "spike", 0, use_case_id="chat", risk_tier="low"), firing("b", "daily-80", 1),
              resolved("a", "spike", 10), firing("a", "spike", 20, use_case_id="chat"), resolved("b", "daily-80", 30),
              resolved("a", "spike", 40), {"kind": "alert_firing", "fingerprint": "c", "rule": "spike",
                                           "tenant_id": None, "scope": {}, "at": at(0)}]
    found = episodes(alerts, {"spike": "spend"}, parse_time(at(1000)))
    assert [(e.start, e.end) for e in found] == [(parse_time(at(0)), parse_time(at(10))),
                                                 (parse_time(at(20)), parse_time(at(40)))]
    assert found[0].scope == {"tenant_id": "t01", "use_case_id": "chat"}  # only the matched dimensions


@pytest.mark.parametrize(("when", "rule_labels", "expected"), [
    ("anomaly.spend.warm && anomaly.spend.score > 6", {}, "spend"),
    ("anomaly.unit_cost.score > 6", {"team": "x"}, "unit_cost"),
    ("anomaly.spend.score > 6 && anomaly.unit_cost.score > 3", {}, "spend+unit_cost"),
    ("anomaly.spend.score > 6", {"detector": "loop"}, "loop"),
    ("budget.used_ratio >= 0.8", {}, None),
])
def test_detector_of_a_rule(when: str, rule_labels: dict[str, str], expected: str | None) -> None:
    assert detector_of("r", when, rule_labels) == expected


def test_labels_file_fields() -> None:
    lab = labels(loop(), tenants=50, days=28)
    (w,) = lab.windows
    assert w.scope == {"tenant_id": "t01", "use_case_id": "chat", "workflow_step": "draft"}
    assert (lab.scenario, lab.seed, lab.tenants, lab.days) == ("crafted", 3, 50, 28)
    assert quantile([], 0.5) is None and quantile([4.0], 0.9) == 4.0
