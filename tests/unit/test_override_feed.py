"""Writing an override needs no Create right when the topic exists (the broker is faked)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiokafka
import aiokafka.client
import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from spendwarden.exceptions import ConfigError
from spendwarden.streams import override_feed
from spendwarden.streams.overrides import Override

TOPIC = "spendwarden.overrides"


class Kafka:
    """What the fake broker holds and what the clients did."""

    def __init__(self, exists: bool, describe_error: int = 0) -> None:
        self.exists = exists
        self.describe_error = describe_error
        self.created: list[str] = []
        self.sent: list[tuple[str, bytes, bytes]] = []


def fake_kafka(monkeypatch: pytest.MonkeyPatch, kafka: Kafka) -> None:
    class Client:
        def __init__(self, **options: Any) -> None:
            pass

        async def bootstrap(self) -> None:
            pass

        async def close(self) -> None:
            pass

        def get_random_node(self) -> int:
            return 1

        async def send(self, node: int, request: Any) -> Any:
            code = kafka.describe_error or (0 if kafka.exists else 3)

            class Answer:
                topics = [(code, request._topics[0], False, [(0, 0, 1, [1], [1], [])] if code == 0 else [])]

            return Answer()

    class Producer:
        def __init__(self, **options: Any) -> None:
            pass

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
            assert kafka.exists, "produced to a topic that does not exist"
            kafka.sent.append((topic, key, value))

    async def create_topics(bootstrap: str, specs: Any, options: Any = None) -> None:
        # What a broker answers CreateTopics from a principal without Create, topic there or not.
        raise ConfigError(f"could not create topic {specs[0].name!r} on {bootstrap}: TopicAuthorizationFailedError")

    monkeypatch.setattr(aiokafka.client, "AIOKafkaClient", Client)
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", Producer)
    monkeypatch.setattr(override_feed, "create_topics", create_topics)


def block() -> Override:
    return Override(tenant_id="acme", action="block", reason="r", author="alice", created_at=1.0, expires_at=2.0)


def test_an_override_is_written_without_create_rights_when_the_topic_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = Kafka(exists=True)
    fake_kafka(monkeypatch, kafka)
    asyncio.run(override_feed.send("kafka:9092", TOPIC, block()))
    assert [(t, k) for t, k, _ in kafka.sent] == [(TOPIC, b"acme|*|*")]


def test_a_missing_topic_is_created_and_a_refused_describe_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = Kafka(exists=False)
    fake_kafka(monkeypatch, kafka)
    with pytest.raises(ConfigError, match="could not create"):  # missing and no Create right: said so
        asyncio.run(override_feed.send("kafka:9092", TOPIC, block()))

    kafka = Kafka(exists=True, describe_error=29)
    fake_kafka(monkeypatch, kafka)
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(override_feed.ensure_topic("kafka:9092", TOPIC))
    assert kafka.sent == []
