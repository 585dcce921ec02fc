"""The worker's override layer on a real WorkerCore and Engine, writing to a fake publisher
(the Redis side is tests/integration/test_overrides.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import orjson
import pytest

from conftest import build_ruleset
from spendwarden.streams.effects import DecisionChanged
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.metrics import WorkerMetrics
from spendwarden.streams.override_layer import OverrideLayer, default_partition
from spendwarden.streams.overrides import Override
from spendwarden.streams.pricebook import Pricebook
from spendwarden.streams.worker_core import Record, WorkerCore

RULES = """
budgets:
  - {name: uc-daily, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100}
rules:
  - name: uc-degrade
    budget: uc-daily
    when: budget.used_ratio >= 0.5
    decide: {level: L1, only_risk_tiers: [low, medium], model_alias: small}
  - name: uc-cap
    budget: uc-daily
    when: budget.used_ratio >= 1.0
    decide: {level: block, only_risk_tiers: [low, medium]}
"""
PARTITIONS = 4


class FakePublisher:
    """DecisionPublisher's three writes on a dict of hashes. Like the real one it checks every
    field of a call before writing any, and raises ValueError for a tenant in ``refuse``."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, tuple[str, ...], int]] = []
        self.refuse: set[str] = set()
        self.hold = False  # a slow Redis: each write waits in ``pending`` until the test lets it land
        self.pending: list[asyncio.Event] = []

    def _check(self, tenants: Any) -> None:
        for tenant in tenants:
            if tenant in self.refuse:
                raise ValueError(f"invalid decision field for {tenant!r}")

    async def _in_flight(self) -> None:
        if self.hold:
            landed = asyncio.Event()
            self.pending.append(landed)
            await landed.wait()

    async def apply(self, changes: Sequence[DecisionChanged], position: int) -> int:
        self._check(c.tenant_id for c in changes)
        await self._in_flight()
        for change in changes:
            fields = self.hashes.setdefault(change.tenant_id, {})
            if change.verdict is None:
                fields.pop(change.field, None)
            else:
                fields[change.field] = change.verdict
        self.calls.append(("apply", tuple(sorted({c.tenant_id for c in changes})), position))
        return len({c.tenant_id for c in changes})

    async def republish(self, verdicts: Mapping[str, Mapping[str, dict[str, Any]]], position: int) -> None:
        self._check(verdicts)
        await self._in_flight()
        for tenant, fields in verdicts.items():
            self.hashes[tenant] = dict(fields)
        self.calls.append(("replace", tuple(sorted(verdicts)), position))


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


_offsets = iter(range(100, 10**6))


def spend(core: WorkerCore, tenant: str, cost: str, use_case: str = "chat") -> tuple[int, dict[int, list[Any]]]:
    """Count one low-tier event of ``tenant`` in the partition Kafka would give it; its effects."""
    partition = default_partition(tenant, PARTITIONS)
    event = {"cost_event_id": f"ev-{next(_offsets)}", "ts": datetime.now(timezone.utc).isoformat(),
             "tenant_id": tenant, "use_case_id": use_case, "risk_tier": "low", "allocated_cost_usd": cost}
    result = core.handle([Record(partition, next(_offsets), tenant.encode(), orjson.dumps(event), "events")])
    return partition, result.effects


def override(clock: Clock, **fields: Any) -> Override:
    base: dict[str, Any] = {"tenant_id": "acme", "action": "block", "reason": "incident 42", "author": "alice",
                            "created_at": clock.now, "expires_at": clock.now + 3600}
    base.update(fields)
    return Override(**base)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def core() -> WorkerCore:
    worker = WorkerCore(build_ruleset(RULES), Ingest(Pricebook.default()))
    for partition in range(PARTITIONS):
        worker.load_partition(partition, ())
    return worker


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def layer(core: WorkerCore, publisher: FakePublisher, clock: Clock) -> OverrideLayer:
    made = OverrideLayer(core, publisher, WorkerMetrics(), PARTITIONS, clock=clock)
    made.ready.set()
    return made


async def put(layer: OverrideLayer, item: Override) -> None:
    await layer.on_message(item.scope_key, item.to_record())


def levels(publisher: FakePublisher, tenant: str = "acme") -> dict[str, str]:
    return {f: v["level"] for f, v in publisher.hashes.get(tenant, {}).items()}


