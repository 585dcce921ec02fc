"""Issue 8's overshoot test through the real pipeline: 50 concurrent asyncio gateways spend
against a $10 budget; their calls' cost events go through the broker and a real worker
settles them. With reservations the final spend stays within budget + what calls cost beyond
their reservations; with only the decision check (the same rules, another tenant) the
pipeline's lag lets spend run past the budget. Both figures are printed."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from harness import end_offsets, new_run

from spendwarden.gateway import AsyncGatewayClient
from spendwarden.gateway.reservations import AsyncReservations

pytestmark = pytest.mark.integration

RULES = """
budgets:
  - name: uc-ten
    for_each: [tenant_id, use_case_id]
    period: day
    limit_usd: 10
    reservations: true
rules:
  - name: uc-ten-cap
    budget: uc-ten
    when: budget.used_ratio >= 1.0
    severity: high
    decide: {level: block, only_risk_tiers: [low, medium]}
"""
CLIENTS = 50
BUDGET = Decimal("10")


@dataclass
class Tally:
    calls: int = 0
    failed: int = 0
    denied: int = 0
    spent: Decimal = Decimal(0)  # what the calls that went ahead cost
    beyond: Decimal = Decimal(0)  # sum of max(0, actual - reserved)


def cost_event(tenant: str, call_id: str, usd: Decimal) -> bytes:
    return orjson.dumps({"cost_event_id": call_id, "ts": datetime.now(timezone.utc).isoformat(),
                         "tenant_id": tenant, "use_case_id": "chat", "risk_tier": "low",
                         "allocated_cost_usd": str(usd)})


async def gateway(tenant: str, ask: Callable[[str, Decimal], Any], release: Callable[[str], Any],
                  producer: AIOKafkaProducer, topic: str, tally: Tally, rng: random.Random) -> None:
    """One gateway: call after call until refused three times in a row."""
    refusals = 0
    while refusals < 3:
        estimate = Decimal(rng.randint(5, 30)) / 100  # $0.05 .. $0.30
        actual = (estimate * Decimal(rng.choice([60, 90, 100, 110, 150])) / 100).quantize(Decimal("0.0001"))
        call_id = uuid.uuid4().hex
        if not await ask(call_id, estimate):
            refusals += 1
            tally.denied += 1
            await asyncio.sleep(0.05)
            continue
        refusals = 0
        await asyncio.sleep(rng.uniform(0.02, 0.08))  # the model call
        if rng.random() < 0.1:  # the call failed: nothing spent, the hold is given back
            tally.failed += 1
            await release(call_id)
            continue
        tally.calls += 1
        tally.spent += actual
        tally.beyond += max(Decimal(0), actual - estimate)
        await producer.send(topic, key=tenant.encode(), value=cost_event(tenant, call_id, actual))


def test_reservations_bound_the_overshoot_that_decision_checks_alone_allow(
        broker: str, redis_url: str, topic_names: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    run = new_run(broker, redis_url, topic_names, tmp_path, **{"reserve.yaml": RULES})
    (run.rules_dir / "rules.yaml").unlink()  # only the $10 budget
    run.start()
    run.wait_ready()
    topic = run.topics["events"]

    async def spend() -> tuple[Tally, Tally]:
        client = aioredis.Redis.from_url(redis_url)
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        reservations = AsyncReservations(client)
        checks = AsyncGatewayClient(client)
        with_reservations, decisions_only = Tally(), Tally()

        async def reserve(call_id: str, estimate: Decimal) -> bool:
            return (await reservations.reserve("acme", "chat", "low", estimate, call_id)).allowed

        async def check(call_id: str, estimate: Decimal) -> bool:
            return (await checks.check("beta", "chat", "low")).action != "block"

        async def nothing(call_id: str) -> None:
            return None

        try:
            await asyncio.gather(*(gateway("acme", reserve, lambda c: reservations.release("acme", c), producer,
                                           topic, with_reservations, random.Random(i)) for i in range(CLIENTS)))
            await asyncio.gather(*(gateway("beta", check, nothing, producer, topic, decisions_only,
                                           random.Random(i)) for i in range(CLIENTS)))
            await producer.flush()
        finally:
            await producer.stop()
            await client.aclose()
        return with_reservations, decisions_only

    started = time.monotonic()
    reserved_run, checked_run = asyncio.run(spend())
    run.wait_offsets(end_offsets(broker, topic))
    totals = {key[1]: value for key, value in run.totals().items() if key[0] == "uc-ten"}
    acme, beta = totals["acme/chat"], totals["beta/chat"]
    bound = BUDGET + reserved_run.beyond
    print(f"\nwith reservations: spend ${acme} of ${BUDGET} (bound ${bound}: budget + ${reserved_run.beyond} "
          f"beyond estimates), {reserved_run.calls} calls, {reserved_run.failed} failed, {reserved_run.denied} refused")
    print(f"decision checks only: spend ${beta} of ${BUDGET} (overshoot ${beta - BUDGET}), "
          f"{checked_run.calls} calls, {checked_run.denied} refused; {time.monotonic() - started:.1f} s")
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_url)
    open_holds = client.hlen("sw:{acme}:reservations")
    client.close()
    run.stop()
    assert open_holds == 0  # every hold was settled by the worker or released by its failed call
    assert acme == reserved_run.spent  # every call that went ahead was counted, once
    assert acme <= bound
    assert acme >= BUDGET - Decimal("1")  # the budget was used, not refused early
    assert beta == checked_run.spent
    assert beta > bound, "without reservations the lag should let spend run past the bound"
