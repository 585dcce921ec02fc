"""The budget engine: late and too-late events, duplicates, rules, decisions, reloads, evidence.

The last tests (CEL runtime error, cross-tenant fencing, dollar text) are regressions for
engine bugs found while this suite was written and fixed in commit 203bf1d.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from spendwarden.exceptions import RuleFileError
from spendwarden.streams.effects import (
    AlertFiring, AlertResolved, DecisionChanged, LateSpend, TooLate,
)
from spendwarden.streams.engine import Engine, position
from spendwarden.streams.money import usd_to_nanos


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def of(kind: type, effects: list[Any]) -> list[Any]:
    return [e for e in effects if isinstance(e, kind)]


class Feed:
    """An engine plus an ever-growing source position (one partition, one event per record)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.offset = 0

    def __call__(self, priced: Any) -> list[Any]:
        self.offset += 1
        return self.engine.process(priced, position(self.offset))


DAILY_BLOCK = """
tenants:
  ny: {timezone: America/New_York}
budgets:
  - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
rules:
  - name: day-block
    budget: daily
    when: budget.used_ratio >= 1.0
    decide: {level: block, only_risk_tiers: [low, medium]}
"""


# ------------------------------------------------------------------ clock

def test_idle_tenant_block_lifts_at_local_midnight_via_advance(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """A New York day block is lifted by the first advance at/after 05:00Z (local midnight), not before."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    effects = engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    blocked = of(DecisionChanged, effects)
    assert {d.field for d in blocked} == {"*:low", "*:medium"}
    assert all(d.verdict["level"] == "block" and d.verdict["action"] == "block" for d in blocked)
    assert blocked[0].verdict["expires_at"] == "2026-01-16T05:00:00.000Z"

    midnight = epoch("2026-01-16T05:00:00Z")
    now = epoch("2026-01-15T20:01:00Z")
    while now < midnight:
        assert of(DecisionChanged, engine.advance(now)) == [], now
        now += 60
    assert engine.verdicts("ny")["*:low"]["level"] == "block"

    lifted = engine.advance(midnight)
    changes = of(DecisionChanged, lifted)
    assert {d.field for d in changes} == {"*:low", "*:medium"}
    assert all(d.verdict is None for d in changes)
    assert [r.reason for r in of(AlertResolved, lifted)] == ["period ended"]
    assert engine.verdicts("ny") == {}
    assert engine.advance(midnight + 60) == []


def test_block_still_on_at_0459z(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A single advance to 04:59Z (23:59 New York) keeps the day block."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    assert of(DecisionChanged, engine.advance(epoch("2026-01-16T04:59:00Z"))) == []
    assert engine.verdicts("ny")["*:medium"]["level"] == "block"


# ------------------------------------------------------------------ lateness, duplicates

SIMPLE = """
budgets:
  - {name: daily, for_each: [tenant_id], period: day, limit_usd: 1000}
"""


def test_late_event_counts_into_closed_period(make_event: Any, ruleset_from_yaml: Any) -> None:
    """An event for a day that has already ended is counted there and reported as LateSpend."""
    engine = Engine(ruleset_from_yaml(SIMPLE))
    feed = Feed(engine)
    assert feed(make_event("1", ts="2026-01-16T01:00:00Z")) == []
    effects = feed(make_event("2.5", ts="2026-01-15T23:00:00Z", cost_event_id="late-1"))
    late = of(LateSpend, effects)
    assert len(late) == 1 and late[0].period_ids == ["daily/2026-01-15"] and late[0].cost_usd == "2.5"
    assert late[0].cost_event_id == "late-1"
    assert engine.spend_nanos("daily", {"tenant_id": "acme"}, "2026-01-15") == usd_to_nanos("2.5")
    assert engine.spend_nanos("daily", {"tenant_id": "acme"}, "2026-01-16") == usd_to_nanos("1")
    assert engine.stats.late_spend == 1


def test_event_older_than_horizon_is_too_late_and_not_counted(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """With a 1 h horizon an event 1 h 1 s old is TooLate and not counted; exactly 1 h old counts."""
    engine = Engine(ruleset_from_yaml(SIMPLE), dedupe_horizon_s=3600)
    feed = Feed(engine)
    feed(make_event("1", ts="2026-01-15T12:00:00Z"))
    effects = feed(make_event("7", ts="2026-01-15T10:59:59Z", cost_event_id="old"))
    assert [type(e) for e in effects] == [TooLate]
    assert effects[0].cost_event_id == "old" and effects[0].cost_usd == "7"
    assert effects[0].horizon_start == "2026-01-15T11:00:00.000Z"
    assert engine.stats.too_late == 1
    assert of(TooLate, feed(make_event("2", ts="2026-01-15T11:00:00Z"))) == []
    assert engine.totals() == {("daily", ("acme",), "2026-01-15"): usd_to_nanos("3")}


def test_producer_duplicate_counted_once(make_event: Any, ruleset_from_yaml: Any) -> None:
    """The same cost_event_id at a new position is counted once; a redelivered position is not a duplicate."""
    engine = Engine(ruleset_from_yaml(SIMPLE))
    event = make_event("0.000000037", cost_event_id="dup-1")
    engine.process(event, position(1, 0))
    assert engine.process(event, position(2, 3)) == []
    assert engine.stats.duplicates == 1
    engine.process(event, position(1, 0))  # crash redelivery of the first copy
    assert engine.stats.duplicates == 1
    assert engine.totals() == {("daily", ("acme",), "2026-01-15"): 37}


# ------------------------------------------------------------------ rules

def test_only_touched_scopes_are_reevaluated(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A second tenant's event evaluates only its own rules; the first tenant's alert is not fired again."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: half, budget: daily, when: 'budget.used_ratio >= 0.5 && budget.spend_usd < 1000.0'}
    """))
    feed = Feed(engine)
    fired = of(AlertFiring, feed(make_event("6", tenant="a")))
    assert [(f.tenant_id, f.rule) for f in fired] == [("a", "half")]
    before = engine.stats.cel_evaluations
    effects = feed(make_event("6", tenant="b"))
    assert engine.stats.cel_evaluations == before + 1  # b's instance only, not a's
    assert [(f.tenant_id, f.rule) for f in of(AlertFiring, effects)] == [("b", "half")]
    assert all(e.tenant_id == "b" for e in effects)
    assert feed(make_event("1", tenant="c")) == []  # below the guard: no CEL at all
    assert engine.stats.cel_evaluations == before + 1
    assert engine.stats.alerts_fired == 2


