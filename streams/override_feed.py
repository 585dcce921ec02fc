"""The overrides topic: write one override record, or read them all (for ``override list``).

One compacted topic, one partition (overrides are few and must keep one order), keyed by scope.
The worker and the CLI both create it when it is missing, so an operator can block a tenant
before any worker has started; when it exists nothing is created, so writing an override
needs no Create right (Kafka refuses CreateTopics to a principal without it even for a topic
that exists). Production should create it beforehand with its usual replication (docs/overrides.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from spendwarden.embedded import TopicSpec, create_topics
from spendwarden.streams.follow import follow_topic, topic_partitions
from spendwarden.streams.overrides import Override, OverrideBook, OverrideError


async def ensure_topic(bootstrap: str, topic: str, client_options: dict[str, Any] | None = None) -> bool:
    """Create the topic when the broker says it does not exist; True when it was created.

    A metadata answer other than "unknown topic" (no Describe right, say) raises its KafkaError."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, **(client_options or {}))
    await client.bootstrap()
    try:
        partitions = await topic_partitions(client, topic)
    finally:
        await client.close()
    if partitions is not None:
        return False
    await create_topics(bootstrap, [TopicSpec(topic, partitions=1, compacted=True)], client_options)
    return True


async def send(bootstrap: str, topic: str, override: Override,
               client_options: dict[str, Any] | None = None) -> None:
    """Write an override (or its cleared form) and wait until the broker has it."""
    from aiokafka import AIOKafkaProducer

    await ensure_topic(bootstrap, topic, client_options)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(client_options or {}))
    await producer.start()
    try:
        await producer.send_and_wait(topic, override.to_record(), key=override.scope_key)
    finally:
        await producer.stop()


async def read_book(bootstrap: str, topic: str, client_options: dict[str, Any] | None = None,
                    timeout_s: float = 15.0) -> tuple[OverrideBook, list[str]]:
    """Every override on the topic, and the reasons records were passed over. A Kafka error
    (no Read or Describe right, say) is raised as soon as it happens."""
    book, problems = OverrideBook(), []
    caught_up, stop = asyncio.Event(), asyncio.Event()
    now = time.time()

    async def on_message(key: Optional[bytes], value: Optional[bytes]) -> None:
        try:
            book.apply(key, value, now)
        except OverrideError as exc:
            problems.append(str(exc))

    task = asyncio.create_task(follow_topic(bootstrap, topic, on_message, caught_up=caught_up, stop=stop,
                                            client_options=client_options, retry=False))
    read = asyncio.create_task(caught_up.wait())
    try:
        await asyncio.wait({task, read}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not caught_up.is_set():
            task.result()  # the Kafka error that ended reading
        if not caught_up.is_set():
            raise OverrideError(f"could not read topic {topic!r} on {bootstrap} within {timeout_s:.0f} s")
    finally:
        stop.set()
        for pending in (read, task):
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - already reported above
                pass
    return book, problems
