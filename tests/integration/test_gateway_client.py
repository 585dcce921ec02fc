"""The gateway clients against a real Redis, fed by the real writer (DecisionPublisher): the
contract between the worker's writes and a gateway's reads, staleness, outages and the cache."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from spendwarden.gateway import AsyncGatewayClient, GatewayClient, Verdict
from spendwarden.streams.effects import DecisionChanged
from spendwarden.streams.publisher import DecisionPublisher, decisions_key

pytestmark = pytest.mark.integration

PERIOD_END = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
ENDED = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")


def verdict(level: str, **extra: Any) -> dict[str, Any]:
    """A verdict as streams/decisions.make_verdict builds it."""
    action = {"L0": "allow", "L1": "degrade", "L2": "spill", "L3": "fallback", "L4": "hold"}.get(level, level)
    return {"level": level, "action": action, "reason": f"{level}: spend 92% of 1000 USD", "rule": f"r-{level}",
            "rules_version": "v7", "expires_at": PERIOD_END, "since": "2030-12-01T10:00:00Z"} | extra


def publish(redis_url: str, changes: dict[tuple[str, str], Optional[dict[str, Any]]], position: int = 1,
            clock: Callable[[], float] = time.time, generation: int = 1) -> None:
    """Write verdicts with the worker's own writer (fenced Lua script, change channel)."""

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            pub = DecisionPublisher(client, generation=generation, heartbeat_ttl_s=30, clock=clock)
            batch = [DecisionChanged(tenant_id=t, field=f, verdict=v, at="2030-12-01T10:00:00Z")
                     for (t, f), v in changes.items()]
            assert await pub.apply(batch, position) == len({t for t, _ in changes})
        finally:
            await client.aclose()

    asyncio.run(main())


LEVELS = {
    ("acme", "faq:low"): verdict("L1", model_alias="gpt-4o-mini", max_output_tokens=256),
    ("acme", "batch:low"): verdict("L2", model_alias="spill-pool"),
    ("acme", "ops:low"): verdict("L3", model_alias="approved-fallback"),
    ("acme", "kyc:low"): verdict("L4"),
    ("acme", "chat:low"): verdict("throttle", rate_per_minute=20, tokens_per_minute=50_000),
    ("acme", "bulk:low"): verdict("block"),
    ("acme", "undo:low"): verdict("L0", rule="manual-override"),
}
EXPECTED = {
    "faq": ("degrade", "L1", {"model_alias": "gpt-4o-mini", "max_output_tokens": 256}),
    "batch": ("degrade", "L2", {"model_alias": "spill-pool"}),
    "ops": ("degrade", "L3", {"model_alias": "approved-fallback"}),
    "kyc": ("allow", "L4", {"review": True}),
    "chat": ("throttle", "throttle", {"rate": 20, "tokens_per_minute": 50_000, "retry_after": 3.0}),
    "bulk": ("block", "block", {}),
    "undo": ("allow", "L0", {"rule": "manual-override"}),
    "nothing-decided": ("allow", "L0", {}),
}


def assert_level(use_case: str, got: Verdict) -> None:
    action, level, extra = EXPECTED[use_case]
    assert (got.action, got.level, got.stale) == (action, level, False), (use_case, got)
    for name, value in extra.items():
        assert getattr(got, name) == value, (use_case, name, got)
    if action == "block":
        # until the period end (two hours after this module was imported; other tests may run between)
        left = datetime.fromisoformat(PERIOD_END.replace("Z", "+00:00")).timestamp() - time.time()
        assert left - 5 < got.retry_after <= left + 1


def test_sync_client_maps_every_level_written_by_the_worker(redis_url: str) -> None:
    publish(redis_url, LEVELS)
    r = redis.Redis.from_url(redis_url)
    client = GatewayClient(r)
    for use_case in EXPECTED:
        assert_level(use_case, client.check("acme", use_case, "low"))
    assert client.stats.checks == len(EXPECTED) and client.stats.redis_errors == 0
    assert (client.stats.blocks, client.stats.throttles, client.stats.degrades) == (1, 1, 3)
    r.close()


def test_async_client_maps_every_level_written_by_the_worker(redis_url: str) -> None:
    publish(redis_url, LEVELS)

    async def main() -> None:
        r = aioredis.Redis.from_url(redis_url)
        client = AsyncGatewayClient(r)
        for use_case in EXPECTED:
            assert_level(use_case, await client.check("acme", use_case, "low"))
        assert client.stats.allows == 3 and client.stats.stale == 0
        await client.close()
        await r.aclose()

    asyncio.run(main())