def test_shadow_rule_reports_decision_without_publishing(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A shadow rule fires AlertFiring(shadow=True, decision filled) but no DecisionChanged."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - name: try-degrade
            budget: daily
            when: budget.used_ratio >= 0.5
            mode: shadow
            decide: {level: L1, only_risk_tiers: [low], model_alias: small}
    """))
    effects = engine.process(make_event("6"), position(1))
    fired = of(AlertFiring, effects)
    assert len(fired) == 1 and fired[0].shadow is True
    assert fired[0].decision is not None and fired[0].decision["level"] == "L1"
    assert fired[0].decision["model_alias"] == "small"
    assert of(DecisionChanged, effects) == []
    assert engine.verdicts("acme") == {}


TWO_LEVELS = """
budgets:
  - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
  - {name: monthly, for_each: [tenant_id], period: month, limit_usd: 15}
rules:
  - name: month-degrade
    budget: monthly
    when: budget.used_ratio >= 0.5
    decide: {level: L1, only_risk_tiers: [low, medium], model_alias: small}
  - name: day-block
    budget: daily
    when: budget.used_ratio >= 1.0
    decide: {level: block, only_risk_tiers: [low, medium]}
"""


def test_strictest_verdict_wins_and_weaker_remains(make_event: Any, ruleset_from_yaml: Any) -> None:
    """Block beats L1 on the same field; when the day block ends the month's L1 is published."""
    engine = Engine(ruleset_from_yaml(TWO_LEVELS))
    effects = engine.process(make_event("11", ts="2026-01-15T12:00:00Z"), position(1))
    assert {f.rule for f in of(AlertFiring, effects)} == {"month-degrade", "day-block"}
    last = {d.field: d.verdict for d in of(DecisionChanged, effects)}
    assert {field: v["level"] for field, v in last.items()} == {"*:low": "block", "*:medium": "block"}
    levels = {field: v["level"] for field, v in engine.verdicts("acme").items()}
    assert levels == {"*:low": "block", "*:medium": "block"}

    effects = engine.advance(epoch("2026-01-16T00:00:00Z"))
    assert [r.rule for r in of(AlertResolved, effects)] == ["day-block"]
    changes = {d.field: d.verdict for d in of(DecisionChanged, effects)}
    assert {field: v["level"] for field, v in changes.items()} == {"*:low": "L1", "*:medium": "L1"}
    assert engine.verdicts("acme")["*:low"]["rule"] == "month-degrade"


def test_set_rules_lowered_limit_fires_on_counted_spend(make_event: Any, ruleset_from_yaml: Any) -> None:
    """Lowering a limit by reload fires the rule on spend already counted, naming the new rules_version."""
    text = """
        budgets:
          - {{name: daily, for_each: [tenant_id], period: day, limit_usd: {limit}}}
        rules:
          - name: degrade
            budget: daily
            when: budget.used_ratio >= 0.8
            decide: {{level: L1, only_risk_tiers: [low]}}
    """
    old, new = ruleset_from_yaml(text.format(limit=100)), ruleset_from_yaml(text.format(limit=60))
    assert old.version != new.version
    engine = Engine(old)
    assert engine.process(make_event("50"), position(1)) == []
    effects = engine.set_rules(new)
    fired = of(AlertFiring, effects)
    assert len(fired) == 1 and fired[0].rules_version == new.version
    assert Decimal(fired[0].limit_usd) == 60
    changes = of(DecisionChanged, effects)
    assert [(d.field, d.verdict["level"], d.verdict["rules_version"]) for d in changes] == [
        ("*:low", "L1", new.version)]
    assert engine.verdicts("acme")["*:low"]["rules_version"] == new.version


def test_set_rules_reissues_firing_verdict_with_new_version(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A verdict already published is re-issued under the new rules_version on reload."""
    old = ruleset_from_yaml(DAILY_BLOCK)
    new = ruleset_from_yaml(DAILY_BLOCK.replace("limit_usd: 10", "limit_usd: 11"))
    engine = Engine(old)
    engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    effects = engine.set_rules(new)
    assert of(AlertFiring, effects) == [] and of(AlertResolved, effects) == []
    assert {d.verdict["rules_version"] for d in of(DecisionChanged, effects)} == {new.version}
    assert engine.verdicts("ny")["*:low"]["rules_version"] == new.version


def test_set_rules_removing_rule_resolves_and_lifts(make_event: Any, ruleset_from_yaml: Any) -> None:
    """Removing a firing rule resolves its alert and lifts its decision."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    assert engine.verdicts("ny")
    effects = engine.set_rules(ruleset_from_yaml(DAILY_BLOCK.split("rules:")[0]))
    assert [(r.rule, r.reason) for r in of(AlertResolved, effects)] == [("day-block", "rule removed")]
    changes = of(DecisionChanged, effects)
    assert {d.field for d in changes} == {"*:low", "*:medium"} and all(d.verdict is None for d in changes)
    assert engine.verdicts("ny") == {}
    assert engine.spend_nanos("daily", {"tenant_id": "ny"}, "2026-01-15") == usd_to_nanos("12")


def test_set_rules_dropping_decide_lifts_the_decision(make_event: Any, ruleset_from_yaml: Any) -> None:
    """Reloading a firing rule as alert-only (decide removed) lifts its decision; the alert keeps firing."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    alert_only = DAILY_BLOCK.replace("    decide: {level: block, only_risk_tiers: [low, medium]}\n", "")
    effects = engine.set_rules(ruleset_from_yaml(alert_only))
    assert of(AlertResolved, effects) == []
    assert {d.field: d.verdict for d in of(DecisionChanged, effects)} == {"*:low": None, "*:medium": None}
    assert engine.verdicts("ny") == {}


def test_set_rules_narrowing_risk_tiers_withdraws_the_dropped_tier(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A reload that narrows only_risk_tiers lifts the verdict on the dropped tier and keeps the other."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    assert set(engine.verdicts("ny")) == {"*:low", "*:medium"}
    effects = engine.set_rules(ruleset_from_yaml(DAILY_BLOCK.replace("[low, medium]", "[low]")))
    lifted = [d.field for d in of(DecisionChanged, effects) if d.verdict is None]
    assert lifted == ["*:medium"]
    assert set(engine.verdicts("ny")) == {"*:low"}


def test_alert_carries_contributors_and_trace_ids_of_its_scope(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """AlertFiring names the top model and sample trace ids of its own (tenant, use case) scope."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: uc-daily, for_each: [tenant_id, use_case_id], period: day, limit_usd: 10}
        rules:
          - {name: uc-high, budget: uc-daily, when: budget.used_ratio >= 0.9}
    """))
    feed = Feed(engine)
    feed(make_event("0.5", use_case="search", model="other-model", trace_id="tr-search"))
    feed(make_event("1", model="small-model", trace_id="tr-1", workflow_step="plan"))
    effects = feed(make_event("8", model="big-model", trace_id="tr-2", workflow_step="answer"))
    fired = of(AlertFiring, effects)
    assert len(fired) == 1
    alert = fired[0]
    assert alert.scope == {"tenant_id": "acme", "use_case_id": "chat"}
    assert alert.contributors["models"][0] == ["big-model", "8"]
    assert [m[0] for m in alert.contributors["models"]] == ["big-model", "small-model"]
    assert alert.contributors["workflow_steps"][0][0] == "answer"
    assert alert.sample_trace_ids == ["tr-1", "tr-2"]
    assert Decimal(alert.spend_usd) == 9 and Decimal(alert.limit_usd) == 10 and alert.used_ratio == 0.9


def test_evidence_is_kept_for_each_tenants_current_local_day_outside_the_state(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """A week of traffic leaves no evidence in the state mapping (it is never checkpointed, and
    there it grew by a key per tenant, use case and day), and the current local day in memory."""
    engine = Engine(ruleset_from_yaml("""
        tenants:
          tokyo: {timezone: Asia/Tokyo}
        budgets:
          - {name: uc-daily, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100}
        rules:
          - {name: uc-high, budget: uc-daily, when: budget.used_ratio >= 0.9}
    """))
    feed = Feed(engine)
    for day in range(1, 8):
        for use_case in ("chat", "search"):
            feed(make_event("1", tenant="tokyo", use_case=use_case, ts=f"2026-01-{day:02d}T12:00:00Z",
                            trace_id=f"tr-{day}-{use_case}"))
    assert not [key for key in engine.state if key[0] in ("facts", "facts_index")]
    assert list(engine.facts.days["tokyo"]) == ["2026-01-07"]  # the local day in Tokyo (21:00)
    # A late event of an old day does not push today out.
    feed(make_event("1", tenant="tokyo", ts="2026-01-02T12:00:00Z", trace_id="tr-late"))
    assert list(engine.facts.days["tokyo"]) == ["2026-01-07"]
    effects = feed(make_event("90", tenant="tokyo", ts="2026-01-07T13:00:00Z", model="big-model",
                              trace_id="tr-big"))
    alert = of(AlertFiring, effects)[0]
    assert alert.contributors["models"][0] == ["big-model", "90"]
    assert alert.sample_trace_ids == ["tr-7-chat", "tr-big"]


def test_guardless_rule_evaluates_correctly(make_event: Any, ruleset_from_yaml: Any) -> None:
    """`used_ratio >= 0.5 || local.hour == 3` has no guard and still fires on either side of the `||`."""
    rules = ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: either, budget: daily, when: 'budget.used_ratio >= 0.5 || local.hour == 3'}
    """)
    assert rules.rules[0].guards == ()
    engine = Engine(rules)
    feed = Feed(engine)
    assert feed(make_event("4", tenant="a", ts="2026-01-15T12:00:00Z")) == []
    fired = of(AlertFiring, feed(make_event("2", tenant="a", ts="2026-01-15T12:01:00Z")))
    assert [f.tenant_id for f in fired] == ["a"]  # 60 % at noon
    fired = of(AlertFiring, feed(make_event("0.01", tenant="b", ts="2026-01-15T03:10:00Z")))
    assert [f.tenant_id for f in fired] == ["b"]  # 0.1 % at 03:10
    assert feed(make_event("0.01", tenant="c", ts="2026-01-15T04:10:00Z")) == []


def test_window_rule_fires_on_burst_and_resolves_after_five_minutes(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """`window.spend_usd_5m > 10` fires on a burst; advance resolves it once the burst leaves the window."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 1000}
        rules:
          - {name: burst, budget: daily, when: window.spend_usd_5m > 10}
    """))
    feed = Feed(engine)
    assert feed(make_event("4", ts="2026-01-15T12:00:10Z")) == []
    assert feed(make_event("4", ts="2026-01-15T12:00:20Z")) == []
    assert feed(make_event("2", ts="2026-01-15T12:00:25Z")) == []  # exactly 10: not > 10
    assert [f.rule for f in of(AlertFiring, feed(make_event("4", ts="2026-01-15T12:00:30Z")))] == ["burst"]
    for minute in range(1, 5):
        assert engine.advance(epoch(f"2026-01-15T12:0{minute}:00Z")) == []
    assert engine.advance(epoch("2026-01-15T12:04:59Z")) == []
    resolved = of(AlertResolved, engine.advance(epoch("2026-01-15T12:05:00Z")))
    assert [(r.rule, r.reason) for r in resolved] == [("burst", "condition cleared")]


