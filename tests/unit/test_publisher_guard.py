"""A Redis that refuses the worker's credentials or commands marks it unhealthy; it never crashes the agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError, ClusterDownError, NoPermissionError, RedisClusterException, ResponseError,
)

from spendwarden.streams.publisher import DecisionPublisher


@pytest.mark.parametrize("error", [
    NoPermissionError("this user has no permissions to run the 'script|exists' command"),
    AuthenticationError("invalid username-password pair or user is disabled."),
    ResponseError("ERR The user executing the script can't run this command or subcommand script: ..."),
    ClusterDownError("CLUSTERDOWN The cluster is down"),
    RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node"),
])
def test_refusals_and_outages_mark_unhealthy_and_the_write_failed(error: Exception) -> None:
    publisher = DecisionPublisher(aioredis.Redis(), generation=1)  # no connection is made

    async def refused() -> Any:
        raise error

    assert asyncio.run(publisher._guard(refused())) is None
    assert publisher.healthy is False
    assert publisher.write_failed is True  # the service republishes even if the next call succeeds


def test_other_errors_still_raise() -> None:
    """A bug (a malformed command) must surface, not hide as an outage."""
    publisher = DecisionPublisher(aioredis.Redis(), generation=1)  # no connection is made

    async def broken() -> Any:
        raise ResponseError("ERR wrong number of arguments")

    with pytest.raises(ResponseError):
        asyncio.run(publisher._guard(broken()))
