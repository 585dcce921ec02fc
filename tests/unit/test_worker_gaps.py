"""WorkerCore's offset bookkeeping: what a batch must be preceded by before it is counted."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from conftest import build_ruleset
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook
from spendwarden.streams.worker_core import Record, WorkerCore

RULES = """
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 1000}
"""


def core() -> WorkerCore:
    return WorkerCore(build_ruleset(RULES), Ingest(Pricebook.default()))


def record(partition: int, offset: int, cost: str = "1.5") -> Record:
    event = {"cost_event_id": f"p{partition}-o{offset}", "ts": datetime.now(timezone.utc).isoformat(),
             "tenant_id": "acme", "use_case_id": "chat", "allocated_cost_usd": cost}
    return Record(partition, offset, b"acme", orjson.dumps(event), "events")


def spend_nanos(worker: WorkerCore, partition: int) -> int:
    return sum(v[0] for k, v in worker.engines[partition].state.items() if k[0] == "spend")


def test_a_resumed_partition_reports_records_it_was_never_given() -> None:
    worker = core()
    worker.load_partition(0, (), next_offset=1776)  # the checkpoint covers offsets up to 1775
    batch = [record(0, 1777), record(0, 1778)]
    assert worker.gaps(batch) == [(0, 1776, 1777)]


def test_replays_and_contiguous_batches_are_not_gaps() -> None:
    worker = core()
    worker.load_partition(0, (), next_offset=10)
    assert worker.gaps([record(0, 7), record(0, 8), record(0, 9), record(0, 10)]) == []
    worker.handle([record(0, 7), record(0, 8), record(0, 9), record(0, 10)])
    assert worker.next_offset[0] == 11
    assert worker.gaps([record(0, 11), record(1, 0)]) == []  # partition 1 has no expectation yet


def test_a_jump_inside_a_batch_and_across_batches_is_found() -> None:
    worker = core()
    worker.handle([record(2, 0), record(2, 1)])
    assert worker.gaps([record(2, 2), record(2, 5), record(2, 6)]) == [(2, 3, 5)]
    assert worker.gaps([record(2, 4)]) == [(2, 2, 4)]


def test_a_replayed_older_record_does_not_move_the_expectation_back() -> None:
    worker = core()
    worker.handle([record(3, 0), record(3, 1), record(3, 2)])
    worker.handle([record(3, 1)])  # a redelivery, fenced by the engine
    assert worker.next_offset[3] == 3
    assert spend_nanos(worker, 3) == 3 * 1_500_000_000


def test_dropping_a_partition_forgets_its_expectation() -> None:
    worker = core()
    worker.load_partition(0, (), next_offset=5)
    worker.drop_partition(0)
    assert worker.gaps([record(0, 9)]) == []


def test_second_stage_offsets_are_tracked_apart_from_the_counted_topic() -> None:
    worker = core()
    worker.load_partition(1, (), next_offset=100, next_delta_offset=40)
    worker.apply_deltas(1, {"budget": "uc-day", "instance": ["acme", "chat"], "source": 1, "entries": []}, 40)
    delta = Record(1, 42, b"k", b"{}", "deltas")
    assert worker.gaps([delta], worker.next_delta_offset) == [(1, 41, 42)]
    assert worker.gaps([record(1, 100)]) == []
