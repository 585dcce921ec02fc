"""The router's durable state: groups, outbox entries and where each fingerprint was routed.

The router keeps its state in memory and writes every change straight to the state table's
changelog (compacted), the way the worker checkpoints (streams/checkpoint.py): keys are
``[partition, kind, name]`` as JSON, so each record lands in the partition of the source
records that produced it, and a process that is assigned partition p recovers exactly p's
state. A delete is a tombstone. Alerts are few, so each change set is written and flushed at
once, before the record that caused it is acknowledged.

Every write ends with a lone marker record per partition, flushed on its own, because Tansu
0.6.0 reports a partition's end as the first offset of its last record batch plus one, and
Faust's recovery stops there (docs/service.md): without the marker the rest of a
multi-record last batch would be skipped. On Kafka it costs one small record per write.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable, Optional

from spendwarden.streams.checkpoint import decode_key, decode_value, encode_key, encode_value

Change = tuple[int, tuple[str, ...], Optional[dict[str, Any]]]
MARKER = ("marker",)


class StateWriter:
    """Sends changes to the changelog through the app's producer, in call order."""

    def __init__(self, app: Any, topic_name: str) -> None:
        self.app = app
        self.topic = topic_name
        self._lock = asyncio.Lock()

    async def write(self, changes: Iterable[Change]) -> None:
        changes = list(changes)
        if not changes:
            return
        async with self._lock:  # FIFO: the changelog keeps the order the changes were made in
            producer = self.app.producer
            sent = []
            for partition, key, value in changes:
                raw = None if value is None else encode_value(value)
                sent.append(await producer.send(self.topic, encode_key(partition, key), raw, partition, None, None))
            await producer.flush()
            await asyncio.gather(*sent)
            marks = []
            for partition in sorted({c[0] for c in changes}):
                marks.append(await producer.send(self.topic, encode_key(partition, MARKER),
                                                 encode_value({"at": time.time()}), partition, None, None))
            await producer.flush()
            await asyncio.gather(*marks)


def recovered(items: Iterable[tuple[Any, Any]], partitions: set[int]
              ) -> dict[int, dict[str, list[tuple[str, Any]]]]:
    """The recovered table's entries of ``partitions``: {partition: {kind: [(name, value)]}}."""
    found: dict[int, dict[str, list[tuple[str, Any]]]] = {p: {} for p in partitions}
    for raw_key, raw_value in items:
        if raw_value is None:
            continue
        partition, key = decode_key(raw_key)
        if partition not in found or key == MARKER or len(key) != 2:
            continue
        found[partition].setdefault(str(key[0]), []).append((str(key[1]), decode_value(raw_value)))
    return found
