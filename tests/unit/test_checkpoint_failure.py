"""A checkpoint whose changelog writes fail must not count as written (docs/service.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from spendwarden.settings import Settings
from spendwarden.streams.service import Service
from test_worker_gaps import RULES, record


class FailingProducer:
    """Accepts sends; every delivery future fails, as an expired batch would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, Any, int]] = []

    async def send(self, topic: str, key: bytes, value: Any, partition: int, *_: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(RuntimeError("delivery failed"))
        return future


def test_failed_delivery_stops_the_checkpoint_and_keeps_its_keys_dirty(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", rules_dir=rules, data_dir=tmp_path / "data",
                        redis_url="redis://127.0.0.1:9/0", app_id="sw-unit-checkpoint")
    service = Service(settings)  # the Redis client connects on first use, which never comes
    producer = FailingProducer()
    service.app.producer = producer

    async def no_flush() -> None:
        return None

    service._flush_producer = no_flush
    service.core.handle([record(0, 0), record(0, 1)])
    changed = set(service.core.engines[0].state.dirty)
    assert changed

    with pytest.raises(RuntimeError, match="delivery failed"):
        asyncio.run(service._checkpoint([0]))

    assert producer.sent, "the keys were sent"
    assert not any(b"checkpoint" in key for _, key, _, _ in producer.sent), "no end marker after a failed key"
    assert set(service.core.engines[0].state.dirty) == changed  # everything will be sent again
    assert 0 not in service._marked


class AckingProducer(FailingProducer):
    """Every delivery succeeds."""

    async def send(self, topic: str, key: bytes, value: Any, partition: int, *_: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_spend_counters_advance_only_when_the_changelog_acknowledged_the_checkpoint(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", rules_dir=rules, data_dir=tmp_path / "data",
                        redis_url="redis://127.0.0.1:9/0", app_id="sw-unit-checkpoint")
    service = Service(settings)

    async def no_flush() -> None:
        return None

    service._flush_producer = no_flush
    service.core.load_partition(0, ())
    service.spend_metrics.restored(0, ())

    def exported() -> float:
        rows = [(k, v) for k, v in service.spend_metrics.snapshot().rows.get(0, [])]
        return sum(row[5] for _, row in rows) / 1e9

    service.core.handle([record(0, 0), record(0, 1)])
    service.app.producer = FailingProducer()
    with pytest.raises(RuntimeError, match="delivery failed"):
        asyncio.run(service._checkpoint([0]))
    assert exported() == 0  # counted, sent, not acknowledged: a restart would not restore it
    service.app.producer = AckingProducer()
    asyncio.run(service._checkpoint([0]))
    counted = sum(v[0] for k, v in service.core.engines[0].state.items() if k[0] == "spend") / 1e9
    assert exported() > 0 and exported() == counted


class FirstRoundFails(AckingProducer):
    """Every key but trace records fails: a batch of bucket keys that fails for good while a
    later batch of the same partition could still land."""

    async def send(self, topic: str, key: bytes, value: Any, partition: int, *_: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if b'"utrace"' in key:
            future.set_result(None)
        else:
            future.set_exception(RuntimeError("bucket batch failed"))
        return future


def test_trace_records_are_sent_only_after_every_other_key_landed(tmp_path: Path) -> None:
    """streams/checkpoint.WRITE_LAST: a unit bucket is derived from its trace record, so a trace
    record must never reach the changelog while a key it was derived with failed to."""
    from datetime import datetime, timezone

    import orjson

    from spendwarden.streams.worker_core import Record

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES + "rules:\n  - {name: watch, budget: uc-day, when: 'unit.day.outcomes >= 5.0'}\n")
    settings = Settings(kafka_bootstrap="127.0.0.1:9", rules_dir=rules, data_dir=tmp_path / "data",
                        redis_url="redis://127.0.0.1:9/0", app_id="sw-unit-checkpoint-order")
    service = Service(settings)
    producer = FirstRoundFails()
    service.app.producer = producer

    async def no_flush() -> None:
        return None

    service._flush_producer = no_flush
    now = datetime.now(timezone.utc).isoformat()
    event = {"cost_event_id": "e1", "trace_id": "t1", "ts": now, "tenant_id": "acme", "use_case_id": "chat",
             "allocated_cost_usd": "0.5"}
    service.core.handle([Record(0, 0, b"acme", orjson.dumps(event), "events")])
    assert any(key[0] == "utrace" for key in service.core.engines[0].state.dirty)

    with pytest.raises(RuntimeError, match="bucket batch failed"):
        asyncio.run(service._checkpoint([0]))
    assert producer.sent and not any(b'"utrace"' in key for _, key, _, _ in producer.sent)

    service.app.producer = ok = AckingProducer()
    asyncio.run(service._checkpoint([0]))
    kinds = [orjson.loads(key)[1] for _, key, _, _ in ok.sent]
    first_trace = kinds.index("utrace")
    assert "unit" in kinds[:first_trace] and set(kinds[first_trace:]) <= {"utrace", "checkpoint"}
