"""Follow a small compacted topic from its beginning, forever, outside any consumer group.

Rule sets and manual overrides travel this way: every worker must see every record (a group
would split them), and compaction keeps the newest record per key, so a new worker starts
from the current state. ``caught_up`` is set once the records that existed when following
began have been handed over, so the worker can wait for them before it publishes anything
(a restarted worker must not briefly forget an override).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Optional

from spendwarden.logs import get_logger

log = get_logger("spendwarden.follow")

OnMessage = Callable[[Optional[bytes], Optional[bytes]], Awaitable[None]]


async def follow_topic(bootstrap: str, topic: str, on_message: OnMessage, *,
                       caught_up: Optional[asyncio.Event] = None, stop: Optional[asyncio.Event] = None,
                       fetch_wait_ms: int = 100, client_options: dict[str, Any] | None = None) -> None:
    """Call ``on_message(key, value)`` for every record of ``topic`` (tombstones: value None).

    Errors are logged and the topic is read again from the start after a pause: handlers must
    be idempotent (both the rules and the override handlers are: the newest record per key wins).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    stop = stop or asyncio.Event()
    while not stop.is_set():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=fetch_wait_ms,
                                    metadata_max_age_ms=2000, **(client_options or {}))
        try:
            await consumer.start()
            await consumer.topics()  # metadata
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                log.warning("topic to follow does not exist yet, retrying", topic=topic)
                if caught_up is not None:
                    caught_up.set()  # nothing to wait for
                await asyncio.sleep(2)
                continue
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            log.info("following topic", topic=topic, partitions=len(tps))
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200 if caught_up and not caught_up.is_set() else 1000)
                for messages in batches.values():
                    for message in messages:
                        await on_message(message.key, message.value)
                if caught_up is not None and not caught_up.is_set() and await _at_end(consumer, tps, ends, batches):
                    caught_up.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - log and retry, never crash the worker
            log.warning("topic unavailable, retrying", topic=topic, error=type(exc).__name__)
            await asyncio.sleep(2)
        finally:
            await consumer.stop()


async def _at_end(consumer: Any, tps: list[Any], ends: dict[Any, int], batches: dict[Any, Any]) -> bool:
    """Every partition read up to the end it had when following began. The end a fetch reports
    (high watermark) is trusted over ListOffsets, which some brokers answer with the first offset
    of the last batch; a poll that returned nothing confirms the end."""
    for tp in tps:
        position = await consumer.position(tp)
        highwater = consumer.highwater(tp)
        end = max(ends.get(tp, 0), highwater or 0)
        if position < end or (highwater is None and ends.get(tp, 0) > 0 and batches):
            return False
    return True
