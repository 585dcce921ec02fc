"""Rules that depend on the clock are re-checked when the clock can change them, and no more.

A rule reading only ``local.hour`` can change only at a local hour start; one reading only
tenant or scope labels never changes with time. Re-checking them every minute made the
engine spend most of a busy day re-evaluating CEL on ticks (bench/engine.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spendwarden.rules.compiler import clock_step
from spendwarden.streams.effects import AlertFiring, AlertResolved
from spendwarden.streams.engine import Engine, position


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


BEFORE_2PM = """
tenants:
  umbrella: {timezone: Asia/Kolkata}
budgets:
  - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
rules:
  - name: burn-before-2pm
    budget: daily
    when: budget.used_ratio >= 0.7 && local.hour < 14
"""


def test_clock_step_follows_what_the_expression_reads() -> None:
    assert clock_step("budget.used_ratio >= 0.5", frozenset({"budget"})) == 0
    assert clock_step('tenant.tier == "gold"', frozenset({"tenant"})) == 0
    assert clock_step("local.hour < 14", frozenset({"local"})) == 3600
    assert clock_step("local.weekday == 5", frozenset({"local"})) == 3600
    assert clock_step("local.hour == 9 && local.minute < 30", frozenset({"local"})) == 60
    assert clock_step("period.elapsed_ratio < 0.5", frozenset({"period"})) == 60
    assert clock_step("window.spend_usd_5m > 1", frozenset({"window"})) == 60


def test_hour_rule_resolves_at_the_local_hour_start_in_a_half_hour_zone(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """Kolkata is UTC+05:30: 14:00 local is 08:30Z. Ticks every minute evaluate CEL about once
    an hour, and the alert resolves at the first tick at or after 08:30Z."""
    engine = Engine(ruleset_from_yaml(BEFORE_2PM))
    fired = engine.process(make_event("8", tenant="umbrella", ts="2026-01-15T05:00:00Z"), position(1))
    assert [type(e) for e in fired] == [AlertFiring]
    before = engine.stats.cel_evaluations
    now = epoch("2026-01-15T05:01:00Z")
    while now < epoch("2026-01-15T08:30:00Z"):
        assert engine.advance(now) == [], now
        now += 60
    # 05:30Z, 06:30Z, 07:30Z are local hour starts (11:00, 12:00, 13:00): one evaluation each.
    assert engine.stats.cel_evaluations - before == 3
    resolved = engine.advance(epoch("2026-01-15T08:30:00Z"))
    assert [type(e) for e in resolved] == [AlertResolved]


def test_label_only_condition_is_evaluated_once_per_instance(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """`tenant.tier == "gold"` cannot change with time: later events and ticks reuse the answer."""
    engine = Engine(ruleset_from_yaml("""
        tenants:
          acme: {tier: gold}
          beta: {tier: bronze}
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: gold-half, budget: daily, when: 'budget.used_ratio >= 0.5 && tenant.tier == "gold"'}
          - {name: gold-most, budget: daily, when: 'budget.used_ratio >= 0.8 && tenant.tier == "gold"'}
    """))
    offset = 0
    fired: list[str] = []
    for tenant in ("acme", "beta"):
        for minute in range(10):
            offset += 1
            effects = engine.process(make_event("1", tenant=tenant, ts=f"2026-01-15T12:{minute:02d}:00Z"),
                                     position(offset))
            fired += [f"{e.tenant_id}/{e.rule}" for e in effects if isinstance(e, AlertFiring)]
            engine.advance(epoch(f"2026-01-15T12:{minute:02d}:30Z"))
    assert fired == ["acme/gold-half", "acme/gold-most"]
    assert engine.stats.cel_evaluations == 4  # two rules x two tenants, once each
