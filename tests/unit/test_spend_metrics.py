"""Spend metrics from exact engine state (streams/usage.py, streams/spend_metrics.py)."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import build_event
from spendwarden.streams.checkpoint import DirtyState
from spendwarden.streams.engine import Engine, position
from spendwarden.streams.spend_metrics import SpendMetrics, admitted

RULES = """
tenants:
  acme: {timezone: Europe/Paris}
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100}
  - {name: tenant-month, for_each: [tenant_id], period: month, limit_usd: 1000}
rules:
  - {name: uc-cap, budget: uc-day, when: "budget.used_ratio >= 0.05", decide: {level: block, only_risk_tiers: [low]}}
"""
T0 = 1_767_222_000.0  # 2026-01-01T00:00:00+01:00


def scrape(collector: SpendMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample as Prometheus would read it from the text exposition."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def labels(**items: str) -> frozenset[tuple[str, str]]:
    return frozenset(items.items())


def event(cost: str, ts: float, **fields: Any) -> Any:
    fields.setdefault("tenant", "acme")
    return build_event(cost, ts=ts, **fields)


def test_usage_rows_count_tokens_and_cost_once_per_position(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    e1 = event("1.5", T0 + 60, input_tokens=1000, output_tokens=200, cached_tokens=300)
    engine.process(e1, position(1))
    engine.process(e1, position(1))  # the same record again (a replay after a crash)
    engine.process(event("0.25", T0 + 61, input_tokens=10, output_tokens=5, cost_event_id=e1.event.cost_event_id),
                   position(2))  # a producer duplicate: same id, new offset
    engine.process(event("-0.5", T0 + 62, component="adjustment"), position(3))
    row = engine.state[("usage", "acme", "chat", "model-a")]
    assert row[1:] == (position(1), 1000, 200, 300, 1_500_000_000, 500_000_000)  # first position, then sums


def test_replayed_positions_below_a_restored_fence_are_not_counted_again(ruleset_from_yaml: Any) -> None:
    rules = ruleset_from_yaml(RULES)
    first = Engine(rules, DirtyState())
    events = [event("1", T0 + i, input_tokens=10) for i in range(5)]
    for i, e in enumerate(events[:3]):
        first.process(e, position(i))
    restored = Engine(rules, DirtyState(first.state.items()))  # what the changelog held
    for i, e in enumerate(events):  # Kafka redelivers from before the checkpoint
        restored.process(e, position(i))
    row = restored.state[("usage", "acme", "chat", "model-a")]
    assert row[2] == 50 and row[5] == 5_000_000_000


def test_counters_show_checkpointed_rows_only_and_never_go_down(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES), DirtyState())
    metrics = SpendMetrics(lambda: {0: engine}, clock=lambda: T0 + 3600)
    engine.process(event("2", T0 + 60, input_tokens=100, output_tokens=40, cached_tokens=20), position(1))
    cost_key = ("token_cost_total_usd", labels(tenant="acme", model="model-a", service="chat", partition="0"))
    assert cost_key not in scrape(metrics)  # counted but not checkpointed yet: not exported

    metrics.restored(0, ())  # the partition was assigned (nothing checkpointed before)
    metrics.checkpointed(0, engine.state.take_dirty())
    engine.process(event("3", T0 + 61, input_tokens=1), position(2))  # live state moves on
    samples = scrape(metrics)
    assert samples[cost_key] == 2.0
    for token_type, count in (("input", 100), ("output", 40), ("cached", 20)):
        key = labels(tenant="acme", model="model-a", type=token_type, service="chat", partition="0")
        assert samples[("token_usage_total", key)] == count
    assert samples[("spendwarden_cost_credits_total_usd", cost_key[1])] == 0.0  # there from the start

    metrics.checkpointed(0, engine.state.take_dirty())
    assert scrape(metrics)[cost_key] == 5.0
    metrics.dropped(0)  # rebalanced away: the new owner exports it
    engine.process(event("1", T0 + 62), position(3))
    metrics.checkpointed(0, engine.state.take_dirty())  # a checkpoint that was in flight at the revocation
    assert cost_key not in scrape(metrics)
    metrics.restored(0, engine.state.items())
    assert scrape(metrics)[cost_key] == 6.0


def test_budget_and_decision_gauges_read_the_current_period(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    now = [T0 + 3600]
    metrics = SpendMetrics(lambda: {0: engine}, clock=lambda: now[0])
    engine.process(event("10", T0 + 60, risk_tier="low"), position(1))
    engine.process(event("30", T0 + 120, use_case="search"), position(2))
    metrics.restored(0, engine.state.items())
    samples = scrape(metrics)
    chat = labels(tenant="acme", use_case="chat", period="day", budget="uc-day", scope="*")
    month = labels(tenant="acme", use_case="*", period="month", budget="tenant-month", scope="*")
    assert samples[("spendwarden_budget_used_ratio", chat)] == 0.1
    assert samples[("spendwarden_budget_spend_usd", chat)] == 10.0
    assert samples[("spendwarden_budget_limit_usd", chat)] == 100.0
    assert samples[("spendwarden_budget_used_ratio", month)] == 0.04
    level = samples[("spendwarden_decision_level", labels(tenant="acme", use_case="chat", risk_tier="low", model="*"))]
    assert level == 6  # block

    now[0] = T0 + 86400 + 60  # the next local day, no traffic: the day budget starts again at 0
    samples = scrape(metrics)
    assert samples[("spendwarden_budget_used_ratio", chat)] == 0.0
    assert samples[("spendwarden_budget_used_ratio", month)] == 0.04


def test_instances_of_a_budget_per_model_have_label_sets_of_their_own(ruleset_from_yaml: Any) -> None:
    rules = RULES.replace("budgets:\n", "budgets:\n  - {name: per-model, for_each: [tenant_id, model_or_service], "
                          "period: month, limit_usd: 10}\n")
    engine = Engine(ruleset_from_yaml(rules))
    metrics = SpendMetrics(lambda: {0: engine}, clock=lambda: T0 + 3600)
    engine.process(event("9", T0 + 60, model="big"), position(1))
    engine.process(event("0.1", T0 + 61, model="small"), position(2))
    metrics.restored(0, engine.state.items())
    ratios = {dict(key[1])["scope"]: value for key, value in scrape(metrics).items()
              if key[0] == "spendwarden_budget_used_ratio" and dict(key[1])["budget"] == "per-model"}
    assert ratios == {"model_or_service=big": 0.9, "model_or_service=small": 0.01}


def test_caps_fold_per_partition_by_first_appearance_and_pinned_tenants_always_count(
        ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES), DirtyState())
    metrics = SpendMetrics(lambda: {0: engine}, max_tenants=2, pinned_tenants=["acme"], clock=lambda: T0 + 3600)
    for i, tenant in enumerate(["t3", "t1", "t4", "t2", "acme"]):
        engine.process(event("1", T0 + 60 + i, tenant=tenant), position(i))
    metrics.restored(0, engine.state.items())
    samples = scrape(metrics)
    costs = {dict(key[1])["tenant"]: value for key, value in samples.items() if key[0] == "token_cost_total_usd"}
    assert costs == {"acme": 1.0, "t3": 1.0, "t1": 1.0, "other": 2.0}  # t3 and t1 came first
    assert samples[("spendwarden_metrics_label_overflow", labels(label="tenant"))] == 2
    budget_tenants = {dict(key[1])["tenant"] for key in samples if key[0] == "spendwarden_budget_used_ratio"}
    assert budget_tenants == {"acme", "t3", "t1"}  # a ratio of "other" would mean nothing

    # Another worker restoring the same partition decides alike, and later tenants never
    # displace admitted ones.
    engine.process(event("1", T0 + 70, tenant="t0"), position(10))
    other_worker = SpendMetrics(lambda: {0: engine}, max_tenants=2, pinned_tenants=["acme"], clock=lambda: T0 + 3600)
    other_worker.restored(0, engine.state.items())
    costs = {dict(key[1])["tenant"]: value for key, value in scrape(other_worker).items()
             if key[0] == "token_cost_total_usd"}
    assert costs == {"acme": 1.0, "t3": 1.0, "t1": 1.0, "other": 3.0}


def test_admission_ranks_by_first_position() -> None:
    assert admitted({"b": 5, "a": 9, "c": 1}, 2) == {"c", "b"}
    assert admitted({"b": 5, "a": 9, "c": 1}, 1, frozenset({"a"})) == {"a", "c"}


def test_cost_series_are_exposed_under_their_exact_names(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES), DirtyState())
    metrics = SpendMetrics(lambda: {0: engine}, clock=lambda: T0)
    engine.process(event("1", T0 + 1), position(1))
    metrics.restored(0, engine.state.items())
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert 'token_cost_total_usd{model="model-a",partition="0",service="chat",tenant="acme"} 1.0' in text
    assert "token_cost_total_usd_total" not in text
    assert "# TYPE token_usage_total counter" in text


def test_a_frozen_snapshot_is_what_a_scrape_renders_while_the_loop_moves_on(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES), DirtyState())
    metrics = SpendMetrics(lambda: {0: engine}, clock=lambda: T0 + 3600)
    engine.process(event("4", T0 + 60), position(1))
    metrics.restored(0, engine.state.take_dirty())
    chat = ("spendwarden_budget_spend_usd",
            labels(tenant="acme", use_case="chat", period="day", budget="uc-day", scope="*"))
    cost = ("token_cost_total_usd", labels(tenant="acme", model="model-a", service="chat", partition="0"))
    with metrics.frozen():  # the handler then renders in a thread
        engine.process(event("6", T0 + 61), position(2))
        metrics.checkpointed(0, engine.state.take_dirty())
        during = scrape(metrics)
    after = scrape(metrics)
    assert (during[chat], during[cost]) == (4.0, 4.0)
    assert (after[chat], after[cost]) == (10.0, 10.0)


def test_another_thread_never_reads_the_engines_without_a_frozen_snapshot(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES), DirtyState())
    metrics = SpendMetrics(lambda: {0: engine}, clock=lambda: T0 + 3600)
    engine.process(event("4", T0 + 60), position(1))
    metrics.restored(0, engine.state.items())
    found: list[list[Any]] = []
    thread = threading.Thread(target=lambda: found.append(list(metrics.collect())))
    thread.start()
    thread.join()
    assert found == [[]]
    with metrics.frozen():
        thread = threading.Thread(target=lambda: found.append(list(metrics.collect())))
        thread.start()
        thread.join()
    assert len(found[1]) == 8 and any(f.samples for f in found[1])
