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
RETRY_PAUSE_S = 2.0


async def follow_topic(bootstrap: str, topic: str, on_message: OnMessage, *,
                       caught_up: Optional[asyncio.Event] = None, stop: Optional[asyncio.Event] = None,
                       fetch_wait_ms: int = 100, client_options: dict[str, Any] | None = None,
                       retry: bool = True) -> None:
    """Call ``on_message(key, value)`` for every record of ``topic`` (tombstones: value None).

    Kafka errors are logged and reading goes on after a pause from the records not handed over
    yet (reading old records again would briefly re-apply, say, a cleared override); with
    ``retry=False`` (a command reading once) the first one is raised. A handler that raises is
    logged and its record passed over.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    stop = stop or asyncio.Event()
    handed: dict[int, int] = {}  # partition -> offset after the last record handed over
    while not stop.is_set():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=fetch_wait_ms,
                                    metadata_max_age_ms=2000, **(client_options or {}))
        try:
            await consumer.start()
            partitions = await topic_partitions(consumer._client, topic)
            if partitions is None:
                log.warning("topic to follow does not exist yet, retrying", topic=topic)
                if caught_up is not None:
                    caught_up.set()  # nothing to wait for
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if not partitions:
                raise KafkaNotReady(f"topic {topic!r} has no partitions yet")
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in handed:
                    consumer.seek(tp, handed[tp.partition])
            fresh = [tp for tp in tps if tp.partition not in handed]
            if fresh:
                await consumer.seek_to_beginning(*fresh)
            ends = await consumer.end_offsets(tps)
            log.info("following topic", topic=topic, partitions=len(tps), resumed=bool(handed))
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200 if caught_up and not caught_up.is_set() else 1000)
                for messages in batches.values():
                    for message in messages:
                        await _hand_over(on_message, topic, message)
                        handed[message.partition] = message.offset + 1
                if caught_up is not None and not caught_up.is_set() and await _at_end(consumer, tps, ends, batches):
                    caught_up.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - log and retry, never crash the worker
            if not retry:
                raise
            log.warning("topic unavailable, retrying", topic=topic, error=type(exc).__name__)
            await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            await consumer.stop()


class KafkaNotReady(Exception):
    """The topic exists but cannot be read yet (retried like any Kafka error)."""


async def topic_partitions(client: Any, topic: str) -> Optional[set[int]]:
    """The topic's partitions, or None when the broker answers that it does not exist.

    Asks for this one topic, without auto-creation: an all-topics answer silently leaves out the
    topics the principal may not Describe, which would look like a missing topic. Any other
    answer (no Describe right, no leader yet) raises its KafkaError.
    """
    from aiokafka import errors
    from aiokafka.protocol.metadata import MetadataRequest

    node = client.get_random_node()
    if node is None:
        raise errors.KafkaConnectionError("no broker known")
    response = await client.send(node, MetadataRequest([topic], allow_auto_topic_creation=False))
    for entry in response.topics:
        if entry[1] != topic:
            continue
        error = errors.for_code(entry[0])
        if error is errors.NoError:
            return {partition[1] for partition in entry[-1]}
        if error is errors.UnknownTopicOrPartitionError:
            return None
        raise error(f"metadata of topic {topic!r}")
    raise errors.KafkaError(f"the broker's metadata answer leaves out topic {topic!r}")


async def _hand_over(on_message: OnMessage, topic: str, message: Any) -> None:
    """A handler's own failure is logged and the record passed over: it is not the topic's fault,
    and reading the topic again would only meet the same record."""
    try:
        await on_message(message.key, message.value)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a handler bug must not stop (or rewind) the follower
        log.error("record handler failed; record passed over", topic=topic, partition=message.partition,
                  offset=message.offset, error=f"{type(exc).__name__}: {exc}"[:300])


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