def test_strictest_of_tenant_wide_and_model_fields_and_unknown_tier_reads_high(redis_url: str) -> None:
    publish(redis_url, {("acme", "*:low"): verdict("L1", model_alias="mini"),
                        ("acme", "chat:low:gpt-4o"): verdict("block"),
                        ("acme", "*:high"): verdict("throttle", rate_per_minute=120)})
    r = redis.Redis.from_url(redis_url, decode_responses=True)  # str answers work too
    client = GatewayClient(r)
    assert client.check("acme", "chat", "low").action == "degrade"
    assert client.check("acme", "chat", "low", model="gpt-4o").action == "block"
    assert client.check("acme", "chat", "LOW", model="gpt-4o-mini").model_alias == "mini"
    for tier in (None, "urgent", ""):
        got = client.check("acme", "chat", tier)
        assert (got.action, got.rate, got.retry_after) == ("throttle", 120, 1.0)
    r.close()


def test_stale_heartbeat_applies_the_configured_policy_and_on_stale_field_overrides(redis_url: str) -> None:
    # The worker's heartbeat TTL ran out 70 s ago: its clock says it wrote 100 s ago with a 30 s TTL.
    publish(redis_url, {("acme", "chat:low"): verdict("L1")}, clock=lambda: time.time() - 100)
    r = redis.Redis.from_url(redis_url)
    opened, closed = GatewayClient(r, on_stale="open"), GatewayClient(r, on_stale="closed")
    got = opened.check("acme", "chat", "low")
    assert (got.action, got.level, got.stale) == ("allow", "stale", True) and "on_stale open" in got.reason
    got = closed.check("acme", "chat", "low")
    assert (got.action, got.stale, got.retry_after) == ("block", True, 5.0)
    assert "tenant acme" in got.reason and "stale" in got.reason
    assert opened.stats.stale == 1 and closed.stats.blocks == 1

    r.hset(decisions_key("acme"), "_on_stale", "closed")  # what the worker writes from the rules
    assert opened.check("acme", "chat", "low").action == "block"

    async def main() -> None:
        ar = aioredis.Redis.from_url(redis_url)
        got = await AsyncGatewayClient(ar, on_stale="open").check("acme", "chat", "low")
        assert (got.action, got.stale) == ("block", True)
        await ar.hset(decisions_key("acme"), "_on_stale", "open")
        got = await AsyncGatewayClient(ar, on_stale="closed").check("acme", "chat", "low")
        assert (got.action, got.stale) == ("allow", True)
        await ar.aclose()

    asyncio.run(main())
    r.close()


def test_fresh_heartbeat_revives_and_expired_verdict_is_stale(redis_url: str) -> None:
    publish(redis_url, {("acme", "chat:low"): verdict("L1")}, clock=lambda: time.time() - 100)
    r = redis.Redis.from_url(redis_url)
    client = GatewayClient(r, on_stale="closed")
    assert client.check("acme", "chat", "low").stale
    publish(redis_url, {("acme", "old:low"): verdict("L2", expires_at=ENDED)}, position=2)
    assert client.check("acme", "chat", "low").action == "degrade"  # the write refreshed _expires_at
    got = client.check("acme", "old", "low")  # a verdict about an ended period is not an allow
    assert (got.action, got.stale) == ("block", True) and "old:low expired" in got.reason
    r.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_or_refusing_redis_never_raises(redis_url: str) -> None:
    port = closed_port()
    # No retries, short timeouts: what docs/redis.md advises for a gateway's client (redis-py's
    # default retries with backoff would make each check wait seconds on a dead Redis).
    down = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    for on_stale, action in (("open", "allow"), ("closed", "block")):
        client = GatewayClient(down, on_stale=on_stale, cache_ttl_s=5)
        started = time.monotonic()
        got = client.check("acme", "chat", "low")
        assert time.monotonic() - started < 2
        assert (got.action, got.stale) == (action, True) and "ConnectionError" in got.reason
        assert client.stats.redis_errors == 1 and client.stats.stale == 1
        client.close()
    refusing = redis.Redis.from_url(redis_url, username="nobody-gw", password="wrong")
    got = GatewayClient(refusing, on_stale="closed").check("acme", "chat", "low")
    assert (got.action, got.stale) == ("block", True)

    # The last _on_stale read for a tenant wins over the default once Redis goes away.
    good = redis.Redis.from_url(redis_url)
    publish(redis_url, {("acme", "chat:low"): verdict("L1")})
    good.hset(decisions_key("acme"), "_on_stale", "closed")
    client = GatewayClient(good, on_stale="open")
    assert client.check("acme", "chat", "low").action == "degrade"
    client._redis = down  # the same client, now cut off
    assert client.check("acme", "chat", "low").action == "block"
    assert client.check("beta", "chat", "low").action == "allow"  # never seen: the default
    assert client.stats.redis_errors == 2
    assert GatewayClient(good).check("bad{tenant}", "chat", "low").stale
    good.close()

    async def main() -> None:
        adown = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2, socket_timeout=0.2,
                               retry=Retry(NoBackoff(), 0))
        client = AsyncGatewayClient(adown, on_stale="closed", cache_ttl_s=5)
        got = await client.check("acme", "chat", "low", model="gpt-4o", estimated_cost=0.02)
        assert (got.action, got.stale) == ("block", True) and client.stats.redis_errors == 1
        await client.close()
        await adown.aclose()

    asyncio.run(main())


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def cached_hit(client: GatewayClient, tenant: str = "acme") -> Callable[[], bool]:
    """A condition: the next check of chat:low comes from the cache (the subscription is confirmed
    and an answer was stored)."""

    def hit() -> bool:
        before = client.stats.cache_hits
        client.check(tenant, "chat", "low")
        return client.stats.cache_hits == before + 1

    return hit


