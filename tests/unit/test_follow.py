"""follow_topic against a fake aiokafka consumer: what is handed over, once, after errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import aiokafka
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from spendwarden.streams import follow
from spendwarden.streams.follow import follow_topic

TOPIC = "spendwarden.overrides"


@dataclass
class Message:
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]


@dataclass
class Broker:
    """One topic's records by partition (None: the topic does not exist) and scripted trouble."""

    records: Optional[dict[int, list[tuple[bytes, bytes]]]]
    metadata_error: int = 0  # error code the metadata answer carries for the topic
    fail_polls: set[int] = field(default_factory=set)  # getmany calls (1-based, overall) that raise
    polls: int = 0
    starts: int = 0
    batch: int = 2


class FakeClient:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def get_random_node(self) -> int:
        return 1

    async def send(self, node: int, request: Any) -> Any:
        assert request._topics == [TOPIC] and request._allow_auto_topic_creation is False
        broker = self.broker
        if broker.records is None:
            entry = (3, TOPIC, False, [])  # UNKNOWN_TOPIC_OR_PARTITION
        elif broker.metadata_error:
            entry = (broker.metadata_error, TOPIC, False, [])
        else:
            entry = (0, TOPIC, False, [(0, p, 1, [1], [1], []) for p in broker.records])

        class Answer:
            topics = [entry]

        return Answer()


class FakeConsumer:
    def __init__(self, broker: Broker, **options: Any) -> None:
        self.broker = broker
        self._client = FakeClient(broker)
        self.next: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        self.broker.starts += 1

    async def stop(self) -> None:
        pass

    def assign(self, tps: list[TopicPartition]) -> None:
        self.tps = tps

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.next[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        assert tps
        for tp in tps:
            self.next[tp] = 0

    def _log(self, tp: TopicPartition) -> list[tuple[bytes, bytes]]:
        assert self.broker.records is not None
        return self.broker.records[tp.partition]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self._log(tp)) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.next[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return len(self._log(tp))

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[Message]]:
        self.broker.polls += 1
        if self.broker.polls in self.broker.fail_polls:
            raise KafkaConnectionError("broker went away")
        out = {}
        for tp in self.tps:
            start = self.next[tp]
            found = self._log(tp)[start:start + self.broker.batch]
            if found:
                out[tp] = [Message(tp.partition, start + i, k, v) for i, (k, v) in enumerate(found)]
                self.next[tp] = start + len(found)
        await asyncio.sleep(0.001)
        return out


def follow_until(broker: Broker, monkeypatch: pytest.MonkeyPatch, done: Callable[[list[Any], asyncio.Event], bool],
                 handler: Optional[Callable[[Any], None]] = None) -> tuple[list[Any], asyncio.Event]:
    """Run follow_topic on ``broker`` until ``done(handed, caught_up)`` (at most 2 s)."""
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", lambda **options: FakeConsumer(broker, **options))
    monkeypatch.setattr(follow, "RETRY_PAUSE_S", 0.01)
    handed: list[Any] = []

    async def on_message(key: Optional[bytes], value: Optional[bytes]) -> None:
        handed.append((key, value))
        if handler is not None:
            handler((key, value))

    async def scenario() -> asyncio.Event:
        caught_up, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(follow_topic("fake:9092", TOPIC, on_message, caught_up=caught_up, stop=stop))
        for _ in range(2000):
            if done(handed, caught_up):
                break
            await asyncio.sleep(0.001)
        stop.set()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return caught_up

    caught_up = asyncio.run(scenario())
    return handed, caught_up


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"v{i}".encode()) for i in range(n)]


def test_a_failing_handler_is_passed_over_not_a_reason_to_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker({0: records(6)})

    def handler(message: Any) -> None:
        if message[1] == b"v2":
            raise ValueError("bug in the handler")

    handed, caught_up = follow_until(broker, monkeypatch, lambda h, c: c.is_set(), handler)
    assert handed == records(6) and caught_up.is_set()
    assert broker.starts == 1  # never restarted


def test_after_a_kafka_error_reading_resumes_where_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading from the beginning again would re-apply, say, a block that was cleared since."""
    broker = Broker({0: records(7), 1: records(3)}, fail_polls={2, 4})
    handed, caught_up = follow_until(broker, monkeypatch, lambda h, c: c.is_set())
    assert broker.starts == 3
    assert sorted(handed) == sorted(records(7) + records(3))  # each record once
    assert caught_up.is_set()


def test_a_missing_topic_counts_as_read_but_a_refused_describe_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    _, caught_up = follow_until(Broker(None), monkeypatch, lambda h, c: c.is_set())
    assert caught_up.is_set()

    broker = Broker({0: records(2)}, metadata_error=29)  # TOPIC_AUTHORIZATION_FAILED
    handed, caught_up = follow_until(broker, monkeypatch, lambda h, c: broker.starts >= 3)
    assert not caught_up.is_set() and handed == []


def test_read_book_reads_to_the_end_once_and_raises_a_kafka_error_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.errors import TopicAuthorizationFailedError

    from spendwarden.streams.override_feed import read_book
    from spendwarden.streams.overrides import Override

    block = Override(tenant_id="acme", action="block", reason="r", author="alice", created_at=1.0, expires_at=2.0)
    broker = Broker({0: [(block.scope_key, block.to_record()), (b"acme|*|*", b"{bad")]})
    monkeypatch.setattr(aiokafka, "AIOKafkaConsumer", lambda **options: FakeConsumer(broker, **options))
    book, problems = asyncio.run(read_book("fake:9092", TOPIC, timeout_s=2))
    assert [o.author for o in book.all()] == ["alice"] and len(problems) == 1

    broker = Broker({0: []}, metadata_error=29)  # no Describe right: said at once, not after the timeout
    started = time.monotonic()
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(read_book("fake:9092", TOPIC, timeout_s=10))
    assert broker.starts == 1 and time.monotonic() - started < 2