# ------------------------------------------------------------------ layering
def test_changes_keep_overridden_fields_and_pass_the_others(
        layer: OverrideLayer, core: WorkerCore, clock: Clock) -> None:
    spend(core, "acme", "60")
    spend(core, "bravo", "60")
    asyncio.run(put(layer, override(clock, use_case_id="chat", action="unblock", tiers=("low",))))
    asyncio.run(put(layer, override(clock, tiers=("medium",), action="degrade", model_alias="tiny")))
    _, effects = spend(core, "acme", "60")  # L1 -> block on chat:low and chat:medium
    _, other = spend(core, "bravo", "60")
    changes = [e for found in (*effects.values(), *other.values()) for e in found if isinstance(e, DecisionChanged)]
    assert {(c.tenant_id, c.field, c.verdict["level"]) for c in changes} == {
        ("acme", "chat:low", "block"), ("acme", "chat:medium", "block"),
        ("bravo", "chat:low", "block"), ("bravo", "chat:medium", "block")}

    layered = {(c.tenant_id, c.field): c.verdict for c in layer.changes(changes)}
    assert layered[("acme", "chat:low")]["level"] == "L0"  # owned by the unblock: its verdict
    assert layered[("acme", "chat:low")]["rule"] == "manual-override"
    assert layered[("acme", "chat:medium")] is None  # covered by the tenant-wide degrade, owned by *:medium
    assert layered[("bravo", "chat:low")]["level"] == "block"  # no override: the rule's verdict
    assert layered[("bravo", "chat:medium")]["rule"] == "uc-cap"


def test_decision_sets_layer_every_tenant_and_add_those_known_only_from_overrides(
        layer: OverrideLayer, core: WorkerCore, clock: Clock) -> None:
    partition, _ = spend(core, "acme", "60")
    newcomers = [t for t in (f"new{i}" for i in range(40)) if default_partition(t, PARTITIONS) == partition][:2]
    elsewhere = next(t for t in (f"far{i}" for i in range(40)) if default_partition(t, PARTITIONS) != partition)
    asyncio.run(put(layer, override(clock, use_case_id="chat", tiers=("low",))))
    for tenant in [*newcomers, elsewhere]:
        asyncio.run(put(layer, override(clock, tenant_id=tenant, tiers=("high",))))
    asyncio.run(put(layer, override(clock, tenant_id=newcomers[1], tiers=("high",), expires_at=clock.now + 1)))
    clock.now += 1  # the second newcomer's override has expired: its set is empty, so it is cleaned up

    sets = layer.decision_sets(partition)
    assert set(sets) == {"acme", *newcomers}
    assert {f: v["level"] for f, v in sets["acme"].items()} == {"chat:low": "block", "chat:medium": "L1"}
    assert sets["acme"]["chat:low"]["rule"] == "manual-override"
    assert set(sets[newcomers[0]]) == {"*:high"} and sets[newcomers[1]] == {}
    assert elsewhere in layer.decision_sets(default_partition(elsewhere, PARTITIONS))


def test_tick_republishes_a_tenant_whose_override_expired_once(
        layer: OverrideLayer, core: WorkerCore, publisher: FakePublisher, clock: Clock) -> None:
    spend(core, "acme", "60")
    spend(core, "bravo", "60")

    def blocks() -> float:
        return layer.metrics.registry.get_sample_value("spendwarden_overrides_active", {"action": "block"})

    async def scenario() -> None:
        await put(layer, override(clock, expires_at=clock.now + 30))
        await put(layer, override(clock, tenant_id="bravo", use_case_id="chat", expires_at=clock.now + 60))
        assert levels(publisher) == {"*:low": "block", "*:medium": "block", "*:high": "block"}
        assert blocks() == 2
        publisher.calls.clear()
        clock.now += 29
        await layer.tick()
        assert publisher.calls == []  # nothing ended
        clock.now += 1
        await layer.tick()
        assert [c[1] for c in publisher.calls] == [("acme",)]  # only the tenant whose override ended
        assert levels(publisher) == {"chat:low": "L1", "chat:medium": "L1"}  # the rules' verdicts are back
        assert blocks() == 1
        await layer.tick()
        assert len(publisher.calls) == 1

    asyncio.run(scenario())


# ------------------------------------------------------------------ one tenant's failure
def test_a_tenant_whose_write_fails_does_not_keep_the_others_out(
        layer: OverrideLayer, core: WorkerCore, publisher: FakePublisher, clock: Clock) -> None:
    tenants = ["acme", "bravo", "charlie", "delta", "echo", "foxtrot"]
    others = sorted(set(tenants) - {"charlie"})
    for tenant in tenants:
        spend(core, tenant, "60")
    publisher.refuse.add("charlie")

    async def scenario() -> None:
        for tenant in tenants:
            await put(layer, override(clock, tenant_id=tenant, tiers=("low",)))
        assert sorted(publisher.hashes) == others

        publisher.hashes.clear()
        for partition in range(PARTITIONS):
            await layer.republish_partition(partition)
        assert sorted(publisher.hashes) == others
        assert all(levels(publisher, t)["*:low"] == "block" and levels(publisher, t)["chat:medium"] == "L1"
                   for t in publisher.hashes)

        publisher.hashes.clear()
        clock.now += 3600
        await layer.tick()  # every override expires at once: the others are still lifted
        assert sorted(publisher.hashes) == others
        assert all("*:low" not in fields for fields in publisher.hashes.values())

    asyncio.run(scenario())


