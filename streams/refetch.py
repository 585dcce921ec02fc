"""Read back source records that Faust acknowledged without ever delivering them.

faust-streaming marks a message "skipped" when it reaches a stream while flow control is
paused or under a stale generation (around a rebalance), and *acknowledges* it, so the next
commit moves past a record no agent saw. Seen here: a restarted worker seeked to committed
offset 1776, the fetched record 1776 was skipped and acked, the agent's first batch began at
1777, and one event's cost was lost (docs/service.md, "Records Faust skips").

The worker therefore checks every batch against the offset its state expects next
(``WorkerCore.gaps``) and reads any missing range itself, with a plain aiokafka consumer that
has no group (so it commits nothing), before the batch is counted.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from spendwarden.streams.worker_core import Record


class Refetcher:
    """A group-less consumer, started on first use, that reads offset ranges of one topic."""

    def __init__(self, bootstrap: str, topic: str, *, fetch_max_wait_ms: int = 10,
                 client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options or {}  # TLS/SASL (spendwarden.kafka_security)
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._consumer: Optional[Any] = None

    async def _ensure(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            # earliest: a range already deleted by retention ends the read instead of hanging it
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        fetch_max_wait_ms=self.fetch_max_wait_ms, **self.client_options)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, partition: int, start: int, end: int, timeout_s: float = 30.0) -> list[Record]:
        """Records with ``start <= offset < end`` (offsets with no record, such as transaction
        markers, are simply absent). Raises TimeoutError if the range cannot be read."""
        from aiokafka import TopicPartition

        consumer = await self._ensure()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        found: list[Record] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise TimeoutError(f"could not read {self.topic}[{partition}] offsets {start}..{end - 1}")
            batches = await consumer.getmany(tp, timeout_ms=500)
            for message in batches.get(tp, []):
                if start <= message.offset < end:
                    found.append(Record(partition, message.offset, message.key, message.value, self.topic))
        return found

    async def resume_offsets(self, partitions: list[int], group: str) -> dict[int, int]:
        """Where ``group`` resumes each partition: its committed offset, else the log start."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False,
                                  **self.client_options)
        await reader.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            starts = await reader.beginning_offsets(tps)
            found: dict[int, int] = {}
            for tp in tps:
                committed = await reader.committed(tp)
                found[tp.partition] = int(committed if committed is not None else starts[tp])
            return found
        finally:
            await reader.stop()

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
