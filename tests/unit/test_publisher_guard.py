"""A Redis that refuses the worker's credentials or commands marks it unhealthy; it never crashes the agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from spendwarden.streams.publisher import DecisionPublisher


@pytest.mark.parametrize("error", [
    NoPermissionError("this user has no permissions to run the 'script|exists' command"),
    AuthenticationError("invalid username-password pair or user is disabled."),
    ResponseError("ERR The user executing the script can't run this command or subcommand script: ..."),
])
def test_refusals_mark_unhealthy_and_return_nothing(error: Exception) -> None:
    publisher = DecisionPublisher(aioredis.Redis(), generation=1)  # no connection is made

    async def refused() -> Any:
        raise error

    assert asyncio.run(publisher._guard(refused())) is None
    assert publisher.healthy is False


def test_other_errors_still_raise() -> None:
    """A bug (a malformed command) must surface, not hide as an outage."""
    publisher = DecisionPublisher(aioredis.Redis(), generation=1)  # no connection is made

    async def broken() -> Any:
        raise ResponseError("ERR wrong number of arguments")

    with pytest.raises(ResponseError):
        asyncio.run(publisher._guard(broken()))