def test_cel_runtime_error_is_counted_not_raised(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A rule failing at runtime (`scope.missing`) counts in stats.rule_errors and does not raise."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: broken, budget: daily, when: 'budget.used_ratio >= 0.1 && scope.missing == "x"'}
    """))
    assert engine.process(make_event("5"), position(1)) == []
    assert engine.stats.rule_errors == {"broken": 1}
    assert engine.spend_nanos("daily", {"tenant_id": "acme"}, "2026-01-15") == usd_to_nanos("5")


def test_cross_tenant_budget_with_per_tenant_positions(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A budget spanning tenants counts both tenants when each tenant's positions grow independently."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: platform, period: day, limit_usd: 100}
    """))
    engine.process(make_event("1", tenant="a"), position(10))  # partition of a, offset 10
    engine.process(make_event("2", tenant="b"), position(1))  # partition of b, offset 1
    assert engine.totals() == {("platform", (), "2026-01-15"): usd_to_nanos("3")}


def test_effect_dollar_amounts_are_plain_decimal_text(make_event: Any, ruleset_from_yaml: Any) -> None:
    """spend_usd, limit_usd, expected_usd and cost_usd are plain decimal text ('10', not '1E+1')."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 100}
        rules:
          - {name: over, budget: daily, when: budget.used_ratio >= 0.5}
    """))
    feed = Feed(engine)
    feed(make_event("1", ts="2026-01-16T01:00:00Z"))
    late = of(LateSpend, feed(make_event("20", ts="2026-01-15T12:00:00Z")))
    alert = of(AlertFiring, feed(make_event("60", ts="2026-01-16T12:00:00Z")))[0]
    texts = [late[0].cost_usd, alert.spend_usd, alert.limit_usd]
    assert texts == ["20", "61", "100"]


