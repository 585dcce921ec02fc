"""Reservations on a real Redis: the gateway's script against spend the worker's publisher wrote."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from spendwarden.gateway.reservations import AsyncReservations, Reservations, estimate_cost
from spendwarden.streams.publisher import DecisionPublisher, reservations_key, spend_key

pytestmark = pytest.mark.integration
T = TypeVar("T")
NANO = 1_000_000_000
FUTURE = time.time() + 86400


def budget(spend_usd: str, limit_usd: str, end: float = FUTURE, tiers: list[str] | None = None,
           use_cases: list[str] | None = None) -> dict[str, Any]:
    return {"spend": int(Decimal(spend_usd) * NANO), "limit": int(Decimal(limit_usd) * NANO), "end": end,
            "tiers": tiers, "use_cases": use_cases}


def publish(redis_url: str, fields: dict[str, dict[str, Any]], settled: dict[str, list[str]] | None = None,
            position: int = 1, generation: int = 1) -> bool:
    async def run() -> bool:
        client = aioredis.Redis.from_url(redis_url)
        try:
            pub = DecisionPublisher(client, generation=generation)
            return await pub.publish_spend(fields, settled or {}, position)
        finally:
            await client.aclose()
    return asyncio.run(run())


def test_reserve_holds_until_spend_and_open_reservations_reach_the_limit(redis_url: str) -> None:
    publish(redis_url, {"acme": {"chat|uc-daily": budget("7", "10"), "*|tenant-daily": budget("20", "100")}})
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client)
    first = res.reserve("acme", "chat", "low", "2", "call-1")
    assert first.allowed and first.held
    assert res.reserve("acme", "chat", "low", "2", "call-1").held  # the same id again: still one hold
    second = res.reserve("acme", "chat", "low", "1.5", "call-2")
    assert not second.allowed and second.budget == "chat|uc-daily"
    assert second.available_usd == Decimal("1")  # 10 - 7 - 2
    assert res.reserve("acme", "chat", "low", "1", "call-3").allowed  # exactly the rest
    assert res.reserve("acme", "search", "low", "50", "call-4").allowed  # only the tenant budget covers it
    assert not res.reserve("acme", "search", "low", "40", "call-5").allowed  # 20 + 50 + 2 + 1 + 40 > 100
    res.release("acme", "call-3")
    assert res.reserve("acme", "chat", "low", "1", "call-6").allowed
    assert set(client.hkeys(reservations_key("acme"))) == {b"call-1", b"call-4", b"call-6"}
    client.close()


def test_the_worker_settles_reservations_in_the_same_write_as_the_spend(redis_url: str) -> None:
    publish(redis_url, {"acme": {"chat|uc-daily": budget("0", "10")}}, position=1)
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client)
    assert res.reserve("acme", "chat", "low", "6", "call-1").held
    assert not res.reserve("acme", "chat", "low", "6", "call-2").allowed
    # the worker counted call-1 (it cost 5.5): spend and release in one script
    publish(redis_url, {"acme": {"chat|uc-daily": budget("5.5", "10")}}, {"acme": ["call-1", "unknown"]}, position=2)
    assert client.hkeys(reservations_key("acme")) == []
    assert res.reserve("acme", "chat", "low", "4.5", "call-2").allowed
    # a zombie or a replay of older input cannot set spend back
    assert publish(redis_url, {"acme": {"chat|uc-daily": budget("0", "10")}}, position=1)
    assert b'"spend":5500000000' in client.hget(spend_key("acme"), "chat|uc-daily")
    client.close()


def test_scope_period_end_expiry_and_uncovered_calls(redis_url: str) -> None:
    now = time.time()
    publish(redis_url, {"acme": {"*|low-only": budget("9", "10", tiers=["low", "medium"]),
                                 "*|ended": budget("100", "10", end=now - 1)}})
    client = redis.Redis.from_url(redis_url)
    clock = [now]
    res = Reservations(client, ttl_s=60, clock=lambda: clock[0])
    high = res.reserve("acme", "chat", "high", "5", "h1")  # "ended" covers it: its spend counts 0 now
    assert high.allowed and high.held
    assert not res.reserve("acme", "chat", "medium", "5", "m1").allowed  # low-only: 9 + 5 > 10
    assert res.reserve("acme", "chat", None, "1", "n1").held  # no tier = high
    assert res.reserve("beta", "chat", "low", "1000", "b1") == res.reserve("beta", "chat", "low", "1000", "b1")
    assert not res.reserve("beta", "chat", "low", "1000", "b1").held  # no reservable budget: allowed, nothing held
    clock[0] = now + 61  # the holds expire
    assert res.reserve("acme", "chat", "high", "10", "h2").held
    assert set(client.hkeys(reservations_key("acme"))) == {b"h2"}
    client.close()


def test_redis_unreachable_applies_the_error_policy_without_raising() -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    opened = Reservations(dead).reserve("acme", "chat", "low", "1", "x")
    closed = Reservations(dead, on_error="closed").reserve("acme", "chat", "low", "1", "x")
    assert (opened.allowed, opened.held, opened.error) == (True, False, True)
    assert (closed.allowed, closed.error) == (False, True)

    async def run() -> Any:
        from redis.asyncio.retry import Retry as AsyncRetry

        gone = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=AsyncRetry(NoBackoff(), 0))
        return await AsyncReservations(gone, on_error="closed").reserve("acme", "chat", "low", "1", "y")
    assert not asyncio.run(run()).allowed


def test_estimate_is_prompt_at_input_price_plus_output_cap_at_output_price() -> None:
    assert estimate_cost(1000, 500, "0.0000025", "0.00001") == Decimal("0.0075")