# ------------------------------------------------------------------ writers racing
async def land_newest_first(publisher: FakePublisher, *tasks: asyncio.Task[Any]) -> None:
    """Let the writes in flight land, the newest first (the worst order for a slow Redis)."""
    while not all(t.done() for t in tasks):
        for _ in range(20):
            await asyncio.sleep(0)
        if publisher.pending:
            publisher.pending.pop().set()
    for task in tasks:
        task.result()


def test_a_rule_verdict_computed_before_an_override_arrived_does_not_land_over_it(
        layer: OverrideLayer, core: WorkerCore, publisher: FakePublisher, clock: Clock) -> None:
    spend(core, "acme", "60")
    partition, effects = spend(core, "acme", "60")  # L1 -> block on chat:low and chat:medium
    changes = [e for e in effects[partition] if isinstance(e, DecisionChanged)]
    unblock = override(clock, use_case_id="chat", action="unblock", tiers=("low",))

    async def scenario() -> None:
        publisher.hold = True
        batch = asyncio.create_task(layer.publish_changes(changes, core.positions[partition]))
        await asyncio.sleep(0)
        arrived = asyncio.create_task(put(layer, unblock))
        await land_newest_first(publisher, batch, arrived)

    asyncio.run(scenario())
    assert levels(publisher) == {"chat:low": "L0", "chat:medium": "block"}


def test_an_override_verdict_computed_before_expiry_does_not_land_after_it_was_lifted(
        layer: OverrideLayer, core: WorkerCore, publisher: FakePublisher, clock: Clock) -> None:
    spend(core, "acme", "60")
    block = override(clock, use_case_id="chat", tiers=("low",), expires_at=clock.now + 10)
    partition, effects = spend(core, "acme", "30")  # no change of level: nothing to write
    assert not [e for e in effects[partition] if isinstance(e, DecisionChanged)]

    async def scenario() -> None:
        await put(layer, block)
        assert levels(publisher)["chat:low"] == "block"
        changes = [DecisionChanged("acme", "chat:low", {"level": "L1", "action": "degrade"}, "now")]
        publisher.hold = True
        batch = asyncio.create_task(layer.publish_changes(changes, core.positions[partition]))
        await asyncio.sleep(0)
        clock.now += 10
        expiry = asyncio.create_task(layer.tick())
        await land_newest_first(publisher, batch, expiry)

    asyncio.run(scenario())
    assert levels(publisher) == {"chat:low": "L1", "chat:medium": "L1"}


# ------------------------------------------------------------------ before the topic is read
def test_before_the_topic_is_read_nothing_is_deleted_and_once_read_every_tenant_is_replaced(
        core: WorkerCore, publisher: FakePublisher, clock: Clock) -> None:
    """A restarted worker that could not read the overrides in time must not lift a block the
    previous owner wrote for an override; once it has read them it writes the layered sets."""
    layer = OverrideLayer(core, publisher, WorkerMetrics(), PARTITIONS, clock=clock)  # not ready
    partition, _ = spend(core, "acme", "60")
    block = override(clock, tiers=("low",))
    stale = {"level": "L1", "rule": "gone"}
    previous = {"*:low": block.verdict(), "old:low": stale}  # what the previous owner wrote
    publisher.hashes["acme"] = dict(previous)

    async def scenario() -> None:
        await layer.republish_partition(partition)  # on_recovered after overrides_wait_s
        assert publisher.hashes["acme"]["*:low"] == previous["*:low"]  # the block stays
        assert levels(publisher) == {"*:low": "block", "old:low": "L1", "chat:low": "L1", "chat:medium": "L1"}

        await put(layer, block)  # read while catching up: not written on a partial book
        assert levels(publisher)["old:low"] == "L1"
        await layer.tick()
        assert levels(publisher)["old:low"] == "L1"

        layer.ready.set()
        await layer.tick()  # replaced with the overrides layered: stale fields go, the block stays
        assert levels(publisher) == {"*:low": "block", "chat:medium": "L1"}
        calls = len(publisher.calls)
        await layer.tick()
        assert len(publisher.calls) == calls  # once

    asyncio.run(scenario())
