"""Inhibiting alerts and silences as every router reads them from a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from spendwarden.streams.alerting.config import parse_routing
from spendwarden.streams.alerting.inhibit import Inhibitor
from spendwarden.streams.alerting.mutes import INHIBITORS_KEY, Mutes

pytestmark = pytest.mark.integration

ROUTING = b"""
route: {receiver: r}
inhibit_rules:
  - source_matchers: [decision=block]
    target_matchers: [decision!=block]
    equal: [tenant]
receivers: [{name: r}]
"""
BLOCK = {"tenant": "acme", "decision": "block", "rule": "cap"}
BURN = {"tenant": "acme", "decision": "none", "rule": "burn"}


def test_inhibiting_alerts_and_silences_round_trip_through_redis(redis_url: str) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        inhibitor = Inhibitor(parse_routing(ROUTING, "r.yaml").inhibit_rules)
        writer, reader = Mutes(client, inhibitor), Mutes(client, inhibitor)  # two router processes
        now = time.time()
        await writer.note_source("fp-burn", BURN, "2099-01-01T00:00:00Z")  # not a source: not kept
        await writer.note_source("fp-block", BLOCK, "2099-01-01T00:00:00Z")
        assert await client.hkeys(INHIBITORS_KEY) == [b"fp-block"]
        await reader.refresh(now)
        assert reader.muted(BURN, now) == "inhibition" and reader.muted(BLOCK, now) is None
        assert reader.muted({**BURN, "tenant": "other"}, now) is None
        await reader.store.add(["tenant=other"], 600, "maintenance", "test", now=now)
        await reader.refresh(now)
        assert reader.muted({**BURN, "tenant": "other"}, now) == "silence"
        await writer.forget_source("fp-block")
        await reader.refresh(now)
        assert reader.muted(BURN, now) is None
        # a resolution that never arrived stops muting an hour after the source's period ended
        await writer.note_source("fp-old", BLOCK, "2020-01-01T00:00:00Z")
        await reader.refresh(now)
        assert reader.muted(BURN, now) is None
        assert await client.hkeys(INHIBITORS_KEY) == []
        await client.aclose()

    asyncio.run(run())


def test_an_unreachable_redis_keeps_the_last_known_mutes(redis_url: str) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        mutes = Mutes(client, Inhibitor(parse_routing(ROUTING, "r.yaml").inhibit_rules))
        await mutes.note_source("fp-block", BLOCK, "2099-01-01T00:00:00Z")
        await mutes.refresh()
        gone = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        mutes.redis, mutes.store.client = gone, gone
        await mutes.refresh()  # logs, does not raise
        assert mutes.muted(BURN, time.time()) == "inhibition"
        await client.aclose()

    asyncio.run(run())
