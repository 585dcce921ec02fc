"""Rules that depend on the clock are re-checked when the clock can change them, and no more.

A rule reading only ``local.hour`` can change only at a local hour start; one reading only
tenant or scope labels never changes with time. Re-checking them every minute made the
engine spend most of a busy day re-evaluating CEL on ticks (bench/engine.py).
"""

from __future__ import annotations

import copy
from typing import Any

from conftest import epoch
from spendwarden.rules.compiler import clock_step
from spendwarden.streams.effects import AlertFiring, AlertResolved
from spendwarden.streams.engine import Engine, position


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


def test_an_offset_change_at_a_quarter_hour_is_a_clock_change(make_event: Any, ruleset_from_yaml: Any) -> None:
    """Pacific/Chatham moves from +12:45 to +13:45 at 02:45 local (14:00Z on 2026-09-26):
    local 02:59 is followed by 03:45, so `local.hour < 3` clears at 14:00Z, not at the hour
    start the old offset predicted (14:15Z)."""
    engine = Engine(ruleset_from_yaml("""
        tenants:
          chatham: {timezone: Pacific/Chatham}
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: night, budget: daily, when: 'budget.used_ratio >= 0.5 && local.hour < 3'}
    """))
    fired = engine.process(make_event("6", tenant="chatham", ts="2026-09-26T13:50:00Z"), position(1))
    assert [type(e) for e in fired] == [AlertFiring]
    assert engine.advance(epoch("2026-09-26T13:59:00Z")) == []
    assert [type(e) for e in engine.advance(epoch("2026-09-26T14:00:00Z"))] == [AlertResolved]


def test_the_due_queue_holds_each_instance_once_however_often_its_due_time_flips(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """A spend rule (due at the month end) beside a window rule going on and off (due next
    minute): a week of flips leaves one queued entry per due time, not one per flip."""
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: monthly, for_each: [tenant_id, use_case_id], period: month, limit_usd: 1000000}
        rules:
          - {name: any-spend, budget: monthly, when: 'budget.spend_usd >= 0.001'}
          - {name: burst, budget: monthly, when: 'window.spend_usd_5m >= 3'}
    """))
    start = epoch("2026-01-01T00:00:00Z")
    offset = 0
    for minute in range(3 * 1440):
        now = start + minute * 60
        engine.advance(now)
        for use_case in ("a", "b", "c"):
            offset += 1
            engine.process(make_event("3" if minute % 10 == 0 else "0.01", use_case=use_case, ts=now + 1),
                           position(offset))
    assert len(engine._due) <= 2 * 3  # at most the month end and the next minute, per instance


def test_no_instance_gets_two_slots_when_the_match_cache_overflows(
        make_event: Any, ruleset_from_yaml: Any, monkeypatch: Any) -> None:
    """Evaluation hints live on one Slot per instance; if a cache overflow gave an instance two,
    a refund seen through one and spend through the other could skip the rule turning true."""
    import spendwarden.streams.engine as engine_module
    monkeypatch.setattr(engine_module, "_MATCH_CACHE_MAX", 3)
    engine = Engine(ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 100}
        rules:
          - {name: eighty, budget: daily, when: 'budget.used_ratio >= 0.8'}
    """))
    ts = "2026-01-15T12:00:00Z"
    offset = 0

    def send(cost: str, use_case: str, **fields: Any) -> list[type]:
        nonlocal offset
        offset += 1
        return [type(e) for e in engine.process(make_event(cost, ts=ts, use_case=use_case, **fields),
                                                position(offset))]

    for tenant in ("x", "y", "z"):
        send("0", "m", tenant=tenant)
    assert send("85", "a") == [AlertFiring]
    assert send("-10", "b", component="adjustment") == [AlertResolved]
    assert send("10", "a") == [AlertFiring]


def test_an_instance_waiting_for_the_clock_is_still_watched_after_a_restart(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    """Guards hold at 13:30 but `local.hour >= 14` does not: a worker restarted from that state
    fires at 14:00 with no traffic, like one that never stopped."""
    rules = ruleset_from_yaml("""
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: after-14, budget: daily, when: 'budget.used_ratio >= 0.5 && local.hour >= 14'}
    """)
    running = Engine(rules)
    assert running.process(make_event("8", ts="2026-01-15T13:30:00Z"), position(1)) == []
    restarted = Engine(rules, copy.deepcopy(running.state))
    for engine in (running, restarted):
        assert [type(e) for e in engine.advance(epoch("2026-01-15T14:00:00Z"))] == [AlertFiring]


def test_a_local_time_condition_is_evaluated_once_per_zone_and_hour(make_event: Any, ruleset_from_yaml: Any) -> None:
    """`local.hour < 14` reads nothing of the tenant: tenants of one zone share its answer,
    another zone gets its own, and each tenant still sees its own zone's hour."""
    engine = Engine(ruleset_from_yaml("""
        tenants:
          ny1: {timezone: America/New_York}
          ny2: {timezone: America/New_York}
          tokyo: {timezone: Asia/Tokyo}
        budgets:
          - {name: daily, for_each: [tenant_id], period: day, limit_usd: 10}
        rules:
          - {name: morning-burn, budget: daily, when: 'budget.used_ratio >= 0.5 && local.hour < 14'}
    """))
    fired = []
    for offset, tenant in enumerate(("ny1", "ny2", "tokyo"), start=1):
        # 15:00Z is 10:00 in New York (fires) and 00:00 next day in Tokyo (fires too).
        effects = engine.process(make_event("6", tenant=tenant, ts="2026-01-15T15:00:00Z"), position(offset))
        fired += [e.tenant_id for e in effects if isinstance(e, AlertFiring)]
    assert fired == ["ny1", "ny2", "tokyo"]
    assert engine.stats.cel_evaluations == 2  # New York once, Tokyo once
    resolved = engine.advance(epoch("2026-01-15T19:00:00Z"))  # 14:00 in New York, 04:00 in Tokyo
    assert sorted(e.tenant_id for e in resolved if isinstance(e, AlertResolved)) == ["ny1", "ny2"]
