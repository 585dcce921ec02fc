"""What the worker does with a batch of records, without Faust: the testable middle layer.

Records in (partition, offset, raw bytes) → ingest → one Engine per partition → effects,
dead letters and the state keys to checkpoint. The Faust wiring (``streams/service.py``)
only moves bytes between topics, this class and Redis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from spendwarden.logs import get_logger
from spendwarden.rules.compiler import RuleSet
from spendwarden.streams import reservations
from spendwarden.streams.checkpoint import DirtyState, checkpoint_order
from spendwarden.streams.effects import Effect
from spendwarden.streams.engine import GLOBAL, Engine
from spendwarden.streams.engine_state import position
from spendwarden.streams.events import Outcome
from spendwarden.exceptions import RejectedEvent
from spendwarden.streams.ingest import Ingest, Rejection

log = get_logger("spendwarden.worker")


@dataclass(slots=True)
class Record:
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    topic: str = ""


@dataclass
class BatchResult:
    """Effects per partition, dead letters, and the newest position and event time seen."""

    effects: dict[int, list[Effect]] = field(default_factory=dict)
    dead_letters: list[tuple[Optional[bytes], dict[str, Any]]] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    newest_event_ts: Optional[float] = None
    # Stage-one entries for budgets spanning tenants, grouped per (budget, instance), per partition.
    deltas: dict[int, dict[tuple[str, tuple[str, ...]], list[list[Any]]]] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0
    too_late: int = 0
    # Business outcomes taken in by the engines, repeated ids, and those older than the horizon.
    outcomes: int = 0
    outcome_duplicates: int = 0
    outcome_too_late: int = 0
    # Reservable budgets' spend per partition: ({tenant: {field: value}}, {tenant: settled event ids}).
    reserved: dict[int, tuple[dict[str, Any], dict[str, list[str]]]] = field(default_factory=dict)


class WorkerCore:
    """Engines per owned partition over dirty-tracking state."""

    def __init__(self, rules: RuleSet, ingest: Ingest, *, dedupe_horizon_s: float = 7 * 86400,
                 two_stage: bool = True) -> None:
        self.rules = rules
        self.ingest = ingest
        self.horizon = dedupe_horizon_s
        self.two_stage = two_stage
        self.engines: dict[int, Engine] = {}
        # Fence for Redis writes: newest source position the state reflects (checkpoint or processing).
        self.positions: dict[int, int] = {}
        # The next source offset each partition's state is waiting for (None: not known yet).
        self.next_offset: dict[int, Optional[int]] = {}
        # The same for the second-stage (cross-tenant deltas) topic, co-partitioned with the first.
        self.next_delta_offset: dict[int, Optional[int]] = {}

    # -------------------------------------------------------------- partitions
    def load_partition(self, partition: int, items: Iterable[tuple[tuple[Any, ...], Any]],
                       next_offset: Optional[int] = None, next_delta_offset: Optional[int] = None) -> Engine:
        """(Re)build the engine of a partition from checkpointed state.

        ``next_offset`` is the first source offset the checkpoint does not cover (from its end
        marker); records must resume there or earlier, anything later is a gap (``gaps``).
        """
        state = DirtyState(items)
        engine = Engine(self.rules, state, dedupe_horizon_s=self.horizon, emit_cross_tenant=self.two_stage,
                        track_reservations=True)
        state.dirty.clear()
        self.engines[partition] = engine
        # The newest position the checkpoint reflects: Redis writes are fenced at or after it.
        applied = [v[1] for k, v in state.items() if k[0] == "spend" and isinstance(v[1], int)]
        self.positions[partition] = max(applied, default=0)
        self.next_offset[partition] = next_offset
        self.next_delta_offset[partition] = next_delta_offset
        return engine

    def drop_partition(self, partition: int) -> None:
        self.engines.pop(partition, None)
        self.positions.pop(partition, None)
        self.next_offset.pop(partition, None)
        self.next_delta_offset.pop(partition, None)

    def gaps(self, records: Iterable[Record], expected_next: Optional[dict[int, Optional[int]]] = None,
             ) -> list[tuple[int, int, int]]:
        """(partition, first missing offset, first offset present) for every jump forward.

        A record earlier than expected is a replay (the engine's fences make it harmless); one
        later than expected means the records in between reached neither the state nor this
        batch, and must be read before it. Pure: the caller fetches. ``expected_next`` defaults
        to the counted topic's expectations (``next_delta_offset`` for the second stage).
        """
        expected = dict(self.next_offset if expected_next is None else expected_next)
        found: list[tuple[int, int, int]] = []
        for record in records:
            want = expected.get(record.partition)
            if want is not None and record.offset > want:
                found.append((record.partition, want, record.offset))
            _advance(expected, record.partition, record.offset)
        return found

    def engine(self, partition: int) -> Engine:
        found = self.engines.get(partition)
        return found if found is not None else self.load_partition(partition, ())

    def dirty(self, partition: int) -> Iterable[tuple[tuple[Any, ...], Any]]:
        """Changed keys for the checkpoint, in the order they must be written (checkpoint_order)."""
        engine = self.engines[partition]
        engine.sync_state()
        assert isinstance(engine.state, DirtyState)
        return checkpoint_order(engine.state.take_dirty())

    def tenants(self, partition: int) -> list[str]:
        engine = self.engines.get(partition)
        if engine is None:
            return []
        return [key[1] for key in engine.state if key[0] == "clock" and key[1] != GLOBAL]

    # -------------------------------------------------------------- processing
    def handle(self, records: Iterable[Record], now: float | None = None) -> BatchResult:
        """Ingest and count a batch; never raises on input."""
        now = time.time() if now is None else now
        result = BatchResult()
        for record in records:
            engine = self.engine(record.partition)
            # Cost events and outcomes (docs/traces.md, "Outcomes in") in record order: the index
            # among the record's good items is the position's, so a replay repeats positions.
            items, rejections = self.ingest.parse_items(record.value, now)
            for rejection in rejections:
                source = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
                result.dead_letters.append((record.key, rejection.to_dead_letter(record.value, source)))
            stats = engine.stats
            before = (stats.duplicates, stats.too_late, stats.outcomes, stats.outcome_duplicates,
                      stats.outcome_too_late)
            outcomes = 0
            sink = result.effects.setdefault(record.partition, [])
            for index, item in enumerate(items):
                if isinstance(item, Outcome):
                    outcomes += 1
                    sink.extend(engine.process_outcome(item, position(record.offset, index)))
                    continue
                sink.extend(engine.process(item, position(record.offset, index)))
                if result.newest_event_ts is None or item.ts > result.newest_event_ts:
                    result.newest_event_ts = item.ts
            result.events += len(items) - outcomes
            result.duplicates += stats.duplicates - before[0]
            result.too_late += stats.too_late - before[1]
            if outcomes:
                result.outcomes += stats.outcomes - before[2]
                result.outcome_duplicates += stats.outcome_duplicates - before[3]
                result.outcome_too_late += stats.outcome_too_late - before[4]
            if engine.deltas:
                grouped = result.deltas.setdefault(record.partition, {})
                for budget, inst, pos, nanos, ts in engine.deltas:
                    grouped.setdefault((budget, inst), []).append([pos, nanos, ts])
                engine.deltas.clear()
            pos = position(record.offset, max(0, len(items) - 1))
            result.positions[record.partition] = pos
            self.positions[record.partition] = pos
            _advance(self.next_offset, record.partition, record.offset)
        for partition in result.positions:
            engine = self.engines[partition]
            if engine.reserved or engine.settled:
                result.reserved[partition] = reservations.take(engine)
        return result

    def apply_deltas(self, partition: int, payload: dict[str, Any], offset: Optional[int] = None) -> list[Effect]:
        """Stage two: sum one record of stage-one entries into the cross-tenant budget it names."""
        engine = self.engine(partition)
        if offset is not None:
            _advance(self.next_delta_offset, partition, offset)
        inst = tuple(payload["instance"])
        effects: list[Effect] = []
        for pos, nanos, ts in payload["entries"]:
            effects.extend(engine.apply_delta(payload["budget"], inst, f"p{payload['source']}", pos, nanos, ts))
        return effects

    def skip_delta(self, partition: int, offset: int) -> None:
        """A second-stage record that cannot be read is passed over, not expected again."""
        _advance(self.next_delta_offset, partition, offset)

    def tick(self, now: float | None = None) -> dict[int, list[Effect]]:
        """Advance every owned engine to the wall clock."""
        now = time.time() if now is None else now
        return {p: engine.advance(now) for p, engine in self.engines.items()}

    def set_rules(self, rules: RuleSet) -> dict[int, list[Effect]]:
        """Swap rules in every engine; budget state is kept (a lower limit applies to spend so far)."""
        self.rules = rules
        return {p: engine.set_rules(rules) for p, engine in self.engines.items()}

    def verdicts(self, partition: int) -> dict[str, dict[str, dict[str, Any]]]:
        """Every owned tenant's current decision set (for a full republish)."""
        engine = self.engines.get(partition)
        if engine is None:
            return {}
        found: dict[str, dict[str, dict[str, Any]]] = {tenant: {} for tenant in self.tenants(partition)}
        for tenant, field_name, verdict in engine.all_verdicts():
            found.setdefault(tenant, {})[field_name] = verdict
        return found


def _advance(expected: dict[int, Optional[int]], partition: int, offset: int) -> None:
    known = expected.get(partition)
    expected[partition] = offset + 1 if known is None else max(known, offset + 1)


def route_by_tenant(raw: bytes, ingest: Ingest) -> tuple[list[tuple[bytes, bytes]], list[Rejection]]:
    """Split a record into one JSON-array record per tenant, keyed by tenant (for repartitioning).

    Only decoding and the tenant id are checked here; full validation happens where the events
    are counted, so a bad event still reaches the dead-letter topic with its reason.
    """
    try:
        items = ingest.decode(raw)
    except RejectedEvent as exc:
        return [], [Rejection.of(exc)]
    groups: dict[str, list[object]] = {}
    rejections = []
    for index, item in enumerate(items):
        tenant = item.get("tenant_id") if isinstance(item, dict) else None
        if not isinstance(tenant, str) or not tenant:
            rejections.append(Rejection("invalid", "tenant_id: missing or not a string, cannot route",
                                        "tenant_id", index))
            continue
        groups.setdefault(tenant, []).append(item)
    import orjson

    return [(tenant.encode(), orjson.dumps(group)) for tenant, group in groups.items()], rejections
