"""Reservations on a real Redis: the gateway's script against spend the worker's publisher wrote."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from spendwarden.gateway.reservations import AsyncReservations, Reservations, estimate_cost
from spendwarden.gateway.reservations import hold_keys, spend_key
from spendwarden.streams.publisher import DecisionPublisher
from spendwarden.streams.reservations import templates

pytestmark = pytest.mark.integration
T = TypeVar("T")
NANO = 1_000_000_000
FUTURE = time.time() + 86400


def budget(spend_usd: str, limit_usd: str, end: float = FUTURE, tiers: list[str] | None = None,
           use_cases: list[str] | None = None) -> dict[str, Any]:
    return {"spend": int(Decimal(spend_usd) * NANO), "limit": int(Decimal(limit_usd) * NANO), "end": end,
            "tiers": tiers, "use_cases": use_cases}


RULES = """
tenants:
  gold-co: {tier: gold}
budgets:
  - {name: uc-daily, for_each: [tenant_id, use_case_id], period: day, limit_usd: 10, reservations: true}
  - {name: tenant-daily, for_each: [tenant_id], period: day, limit_usd: 100, reservations: true}
  - {name: low-only, for_each: [tenant_id], scope: {risk_tier: [low, medium]}, period: day,
     limit_by_tier: {default: 10, gold: 50}, reservations: true}