# ------------------------------------------------------------------ safety at load

def test_degrade_without_risk_filter_cannot_load(ruleset_from_yaml: Any) -> None:
    """decide L1 without only_risk_tiers on a budget not scoped by risk tier is refused as high-risk."""
    with pytest.raises(RuleFileError, match="high-risk"):
        ruleset_from_yaml("""
            budgets:
              - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
            rules:
              - {name: degrade, budget: daily, when: budget.used_ratio >= 0.8, decide: {level: L1}}
        """)


def test_block_on_high_risk_budget_cannot_load(rules_dir: Any) -> None:
    """A block decision on a budget scoped to risk_tier high is refused (via the real loader)."""
    with pytest.raises(RuleFileError, match="high-risk"):
        rules_dir("""
            budgets:
              - name: daily-high
                scope: {risk_tier: high}
                for_each: [tenant_id]
                period: day
                limit_usd: 10
            rules:
              - {name: block, budget: daily-high, when: budget.used_ratio >= 1.0, decide: {level: block}}
        """)


def test_degrade_limited_to_low_risk_loads(rules_dir: Any) -> None:
    """only_risk_tiers [low] makes the same degrade rule loadable, deciding on low only."""
    rules = rules_dir("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - name: degrade
            budget: daily
            when: budget.used_ratio >= 0.8
            decide: {level: L1, only_risk_tiers: [low]}
    """)
    assert rules.rules[0].decide_tiers == ("low",)


def test_negative_adjustment_clears_a_firing_rule(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A refund (component adjustment, negative cost) that brings spend back under the limit lifts the block."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    engine.process(make_event("12", tenant="ny", ts="2026-01-15T20:00:00Z"), position(1))
    assert "*:low" in engine.verdicts("ny")
    refund = make_event("-5", tenant="ny", ts="2026-01-15T20:01:00Z", component="adjustment")
    effects = engine.process(refund, position(2))
    assert [e.reason for e in of(AlertResolved, effects)] == ["condition cleared"]
    assert engine.verdicts("ny") == {}
    assert engine.spend_nanos("daily", {"tenant_id": "ny"}, "2026-01-15") == usd_to_nanos("7")


def test_per_tier_budget_decides_only_for_the_tier_that_overspent(make_event: Any, ruleset_from_yaml: Any) -> None:
    """With risk_tier in for_each, a block covers only the overspent tier's field, not every allowed tier."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: per-tier, period: day, for_each: [tenant_id, use_case_id, risk_tier], limit_usd: 10}
        rules:
          - name: cap
            budget: per-tier
            when: budget.used_ratio >= 1.0
            decide: {level: block, only_risk_tiers: [low, medium]}
    """))
    engine.process(make_event("11", risk_tier="medium", use_case="chat"), position(1))
    assert set(engine.verdicts("acme")) == {"chat:medium"}
    engine.process(make_event("11", risk_tier="high", use_case="chat"), position(2))
    assert set(engine.verdicts("acme")) == {"chat:medium"}


def test_text_fields_are_never_guards(make_event: Any, ruleset_from_yaml: Any) -> None:
    """A comparison on a text field (budget.name) stays in CEL: it neither crashes nor fires."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: b, period: day, for_each: [tenant_id], limit_usd: 10}
        rules:
          - {name: r, budget: b, when: "budget.name >= 1"}
    """))
    assert engine.process(make_event("11"), position(1)) == []
    assert engine.stats.rule_errors == {"r": 1}


def test_two_stage_cross_tenant_budget_equals_one_stage_with_resent_entries(make_event: Any,
                                                                             ruleset_from_yaml: Any) -> None:
    """Stage one emits entries per partition, stage two sums them fenced per source: re-sent entries
    (a stage-one crash) leave the platform total equal to counting in one engine, and the alert fires once."""
    rules = ruleset_from_yaml("""
        budgets:
          - {name: platform, period: day, limit_usd: 10}
        rules:
          - {name: platform-over, budget: platform, when: budget.used_ratio >= 1.0}
    """)
    one = Engine(rules)
    partitions = {0: Engine(rules, emit_cross_tenant=True), 1: Engine(rules, emit_cross_tenant=True)}
    stage_two = Engine(rules)
    fired = 0
    for i in range(12):
        tenant, partition = ("a", 0) if i % 3 else ("b", 1)
        priced = make_event("1.000000001", tenant=tenant, cost_event_id=f"e{i}")
        one.process(priced, position(i))
        partitions[partition].process(priced, position(i))
        for budget, inst, pos, nanos, ts in partitions[partition].deltas:
            for _ in range(2 if i % 4 == 0 else 1):  # every fourth entry is sent twice
                effects = stage_two.apply_delta(budget, inst, f"p{partition}", pos, nanos, ts)
                fired += len(of(AlertFiring, effects))
        partitions[partition].deltas.clear()
    assert all(not e.totals() for e in partitions.values())
    assert stage_two.totals() == one.totals() == {("platform", (), "2026-01-15"): 12 * usd_to_nanos("1.000000001")}
    assert fired == 1


def test_a_tenant_first_seen_behind_the_tick_is_still_known(make_event: Any, ruleset_from_yaml: Any) -> None:
    """Regression: the worker lists owned tenants (heartbeats, override ownership) from their
    clock keys, which were written only when an event moved the frontier past the tick."""
    engine = Engine(ruleset_from_yaml(DAILY_BLOCK))
    engine.advance(epoch("2026-01-15T12:00:00Z"))
    engine.process(make_event("1", tenant="late", ts="2026-01-15T11:59:00Z"), position(1))
    assert engine.state[("clock", "late")] == epoch("2026-01-15T11:59:00Z")
    assert engine.frontier("late") == epoch("2026-01-15T12:00:00Z")
