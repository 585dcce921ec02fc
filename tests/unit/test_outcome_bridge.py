"""Business outcomes in (docs/traces.md, "Outcomes in"): the bridge's conversion, the marker on the
cost topic, and WorkerCore feeding outcomes to the engine at their record's positions."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from conftest import build_ruleset
from spendwarden.settings import Settings
from spendwarden.streams.engine_state import position
from spendwarden.streams.events import Outcome, PricedEvent
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.outcome_bridge import OutcomeBridge, marked
from spendwarden.streams.pricebook import Pricebook
from spendwarden.streams.service import Service
from spendwarden.streams.worker_core import Record, WorkerCore

RULES = """
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 1000}
rules:
  - {name: uc-resolved, budget: uc-day, when: "unit.day.resolved >= 1.0", severity: low}
"""
NOW = datetime.now(timezone.utc).isoformat()


def outcome(n: int, tenant: str = "acme", kind: str = "resolved", trace: str | None = None) -> dict[str, Any]:
    return {"business_outcome_id": f"o{n}", "trace_id": trace or f"t{n}", "ts": NOW, "tenant_id": tenant,
            "use_case_id": "chat", "outcome": kind}


def cost(n: int, tenant: str = "acme", usd: str = "0.5") -> dict[str, Any]:
    return {"cost_event_id": f"c{n}", "trace_id": f"t{n}", "ts": NOW, "tenant_id": tenant, "use_case_id": "chat",
            "allocated_cost_usd": usd}


# ---------------------------------------------------------------- the bridge
def test_one_record_per_tenant_in_record_order_each_outcome_marked() -> None:
    mixed = [outcome(1), outcome(2, "globex"), outcome(3), outcome(4, "globex", "rejected")]
    found = OutcomeBridge().convert(orjson.dumps(mixed))
    assert not found.rejections
    assert [key for key, _ in found.records] == [b"acme", b"globex"]
    acme, globex = (orjson.loads(value) for _, value in found.records)
    assert [o["business_outcome_id"] for o in acme] == ["o1", "o3"]
    assert [o["business_outcome_id"] for o in globex] == ["o2", "o4"]
    assert all(o["record_type"] == "outcome" for o in acme + globex)
    assert Outcome.model_validate(globex[1]).outcome == "rejected"
    assert found.stats == {"read": 4, "bridged": 4, "rejected": 0}


def test_a_single_object_is_a_record_too() -> None:
    found = OutcomeBridge().convert(orjson.dumps(outcome(1)))
    assert [(key, [o["business_outcome_id"] for o in orjson.loads(value)]) for key, value in found.records] \
        == [(b"acme", ["o1"])]


def test_bad_elements_are_refused_with_their_index_and_the_rest_go_on() -> None:
    items = [outcome(1), {**outcome(2), "outcome": "great"}, {**outcome(3), "tenant_id": "acme corp"}, 7,
             outcome(4, "globex")]
    found = OutcomeBridge().convert(orjson.dumps(items))
    assert [(r.reason, r.field, r.index) for r in found.rejections] == [
        ("invalid", "outcome", 1), ("invalid", "tenant_id", 2), ("invalid", None, 3)]
    assert [key for key, _ in found.records] == [b"acme", b"globex"]
    assert found.stats == {"read": 5, "bridged": 2, "rejected": 3}


@pytest.mark.parametrize("raw", [None, b"{not json", b"42", b'"resolved"'])
def test_what_is_no_outcome_record_is_one_rejection_never_raised(raw: bytes | None) -> None:
    found = OutcomeBridge().convert(raw)
    assert not found.records and [r.reason for r in found.rejections] == ["decode"]
    assert found.rejections[0].index is None


def test_records_stay_within_the_cost_topics_limits() -> None:
    found = OutcomeBridge(max_outcomes_per_record=3).convert(orjson.dumps([outcome(n) for n in range(7)]))
    assert [len(orjson.loads(value)) for _, value in found.records] == [3, 3, 1]
    one = len(orjson.dumps([marked(Outcome.model_validate(outcome(1)).model_dump(mode="json"))]))
    found = OutcomeBridge(max_record_bytes=2 * one + 10).convert(orjson.dumps([outcome(n) for n in range(5)]))
    assert all(len(value) <= 2 * one + 10 for _, value in found.records)
    assert sum(len(orjson.loads(value)) for _, value in found.records) == 5
    huge = {**outcome(9), "business_outcome_id": "x" * 200, "quality": {f"q{i}": 1.0 for i in range(50)}}
    found = OutcomeBridge(max_record_bytes=300).convert(orjson.dumps([huge]))
    assert not found.records and [r.reason for r in found.rejections] == ["too_large"]
    assert found.stats == {"read": 1, "bridged": 0, "rejected": 1}


# ---------------------------------------------------------------- the marker on the cost topic
def test_the_cost_topic_reads_marked_items_as_outcomes_and_the_rest_as_cost_events() -> None:
    ingest = Ingest(Pricebook.default())
    record = orjson.dumps([cost(1), marked(outcome(1)), cost(2)])
    items, rejections = ingest.parse_items(record, time.time())
    assert not rejections
    assert [type(item) for item in items] == [PricedEvent, Outcome, PricedEvent]
    assert items[1].business_outcome_id == "o1"  # type: ignore[union-attr]
    # A producer's own marked object (the marker not first) is an outcome too.
    items, _ = ingest.parse_items(orjson.dumps({**outcome(2), "record_type": "outcome"}))
    assert [type(item) for item in items] == [Outcome]


def test_records_without_the_marker_parse_exactly_as_cost_events() -> None:
    ingest = Ingest(Pricebook.default())
    for raw in (orjson.dumps(cost(1)), orjson.dumps([cost(1), {"cost_event_id": "x"}]), b"{bad"):
        items, rejections = ingest.parse_items(raw)
        events, expected = ingest.parse_record(raw)
        got = [(p.event, p.cost_nanos) for p in items]  # type: ignore[union-attr]
        assert got == [(p.event, p.cost_nanos) for p in events]
        assert rejections == expected
    # Another record_type, or a cost event carrying one, stays a cost event.
    items, _ = ingest.parse_items(orjson.dumps({**cost(3), "record_type": "cost_event"}))
    assert [type(item) for item in items] == [PricedEvent]


def test_a_marked_item_that_is_no_outcome_is_refused_with_its_index() -> None:
    ingest = Ingest(Pricebook.default(), max_future_skew_s=300)
    future = {**marked(outcome(2)), "ts": datetime.fromtimestamp(time.time() + 3600, timezone.utc).isoformat()}
    record = orjson.dumps([cost(1), {**marked(outcome(1)), "outcome": "maybe"}, future])
    items, rejections = ingest.parse_items(record, time.time())
    assert [type(item) for item in items] == [PricedEvent]
    assert [(r.reason, r.field, r.index) for r in rejections] == [("invalid", "outcome", 1), ("future", "ts", 2)]


# ---------------------------------------------------------------- the worker core
def core() -> WorkerCore:
    return WorkerCore(build_ruleset(RULES), Ingest(Pricebook.default()))


def test_the_worker_feeds_outcomes_to_the_engine_in_record_order_and_a_replay_changes_nothing() -> None:
    worker = core()
    batch = [Record(0, 0, b"acme", orjson.dumps([cost(1), cost(2)]), "events"),
             Record(0, 1, b"acme", orjson.dumps([marked(outcome(1)), marked(outcome(2, kind="rejected")),
                                                 {**marked(outcome(3)), "outcome": "?"}]), "events")]
    result = worker.handle(batch)
    engine = worker.engines[0]
    assert (result.events, result.outcomes, result.outcome_duplicates) == (2, 2, 0)
    assert [d["reason"] for _, d in result.dead_letters] == ["invalid"]
    assert result.positions[0] == position(1, 1)  # the record's last good item
    day = engine.unit_figures("uc-day", {"tenant_id": "acme", "use_case_id": "chat"})["day"]
    assert (day["outcomes"], day["resolved"], day["rejected"], day["cost_per_resolved_case_usd"]) == (2, 1, 1, 0.5)

    again = worker.handle(batch)  # the same offsets after a crash: same positions, fenced
    assert again.outcome_duplicates == 0  # a redelivery, not a producer duplicate
    assert engine.unit_figures("uc-day", {"tenant_id": "acme", "use_case_id": "chat"})["day"] == day

    resent = worker.handle([Record(0, 2, b"acme", orjson.dumps([marked(outcome(1))]), "events")])
    assert (resent.outcomes, resent.outcome_duplicates, resent.events) == (0, 1, 0)  # a bridge re-send


# ---------------------------------------------------------------- the service's bridge agent
class Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, bytes]] = []

    async def send(self, key: Any = None, value: bytes = b"") -> asyncio.Future[Any]:
        self.sent.append((key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_the_bridge_agent_sends_to_the_cost_topic_and_dead_letters_per_record(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    worker = Service(Settings(kafka_bootstrap="127.0.0.1:9", rules_dir=rules, data_dir=tmp_path / "data",
                              redis_url="redis://127.0.0.1:9/0", app_id="sw-unit-outcomes",
                              outcomes_topic="outcomes"))
    worker.cost_topic, worker.dead_letter_topic = Topic(), Topic()

    def record(value: bytes, offset: int) -> Any:
        return SimpleNamespace(value=value, key=b"k", message=SimpleNamespace(topic="outcomes", partition=1,
                                                                              offset=offset))

    async def run() -> None:
        await worker.bridge_outcomes([
            record(orjson.dumps([outcome(1), {**outcome(2), "ts": "yesterday"}, outcome(3, "globex")]), 5),
            record(b"nope", 6)])
        await worker._settle_bridge_sends()

    asyncio.run(run())
    assert [key for key, _ in worker.cost_topic.sent] == [b"acme", b"globex"]
    letters = [orjson.loads(value) for _, value in worker.dead_letter_topic.sent]
    assert [(d["reason"], d["rejected_outcomes"], d["source"]["offset"]) for d in letters] == [
        ("invalid", 1, 5), ("decode", 1, 6)]
    assert [r["index"] for r in letters[0]["rejections"]] == [1]
    counted = {s.labels["kind"]: s.value for m in worker.metrics.registry.collect()
               if m.name == "spendwarden_outcomes" for s in m.samples if s.name.endswith("_total")}
    assert counted == {"read": 3, "bridged": 2, "rejected": 2, "counted": 0, "duplicates": 0, "too_late": 0}
