"""Tenant status (streams/status.py): exact spend of the current period, burn rates, forecast."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from spendwarden.streams.engine import Engine, position
from spendwarden.streams.status import status_report

RULES = """
tenants:
  acme: {timezone: Europe/Paris}
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100}
  - {name: tenant-month, for_each: [tenant_id], period: month, limit_usd: 1000}
rules:
  - {name: uc-cap, budget: uc-day, when: "budget.used_ratio >= 1.0", decide: {level: block, only_risk_tiers: [low]}}
"""
T0 = 1_767_222_000.0  # 2026-01-01T00:00:00+01:00, midnight in Paris


def test_status_spend_is_the_counter_and_forecast_follows_the_hourly_history(
        make_event: Any, ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    offset = 0
    for hour in range(4 * 24 + 10):  # four whole days and 10 hours: 2 USD an hour on chat, 1 on search
        for use_case, cost in (("chat", "2"), ("search", "1")):
            offset += 1
            engine.process(make_event(cost, tenant="acme", use_case=use_case, ts=T0 + hour * 3600 + 60),
                           position(offset))
    now = T0 + (4 * 24 + 10) * 3600 + 120
    report = status_report(engine, "acme", now)
    by = {(b["budget"], b["scope"].get("use_case_id")): b for b in report["budgets"]}
    chat = by[("uc-day", "chat")]
    assert chat["period_id"] == "2026-01-05"
    assert Decimal(chat["spend_usd"]) == 20 == Decimal(engine.spend_nanos("uc-day", chat["scope"], "2026-01-05")) / 10**9
    assert chat["used_ratio"] == 0.2 and chat["limit_usd"] == "100"
    assert abs(Decimal(chat["burn_24h_usd_per_hour"]) - 2) < Decimal("0.01")  # uniform within the hour
    assert chat["forecast"]["method"] == "seasonal-day"
    assert abs(Decimal(chat["forecast"]["end_usd"]) - 48) < Decimal("0.5")  # 14 more hours at 2 USD/h
    assert chat["exhausts_at"] is None
    month = by[("tenant-month", None)]
    assert Decimal(month["spend_usd"]) == 3 * (4 * 24 + 10)
    assert month["forecast"]["end_ratio"] > 1  # 3 USD/h for 31 days is over 1,000 USD
    assert month["exhausts_at"] is not None

    only_search = status_report(engine, "acme", now, use_case="search")["budgets"]
    assert {(b["budget"], b["scope"].get("use_case_id")) for b in only_search} == {
        ("uc-day", "search"), ("tenant-month", None)}
    assert status_report(engine, "nobody", now)["budgets"] == []


def test_use_case_filter_keeps_tenant_wide_budgets_unless_scoped_to_other_use_cases(ruleset_from_yaml: Any) -> None:
    rules = RULES.replace("budgets:\n", "budgets:\n  - {name: search-only, for_each: [tenant_id], scope: {use_case_id: [search]}, "
                          "period: day, limit_usd: 10}\n")
    engine = Engine(ruleset_from_yaml(rules))
    from conftest import build_event

    engine.process(build_event("1", tenant="acme", use_case="search", ts=T0 + 60), position(1))
    engine.process(build_event("1", tenant="acme", use_case="chat", ts=T0 + 120), position(2))
    chat = {b["budget"] for b in status_report(engine, "acme", T0 + 180, use_case="chat")["budgets"]}
    assert chat == {"uc-day", "tenant-month"}
    search = {b["budget"] for b in status_report(engine, "acme", T0 + 180, use_case="search")["budgets"]}
    assert search == {"uc-day", "tenant-month", "search-only"}
