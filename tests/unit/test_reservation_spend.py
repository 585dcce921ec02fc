"""What the worker publishes for reservable budgets: exact spend per instance and the cost
events that spend includes (their reservations are released with it)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from conftest import build_ruleset
from spendwarden.exceptions import RuleFileError
from spendwarden.rules.loader import load_ruleset
from spendwarden.streams import reservations
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook
from spendwarden.streams.worker_core import Record, WorkerCore

RULES = """
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 10, reservations: true}
  - {name: tenant-low, for_each: [tenant_id], scope: {risk_tier: [low, medium]}, period: month,
     limit_usd: 100, reservations: true}
  - {name: not-reserved, for_each: [tenant_id], period: day, limit_usd: 5}
"""


def record(offset: int, cost: str, use_case: str = "chat", tier: str = "low", tenant: str = "acme") -> Record:
    event = {"cost_event_id": f"call-{offset}", "ts": datetime.now(timezone.utc).isoformat(), "tenant_id": tenant,
             "use_case_id": use_case, "risk_tier": tier, "allocated_cost_usd": cost}
    return Record(0, offset, tenant.encode(), orjson.dumps(event), "events")


def test_a_batch_reports_each_reservable_instance_once_with_its_exact_spend_and_the_events_it_includes() -> None:
    worker = WorkerCore(build_ruleset(RULES), Ingest(Pricebook.default()))
    result = worker.handle([record(0, "1.25"), record(1, "2.5"), record(2, "0.5", use_case="search", tier="high"),
                            record(1, "2.5")])  # a redelivery is counted once
    fields, settled = result.reserved[0]
    assert set(fields) == {"acme"}
    acme = fields["acme"]
    assert set(acme) == {"chat|uc-day", "search|uc-day", "*|tenant-low"}
    assert acme["chat|uc-day"]["spend"] == 3_750_000_000 and acme["chat|uc-day"]["limit"] == 10_000_000_000
    assert acme["search|uc-day"]["spend"] == 500_000_000
    assert acme["*|tenant-low"]["spend"] == 3_750_000_000  # the high-risk call is outside its scope
    assert acme["*|tenant-low"]["tiers"] == ["low", "medium"] and acme["*|tenant-low"]["use_cases"] is None
    assert acme["chat|uc-day"]["end"] > time.time()
    assert settled == {"acme": ["call-0", "call-1", "call-2"]}
    assert worker.handle([record(3, "1")]).reserved[0][1] == {"acme": ["call-3"]}  # taken: only what is new
    snapshot = reservations.snapshot(worker.engines[0], None, time.time())
    assert snapshot["acme"]["chat|uc-day"]["spend"] == 4_750_000_000
    assert set(snapshot["acme"]) == {"chat|uc-day", "search|uc-day", "*|tenant-low"}


def test_budgets_without_reservations_publish_nothing() -> None:
    worker = WorkerCore(build_ruleset(RULES.replace("reservations: true", "reservations: false")),
                        Ingest(Pricebook.default()))
    assert worker.handle([record(0, "1")]).reserved == {}


@pytest.mark.parametrize("budget, message", [
    ("{name: b, for_each: [model_or_service], period: day, limit_usd: 1, reservations: true}", "for_each"),
    ("{name: b, for_each: [tenant_id], scope: {environment: prod}, period: day, limit_usd: 1, reservations: true}",
     "scope"),
])
def test_a_budget_a_gateway_cannot_reserve_against_is_refused_at_load(budget: str, message: str,
                                                                      tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f"budgets:\n  - {budget}\n")
    with pytest.raises(RuleFileError, match=message) as found:
        load_ruleset(path)
    assert found.value.line == 2


def test_templates_tell_gateways_which_budgets_cover_a_call_and_each_tenants_limit() -> None:
    rules = build_ruleset("""
tenants:
  gold-co: {tier: gold}
  plain: {}
budgets:
  - {name: support-day, for_each: [tenant_id], scope: {use_case_id: [chat, search]}, period: day,
     limit_by_tier: {default: 10, gold: 50}, reservations: true}
  - {name: not-reserved, for_each: [tenant_id], period: day, limit_usd: 5}
""")
    doc = reservations.templates(rules)
    assert doc["rules_version"] == rules.version
    assert doc["budgets"] == [{"budget": "support-day", "per_use_case": False, "tiers": None,
                               "use_cases": ["chat", "search"], "limit": 10_000_000_000,
                               "tenant_limits": {"gold-co": 50_000_000_000}}]


def test_an_engine_nobody_drains_keeps_no_reservation_bookkeeping(make_event) -> None:  # type: ignore[no-untyped-def]
    from spendwarden.streams.engine import Engine

    engine = Engine(build_ruleset(RULES))  # as replay builds it
    for i in range(100):
        engine.process(make_event("0.01", ts="2026-11-30T10:00:00Z", cost_event_id=f"e{i}"), i)
    assert engine.spend_nanos("uc-day", {"tenant_id": "acme", "use_case_id": "chat"}, "2026-11-30") == 10**9
    assert engine.reserved == {} and engine.settled == {}


def test_a_late_event_of_yesterday_in_the_batch_does_not_hide_todays_spend() -> None:
    from datetime import timedelta

    worker = WorkerCore(build_ruleset(RULES), Ingest(Pricebook.default()))
    now = datetime.now(timezone.utc)
    yesterday = {"cost_event_id": "late", "ts": (now - timedelta(days=1)).isoformat(), "tenant_id": "acme",
                 "use_case_id": "chat", "risk_tier": "low", "allocated_cost_usd": "0.1"}
    batch = [record(0, "9"), Record(0, 1, b"acme", orjson.dumps(yesterday), "events")]
    fields, settled = worker.handle(batch).reserved[0]
    assert fields["acme"]["chat|uc-day"]["spend"] == 9 * 10**9 and fields["acme"]["chat|uc-day"]["end"] > time.time()
    assert settled == {"acme": ["call-0", "late"]}