"""


def ruleset(text: str = RULES) -> Any:
    from spendwarden.rules.compiler import compile_ruleset
    from spendwarden.rules.loader import SourceFile
    from spendwarden.rules.schema import RuleFile

    model = RuleFile.model_validate(yaml.safe_load(text))
    return compile_ruleset([SourceFile("rules.yaml", model, lambda *_a, **_k: (None, None))])


def publish(redis_url: str, fields: dict[str, dict[str, Any]], settled: dict[str, list[str]] | None = None,
            position: int = 1, generation: int = 1, rules: Any = None) -> bool:
    """What the worker writes: the templates from the rules, then spend (and settled calls)."""
    async def run() -> bool:
        client = aioredis.Redis.from_url(redis_url)
        try:
            pub = DecisionPublisher(client, generation=generation)
            await pub.publish_templates(templates(rules or ruleset()))
            return await pub.publish_spend(fields, settled or {}, position)
        finally:
            await client.aclose()
    return asyncio.run(run())


def test_reserve_holds_until_spend_and_open_reservations_reach_the_limit(redis_url: str) -> None:
    two_budgets = ruleset(RULES.split("  - {name: low-only")[0])
    publish(redis_url, {"acme": {"chat|uc-daily": budget("7", "10"), "*|tenant-daily": budget("95", "100")}},
            rules=two_budgets)
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client)
    first = res.reserve("acme", "chat", "low", "2", "call-1")
    assert first.allowed and first.held
    assert res.reserve("acme", "chat", "low", "2", "call-1").held  # the same id again: still one hold
    second = res.reserve("acme", "chat", "low", "1.5", "call-2")
    assert not second.allowed and second.budget == "chat|uc-daily"
    assert second.available_usd == Decimal("1")  # 10 - 7 - 2
    assert res.reserve("acme", "chat", "low", "1", "call-3").allowed  # exactly the rest
    assert res.reserve("acme", "search", "low", "1.5", "call-4").held  # its own use case budget is untouched
    fifth = res.reserve("acme", "search", "low", "1", "call-5")  # the tenant's: 95 + 2 + 1 + 1.5 + 1 > 100
    assert not fifth.allowed and fifth.budget == "*|tenant-daily" and fifth.available_usd == Decimal("0.5")
    res.release("acme", "call-3")
    assert res.reserve("acme", "search", "low", "1", "call-6").held
    assert set(client.hkeys(hold_keys("acme")[0])) == {b"call-1", b"call-4", b"call-6"}
    client.close()


def test_the_worker_settles_reservations_in_the_same_write_as_the_spend(redis_url: str) -> None:
    publish(redis_url, {"acme": {"chat|uc-daily": budget("0", "10")}}, position=1)
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client)
    assert res.reserve("acme", "chat", "low", "6", "call-1").held
    assert not res.reserve("acme", "chat", "low", "6", "call-2").allowed
    # the worker counted call-1 (it cost 5.5): spend and release in one script
    publish(redis_url, {"acme": {"chat|uc-daily": budget("5.5", "10")}}, {"acme": ["call-1", "unknown"]}, position=2)
    assert client.hkeys(hold_keys("acme")[0]) == []
    assert res.reserve("acme", "chat", "low", "4.5", "call-2").allowed
    # a zombie or a replay of older input cannot set spend back
    assert publish(redis_url, {"acme": {"chat|uc-daily": budget("0", "10")}}, position=1)
    assert b'"spend":5500000000' in client.hget(spend_key("acme"), "chat|uc-daily")
    client.close()


def test_a_budget_nobody_spent_in_yet_still_holds_calls_against_its_limit(redis_url: str) -> None:
    publish(redis_url, {})  # the worker has counted nothing yet: only the templates exist
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client)
    assert res.reserve("new-co", "chat", "low", "6", "n1").held
    refused = res.reserve("new-co", "chat", "low", "6", "n2")
    assert not refused.allowed and refused.budget == "chat|uc-daily" and refused.available_usd == Decimal("4")
    client.close()


def test_scope_tiers_period_end_expiry_and_uncovered_calls(redis_url: str) -> None:
    now = time.time()
    publish(redis_url, {"acme": {"*|low-only": budget("9", "10", tiers=["low", "medium"]),
                                 "*|tenant-daily": budget("500", "100", end=now - 1)},
                        "gold-co": {"*|low-only": budget("40", "50")}})
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client, ttl_s=1)
    assert res.reserve("acme", "chat", "high", "5", "h1").held  # low-only does not cover high; the ended day counts 0
    assert not res.reserve("acme", "chat", "medium", "5", "m1").allowed  # low-only: 9 + 5 > 10
    assert res.reserve("gold-co", "chat", "low", "9", "g1").held  # the gold tier's limit is 50
    assert res.reserve("acme", "chat", None, "1", "n1").held  # no tier = high
    assert res.reserve("acme", "chat", "medium", "-100", "neg").held  # clamped to 0: it frees no room
    assert not res.reserve("acme", "chat", "medium", "5", "m2").allowed
    publish(redis_url, {}, rules=ruleset("budgets: [{name: x, for_each: [tenant_id], period: day, limit_usd: 1}]"))
    res._templates = (-1e18, {})
    uncovered = res.reserve("acme", "chat", "low", "1000", "b1")  # no reservable budget at all now
    assert uncovered.allowed and not uncovered.held
    time.sleep(1.2)  # the holds expire (by Redis' clock)
    publish(redis_url, {})
    res._templates = (-1e18, {})
    assert res.reserve("acme", "chat", "high", "10", "h2").held
    assert set(client.hkeys(hold_keys("acme")[0])) == {b"h2"}
    assert client.hgetall(hold_keys("acme")[2]) == {b"*|tenant-daily": b"10000000000", b"chat|uc-daily": b"10000000000"}
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


def test_a_late_event_of_an_earlier_period_never_replaces_the_current_spend(redis_url: str) -> None:
    today_end, yesterday_end = time.time() + 3600, time.time() - 82800
    publish(redis_url, {"acme": {"chat|uc-daily": budget("9", "10", end=today_end)}}, position=5)
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client)
    assert res.reserve("acme", "chat", "low", "0.5", "late-call").held
    # the worker counts a late event of yesterday (settling that call): today's 9 USD must stay
    publish(redis_url, {"acme": {"chat|uc-daily": budget("0.1", "10", end=yesterday_end)}},
            {"acme": ["late-call"]}, position=6)
    assert b'"spend":9000000000' in client.hget(spend_key("acme"), "chat|uc-daily")
    assert client.hlen(hold_keys("acme")[0]) == 0  # the settled hold is released all the same
    assert not res.reserve("acme", "chat", "low", "1.5", "next").allowed
    client.close()


def test_thousands_of_expired_holds_neither_break_nor_slow_a_reservation(redis_url: str) -> None:
    publish(redis_url, {"acme": {"chat|uc-daily": budget("0", "10")}})
    client = redis.Redis.from_url(redis_url)
    res = Reservations(client, ttl_s=1)
    pipe = client.pipeline(transaction=False)
    for i in range(9000):  # leaked holds: calls whose cost events never came
        res._script(keys=hold_keys("acme"), args=["sw:{acme}:spend", 1000, f"leak-{i}", 1, "chat|uc-daily",
                                                  10**10], client=pipe)
    pipe.execute()
    assert client.hlen(hold_keys("acme")[0]) == 9000
    time.sleep(1.2)
    started = time.perf_counter()
    answer = res.reserve("acme", "chat", "low", "9.99", "fresh")  # the expired ones hold nothing any more
    elapsed = time.perf_counter() - started
    assert answer.held and res.errors == 0, answer
    assert client.hlen(hold_keys("acme")[0]) == 9000 - 200 + 1  # expired holds are pruned 200 a call
    print(f"\nreserve with 8,800 expired holds left: {elapsed * 1000:.1f} ms")
    client.close()
