"""Replay input from a range of a real Kafka topic, read without a consumer group.

Why group-less: a replay for tuning rules or rebuilding state must not join (and rebalance)
the live workers' group, nor commit offsets. The range is given per topic as times (the
first offset at or after each time, found with ListOffsets by timestamp) or offsets, and ends
at the log end seen when the replay starts, so a replay of a live topic terminates.

Partitions are merged by record timestamp (k-way, one buffered record per partition at
least), because the engine's clock follows event time: reading partition 0 to its end before
partition 1 would make partition 1's events look late. Records get a running sequence number
as their replay position, like line numbers of a file, so positions grow for every tenant
even when producers keyed records otherwise; ``current`` tells where the last one came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spendwarden.exceptions import ConfigError

SCHEME = "kafka://"
STALL_ROUNDS = 30  # one-second fetches with no record before a replay gives up on a range


@dataclass(frozen=True)
class RangeBound:
    """A start or end of the range: an epoch-millisecond time or an offset (same on every partition)."""

    time_ms: int | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str | None, flag: str) -> "RangeBound | None":
        """``None``, an offset (``12345``) or an ISO 8601 time with a zone (``2026-11-01T00:00Z``)."""
        if text is None:
            return None
        if text.isdigit():
            return cls(offset=int(text))
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{flag}: {text!r} is neither an offset nor an ISO 8601 time "
                              "(e.g. 2026-11-01T00:00Z)") from None
        if when.tzinfo is None:
            raise ConfigError(f"{flag}: {text!r} has no time zone; add Z or an offset such as +01:00")
        return cls(time_ms=round(when.timestamp() * 1000))


def topic_of(url: str) -> str:
    """The topic of ``kafka://TOPIC``; the broker comes from settings (SPENDWARDEN_KAFKA_BOOTSTRAP)."""
    topic = url[len(SCHEME):].strip("/")
    if not topic or "/" in topic:
        raise ConfigError(f"{url}: expected kafka://TOPIC (the broker comes from SPENDWARDEN_KAFKA_BOOTSTRAP)")
    return topic