def test_sync_cache_hits_until_the_worker_announces_a_change(redis_url: str) -> None:
    publish(redis_url, {("acme", "chat:low"): verdict("L1", model_alias="mini")})
    r = redis.Redis.from_url(redis_url)
    client = GatewayClient(r, cache_ttl_s=60)
    assert client.check("acme", "chat", "low").action == "degrade"  # subscribes, reads
    assert client.cache is not None and wait_until(cached_hit(client))
    # An unannounced write (not the worker's) stays unseen: the answer really comes from the cache.
    r.hset(decisions_key("acme"), "chat:low", '{"level":"block","action":"block"}')
    hits = client.stats.cache_hits
    assert client.check("acme", "chat", "low").action == "degrade" and client.stats.cache_hits == hits + 1

    publish(redis_url, {("acme", "chat:low"): verdict("throttle", rate_per_minute=6)}, position=2)
    assert wait_until(lambda: client.check("acme", "chat", "low").action == "throttle")
    assert client.cache.invalidations >= 1

    # A dropped subscription connection clears the cache (messages may have been lost meanwhile).
    assert wait_until(cached_hit(client))
    r.hset(decisions_key("acme"), "chat:low", '{"level":"block","action":"block"}')
    assert client.check("acme", "chat", "low").action == "throttle"  # cached
    resets = client.cache.resets
    kill_subscribers(r)
    assert wait_until(lambda: client.check("acme", "chat", "low").action == "block")
    assert client.cache.resets > resets
    client.close()
    r.close()


def kill_subscribers(r: redis.Redis) -> None:
    """Cut this database's sharded-pub/sub connections, as a network blip would."""
    db = r.connection_pool.connection_kwargs.get("db", 0)
    ids = [c["id"] for c in r.client_list(_type="pubsub") if int(c.get("db", -1)) == db]
    assert ids
    for client_id in ids:
        r.client_kill_filter(_id=client_id)


def test_async_cache_hits_until_the_worker_announces_a_change(redis_url: str) -> None:
    publish(redis_url, {("acme", "chat:low"): verdict("L1", model_alias="mini")})

    async def main() -> None:
        r = aioredis.Redis.from_url(redis_url)
        client = AsyncGatewayClient(r, cache_ttl_s=60)
        assert (await client.check("acme", "chat", "low")).action == "degrade"
        assert client.cache is not None
        for _ in range(500):
            if client.cache.token("acme")[2]:
                break
            await asyncio.sleep(0.01)
        await client.check("acme", "chat", "low")  # read after the confirmation: stored
        await r.hset(decisions_key("acme"), "chat:low", '{"level":"block","action":"block"}')
        hits = client.stats.cache_hits
        assert (await client.check("acme", "chat", "low")).action == "degrade"
        assert client.stats.cache_hits == hits + 1

        async def publish_async() -> None:
            pub = DecisionPublisher(r, generation=1)
            change = DecisionChanged("acme", "chat:low", verdict("L3", model_alias="fallback"), "2030-12-01T10:00:00Z")
            assert await pub.apply([change], 2) == 1

        await publish_async()
        for _ in range(500):
            got = await client.check("acme", "chat", "low")
            if got.level == "L3":
                break
            await asyncio.sleep(0.01)
        assert (got.level, got.model_alias) == ("L3", "fallback")
        await client.close()
        await r.aclose()

    asyncio.run(main())
