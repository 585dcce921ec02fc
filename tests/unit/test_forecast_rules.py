"""Rules reading `forecast.*`: an early warning before the budget runs out, refused on the wrong period."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import build_event

from spendwarden.exceptions import RuleFileError
from spendwarden.streams.effects import AlertFiring
from spendwarden.streams.engine import Engine, position

RULES = """
tenants:
  acme: {timezone: UTC}
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100}
rules:
  - name: will-overrun
    budget: uc-day
    when: "budget.used_ratio >= 0.1 && forecast.day.end_ratio > 1.1"
    severity: medium
"""
DAY0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def fired(effects: list[Any]) -> list[str]:
    return [e.rule for e in effects if isinstance(e, AlertFiring)]


def run_day(engine: Engine, usd_per_hour: str, hours: int, day: int, offset: int) -> tuple[list[str], int]:
    names: list[str] = []
    for hour in range(hours):
        offset += 1
        names += fired(engine.process(build_event(usd_per_hour, tenant="acme", ts=DAY0 + day * 86400 + hour * 3600 + 30),
                                      position(offset)))
    return names, offset


def test_a_fast_burn_fires_hours_before_the_limit_and_a_steady_one_does_not(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    offset = 0
    for day in range(3):  # history: 3 USD an hour, 72 a day (forecast 72%: quiet)
        names, offset = run_day(engine, "3", 24, day, offset)
        assert names == []
    names, offset = run_day(engine, "6", 4, 3, offset)  # today twice as fast: 144 USD by midnight
    assert names == ["will-overrun"]
    assert engine.spend_nanos("uc-day", {"tenant_id": "acme", "use_case_id": "chat"}, "2026-01-04") == 24 * 10**9


def test_forecast_of_another_period_is_refused_at_load(ruleset_from_yaml: Any) -> None:
    with pytest.raises(RuleFileError, match="forecast.week on a day budget"):
        ruleset_from_yaml(RULES.replace("forecast.day.end_ratio", "forecast.week.end_ratio"))
    with pytest.raises(RuleFileError, match="not a known field"):
        ruleset_from_yaml(RULES.replace("forecast.day.end_ratio", "forecast.finish"))