class KafkaRangeSource:
    """Records of ``topic`` between ``start`` and ``end`` as ``(sequence, raw bytes)``, in
    record-timestamp order across partitions. ``total_bytes``/``bytes_read`` count offsets
    (the replay progress bar reads them as done/total). Iterate once, or call ``close()``."""

    def __init__(self, bootstrap: str, topic: str, start: RangeBound | None = None,
                 end: RangeBound | None = None, partitions: list[int] | None = None,
                 fetch_max_wait_ms: int = 100, client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options or {}  # TLS/SASL (spendwarden.kafka_security)
        self.topic = topic
        self.path = f"{SCHEME}{topic}"  # how reports name the input
        self.start = start
        self.end = end
        self.partitions = partitions
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.total_bytes: int | None = None
        self.bytes_read = 0
        self.current: tuple[int, int] | None = None  # (partition, offset) of the last record
        self.ranges: dict[int, tuple[int, int]] = {}  # partition -> [first, end)
        self._to_log_end: set[int] = set()  # partitions whose range runs to the log end
        self._loop = asyncio.new_event_loop()
        self._consumer: Any = None

    def locate(self, sequence: int) -> dict[str, Any]:
        """Where the record just yielded came from, for dead-letter reports."""
        partition, offset = self.current or (None, None)
        return {"topic": self.topic, "partition": partition, "offset": offset, "sequence": sequence}

    def open(self) -> "KafkaRangeSource":
        """Connect and resolve the range; raises ConfigError with one line on a bad topic or broker."""
        try:
            self._loop.run_until_complete(self._open())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the consumer and the private loop (safe to call twice; iteration calls it)."""
        if self._loop.is_closed():
            return
        if self._consumer is not None:
            self._loop.run_until_complete(self._stop())
            self._consumer = None
        self._loop.close()

    async def _open(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        self._consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=self.fetch_max_wait_ms, **self.client_options)
        try:
            await consumer.start()
        except KafkaError as exc:
            raise ConfigError(f"cannot connect to Kafka at {self.bootstrap}: {exc}") from None
        known = consumer.partitions_for_topic(self.topic)
        if not known:
            raise ConfigError(f"topic {self.topic!r} not found on {self.bootstrap}")
        wanted = sorted(known) if self.partitions is None else self.partitions
        missing = sorted(set(wanted) - set(known))
        if missing:
            raise ConfigError(f"topic {self.topic!r} has no partition {missing[0]} (it has {sorted(known)})")
        tps = [TopicPartition(self.topic, p) for p in wanted]
        try:
            firsts = await consumer.beginning_offsets(tps)
            lasts = await consumer.end_offsets(tps)
            starts = await self._resolve(tps, self.start, firsts, lasts)
            ends = await self._resolve(tps, self.end, lasts, lasts)
        except KafkaError as exc:
            raise ConfigError(f"cannot read offsets of {self.topic!r}: {exc}") from None
        for tp in tps:
            first = max(starts[tp], firsts[tp])
            self.ranges[tp.partition] = (first, max(first, min(ends[tp], lasts[tp])))
            if ends[tp] >= lasts[tp]:
                self._to_log_end.add(tp.partition)
        self.total_bytes = sum(end - first for first, end in self.ranges.values())
        live = [tp for tp in tps if self.ranges[tp.partition][0] < self.ranges[tp.partition][1]]
        consumer.assign(live)
        for tp in live:
            consumer.seek(tp, self.ranges[tp.partition][0])

    async def _resolve(self, tps: list[Any], bound: RangeBound | None, default: dict[Any, int],
                       lasts: dict[Any, int]) -> dict[Any, int]:
        if bound is None:
            return dict(default)
        if bound.offset is not None:
            return {tp: bound.offset for tp in tps}
        found = await self._consumer.offsets_for_times({tp: bound.time_ms for tp in tps})
        # No record at or after the time: the log end (some brokers answer timestamp -1 instead).
        return {tp: (found[tp].offset if found.get(tp) is not None and found[tp].timestamp >= 0 else lasts[tp])
                for tp in tps}

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self._consumer is None:
            self.open()
        try:
            yield from self._merged()
        finally:
            self.close()

    async def _stop(self) -> None:
        # aiokafka's stop() right after start() can raise CancelledError from its own tasks;
        # one loop turn first lets them start. Nothing is committed here, so a failed stop
        # loses nothing.
        await asyncio.sleep(0)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._consumer.stop()

    def _extend_to_high_watermark(self, partition: int) -> None:
        """A range that runs to the log end ends at the high watermark of the first fetch: some
        brokers' ListOffsets (Tansu 0.6) answer the first offset of the last batch instead."""
        if partition not in self._to_log_end:
            return
        from aiokafka import TopicPartition

        watermark = self._consumer.highwater(TopicPartition(self.topic, partition))
        if watermark is not None:
            first, end = self.ranges[partition]
            self.ranges[partition] = (first, max(end, watermark))
            self._to_log_end.discard(partition)

    def _merged(self) -> Iterator[tuple[int, bytes]]:
        buffers: dict[int, deque[Any]] = {p: deque() for p, (a, b) in self.ranges.items() if a < b}
        heap: list[tuple[int, int, int]] = []  # (timestamp ms, partition, offset) of each buffer's head
        sequence = 0
        idle_rounds = 0
        while buffers or heap:
            starving = [p for p, buffer in buffers.items() if not buffer]
            if starving:  # every unfinished partition needs its next record before merging
                fetched = self._loop.run_until_complete(self._fetch(starving))
                for partition in {message.partition for message in fetched}:
                    self._extend_to_high_watermark(partition)
                for message in fetched:
                    partition = message.partition
                    if message.offset < self.ranges[partition][1] and partition in buffers:
                        buffer = buffers[partition]
                        if not buffer:  # an empty buffer has no head in the heap
                            heapq.heappush(heap, (message.timestamp, partition, message.offset))
                        buffer.append(message)
                self._drop_finished(buffers)
                idle_rounds = 0 if fetched else idle_rounds + 1
                if idle_rounds >= STALL_ROUNDS:
                    where = ", ".join(f"{p} at {self._position(p)} of {self.ranges[p][1]}" for p in starving)
                    raise ConfigError(f"{self.topic}: no records for {STALL_ROUNDS} s on partitions {where}; "
                                      "was the range deleted by retention, or is a Read ACL missing?")
                continue
            _, partition, _ = heapq.heappop(heap)
            message = buffers[partition].popleft()
            sequence += 1
            self.bytes_read += 1
            self.current = (partition, message.offset)
            yield sequence, message.value if message.value is not None else b""
            if message.offset + 1 >= self.ranges[partition][1]:
                del buffers[partition]
            elif buffers[partition]:
                head = buffers[partition][0]
                heapq.heappush(heap, (head.timestamp, partition, head.offset))

    def _drop_finished(self, buffers: dict[int, deque[Any]]) -> None:
        """Partitions whose range was read up to a gap at its end (compacted or transaction markers)."""
        for partition in [p for p, buffer in buffers.items() if not buffer]:
            if self._position(partition) >= self.ranges[partition][1]:
                del buffers[partition]

    def _position(self, partition: int) -> int:
        from aiokafka import TopicPartition

        return int(self._loop.run_until_complete(self._consumer.position(TopicPartition(self.topic, partition))))

    async def _fetch(self, partitions: list[int]) -> list[Any]:
        from aiokafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in partitions]
        batches = await self._consumer.getmany(*tps, timeout_ms=1000)
        return [message for tp in tps for message in batches.get(tp, [])]
