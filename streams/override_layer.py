"""The worker's side of manual overrides: the book it follows, applied wherever it writes Redis.

Each worker reads every override (the topic is followed outside the consumer group) but writes
only the tenants it owns, fenced like any other decision. A tenant is owned by the partition
whose engine holds it, or, for a tenant that never sent an event, by the partition Kafka's
default partitioner gives its id (producers key cost events by tenant id), so an operator can
block a tenant before its first call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable, Optional

from spendwarden.logs import get_logger
from spendwarden.streams.effects import DecisionChanged
from spendwarden.streams.overrides import OverrideBook, OverrideError, layer, resolve_field
from spendwarden.streams.periods import iso_utc
from spendwarden.streams.worker_core import WorkerCore

log = get_logger("spendwarden.overrides")


def default_partition(tenant_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, Java and aiokafka alike) gives the key."""
    from aiokafka.partitioner import murmur2

    return (murmur2(tenant_id.encode()) & 0x7FFFFFFF) % partitions


class OverrideLayer:
    """Keeps the override book and puts it on top of the rules' verdicts."""

    def __init__(self, core: WorkerCore, publisher: Any, metrics: Any, partitions: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self.publisher = publisher
        self.metrics = metrics
        self.partitions = partitions
        self.clock = clock
        self.book = OverrideBook()
        self.ready = asyncio.Event()  # set once the records present at start have been read
        # Held by every writer from computing a tenant's layered fields to their landing in Redis:
        # writes of one partition share a fence position, so the last to land wins, and it must be
        # the one computed last (a rule verdict computed before an override arrived, or an
        # override's verdict computed before it expired, must not land after).
        self.lock = asyncio.Lock()
        # Something was written before the topic was read (without deleting fields, so a block
        # written by the previous owner stayed): every owned tenant is replaced once it is read.
        self.unlayered = False

    # ------------------------------------------------------------ ownership
    def owner(self, tenant_id: str) -> int:
        for partition, engine in list(self.core.engines.items()):
            if ("clock", tenant_id) in engine.state:
                return partition
        return default_partition(tenant_id, self.partitions)

    def owned_tenants(self) -> list[str]:
        """Tenants with an override in force that this worker writes (they need heartbeats too)."""
        now = self.clock()
        return [t for t in self.book.tenants() if self.book.has_active(t, now) and self.owner(t) in self.core.engines]

    # ------------------------------------------------------------ the topic
    async def on_message(self, key: Optional[bytes], value: Optional[bytes]) -> None:
        """One record of the overrides topic: remember it, audit it, write the tenant if ours."""
        now = self.clock()
        try:
            tenant = self.book.apply(key, value, now)
        except OverrideError as exc:
            self.metrics.override_records.labels(outcome="refused").inc()
            log.error("override record refused", error=str(exc))
            return
        self.metrics.override_records.labels(outcome="applied").inc()
        if tenant is None:
            return
        override = next((o for o in self.book.all() if o.scope_key == key), None)
        if override is not None:
            log.info("override", scope=override.scope_text, action=override.action, author=override.author,
                     reason=override.reason, tiers=list(override.tiers), expires_at=iso_utc(override.expires_at),
                     state="cleared" if override.cleared_at is not None else
                     ("active" if override.active(now) else "expired"),
                     cleared_by=override.cleared_by)
        self._count(now)
        if self.owner(tenant) in self.core.engines:
            await self.republish([tenant])

    # ------------------------------------------------------------ writing
    async def publish_changes(self, changes: list[DecisionChanged], position: int) -> None:
        """Write the rules' changes of one partition with the overrides layered on top."""
        async with self.lock:
            layered = self.changes(changes)
            if layered:
                await self.publisher.apply(layered, position)

    def changes(self, changes: list[DecisionChanged]) -> list[DecisionChanged]:
        """The rules' changes as Redis must see them: overridden fields keep the override."""
        now = self.clock()
        out = []
        for change in changes:
            active = self.book.active(change.tenant_id, now) if self.book.has_active(change.tenant_id, now) else None
            if active:
                change = dataclasses.replace(change, verdict=resolve_field(change.field, change.verdict, active))
            out.append(change)
        return out

    def decision_sets(self, partition: int) -> dict[str, dict[str, dict[str, Any]]]:
        """A partition's whole published state: every tenant's rule verdicts with overrides on top,
        plus tenants known only from overrides (so an expired one is cleaned up too)."""
        now = self.clock()
        sets = self.core.verdicts(partition)
        for tenant in self.book.tenants():
            if tenant not in sets and self.owner(tenant) == partition:
                sets[tenant] = {}
        return {tenant: layer(fields, self.book.active(tenant, now)) for tenant, fields in sets.items()}

    async def republish_partition(self, partition: int) -> None:
        """Replace every tenant's hash of a partition (after it was recovered or Redis came back).

        Until the overrides topic has been read, the fields are only set, none deleted: deleting
        what the rules do not decide would also delete what overrides wrote (lift a person's
        block) because this worker does not know them yet. The replace follows on the first tick
        after the topic is read."""
        async with self.lock:
            sets = self.decision_sets(partition)
            if not sets:
                return
            if self.ready.is_set():
                await self._write(partition, sets)
                return
            self.unlayered = True
            at = iso_utc(self.clock())
            await self._write(partition, sets, changes=[
                DecisionChanged(tenant, name, verdict, at) for tenant, fields in sets.items()
                for name, verdict in fields.items()])

    async def republish(self, tenants: list[str]) -> None:
        """Replace these tenants' hashes with rules + overrides (after an override changed); before
        the topic has been read, wait for the full republish that follows (a partial book would
        delete fields of overrides not read yet)."""
        if not self.ready.is_set():
            self.unlayered = True
            return
        async with self.lock:
            now = self.clock()
            by_partition: dict[int, dict[str, dict[str, dict[str, Any]]]] = {}
            for tenant in tenants:
                partition = self.owner(tenant)
                engine = self.core.engines.get(partition)
                if engine is None:
                    continue
                by_partition.setdefault(partition, {})[tenant] = layer(engine.verdicts(tenant),
                                                                       self.book.active(tenant, now))
            for partition, sets in by_partition.items():
                await self._write(partition, sets)

    async def _write(self, partition: int, sets: dict[str, dict[str, dict[str, Any]]],
                     changes: Optional[list[DecisionChanged]] = None) -> None:
        """Replace these tenants' hashes (or, given ``changes``, only set those fields). Redis
        outages are the publisher's business (it marks the write failed, the service republishes);
        anything raised here is a bug for one tenant, so it is logged and the other tenants are
        written one by one."""
        position = self.core.positions.get(partition, 0)

        async def write(only: Optional[str] = None) -> None:
            if changes is None:
                await self.publisher.republish(sets if only is None else {only: sets[only]}, position)
            else:
                await self.publisher.apply([c for c in changes if only in (None, c.tenant_id)], position)

        try:
            await write()
            return
        except Exception as exc:  # noqa: BLE001 - one bad tenant must not keep the others out of Redis
            if len(sets) == 1:
                log.error("override write failed", tenant=next(iter(sets)), error=f"{type(exc).__name__}: {exc}"[:300])
                return
        for tenant in sets:
            try:
                await write(tenant)
            except Exception as exc:  # noqa: BLE001
                log.error("override write failed", tenant=tenant, error=f"{type(exc).__name__}: {exc}"[:300])

    async def tick(self) -> None:
        """Lift overrides whose time is up; once the topic has been read, replace what was written
        without it."""
        now = self.clock()
        changed = self.book.expire(now)
        for tenant in changed:
            log.info("override time is up", tenant=tenant)
        if changed:
            self._count(now)
        if self.unlayered and self.ready.is_set():
            self.unlayered = False
            log.info("overrides topic read: republishing every owned decision with overrides")
            for partition in sorted(self.core.engines):
                await self.republish_partition(partition)
        elif changed:
            await self.republish(sorted(changed))

    def _count(self, now: float) -> None:
        for action, count in self.book.counts(now).items():
            self.metrics.overrides_active.labels(action=action).set(count)
