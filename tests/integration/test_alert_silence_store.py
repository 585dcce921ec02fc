"""Silences on a real Redis: the store (sync and async) and `spendwarden silence add|list|expire`."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
import redis.asyncio as aioredis
from click.testing import CliRunner, Result

from spendwarden.cli import main
from spendwarden.streams.alerting.silences import (
    ALL_KEY, KEEP_EXPIRED_S, VERSION_KEY, AsyncSilenceStore, SilenceError, SilenceStore, silenced_by,
)

pytestmark = pytest.mark.integration

T0 = 1_790_000_000.0


def test_add_list_expire_round_trip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = SilenceStore(client)
    assert store.version() == 0 and store.list(now=T0) == []
    first = store.add(["tenant=acme", "rule=~daily-.*"], 7200, "INC-4411", "ana", now=T0)
    second = store.add(["tenant=beta"], 600, "noisy", "bo", now=T0)
    assert store.version() == 2
    assert [s.id for s in store.list(now=T0 + 1)] == [second.id, first.id]  # ending soonest first
    assert store.get(first.id) == first
    assert silenced_by({"tenant": "acme", "rule": "daily-burn"}, store.list(now=T0 + 1), T0 + 1) == first

    ended = store.expire(first.id, now=T0 + 60)
    assert ended.ends_at == T0 + 60 and store.version() == 3
    assert [s.id for s in store.list(now=T0 + 61)] == [second.id]
    assert {s.id for s in store.list(include_expired=True, now=T0 + 61)} == {first.id, second.id}
    assert silenced_by({"tenant": "acme", "rule": "daily-burn"}, store.list(now=T0 + 61), T0 + 61) is None

    with pytest.raises(SilenceError, match="already expired"):
        store.expire(first.id, now=T0 + 120)
    with pytest.raises(SilenceError, match="no silence with id nope"):
        store.expire("nope", now=T0)
    assert store.version() == 3
    client.close()


def test_durable_across_clients_and_stored_as_json(redis_url: str) -> None:
    one = redis.Redis.from_url(redis_url)
    made = SilenceStore(one).add(["tenant=acme"], 3600, "why", "ana", now=T0)
    one.close()
    two = redis.Redis.from_url(redis_url)
    assert SilenceStore(two).list(now=T0 + 1) == [made]
    raw = json.loads(two.hget(ALL_KEY, made.id))  # type: ignore[arg-type]
    assert raw["matchers"] == ['tenant="acme"'] and raw["ends_at"] == T0 + 3600
    assert int(two.get(VERSION_KEY)) == 1  # type: ignore[arg-type]
    two.close()


def test_pending_silence_expires_at_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = SilenceStore(client)
    made = store.add(["tenant=acme"], 3600, "later", "ana", now=T0 + 1000)  # starts in the future
    ended = store.expire(made.id, now=T0)
    assert ended.starts_at == ended.ends_at == T0
    client.close()


def test_old_expired_silences_are_pruned_on_add(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = SilenceStore(client)
    old = store.add(["tenant=acme"], 60, "old", "ana", now=T0)
    recent = store.add(["tenant=beta"], 60, "recent", "ana", now=T0 + KEEP_EXPIRED_S - 3600)
    store.add(["tenant=gamma"], 60, "new", "ana", now=T0 + KEEP_EXPIRED_S + 120)
    kept = {s.id for s in store.list(include_expired=True, now=T0 + KEEP_EXPIRED_S + 120)}
    assert old.id not in kept and recent.id in kept and len(kept) == 2
    client.close()


def test_async_store(redis_url: str) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = AsyncSilenceStore(client)
        made = await store.add(["tenant=acme"], 3600, "why", "ana", now=T0)
        assert await store.version() == 1
        assert await store.list(now=T0 + 1) == [made]
        await store.expire(made.id, now=T0 + 2)
        assert await store.list(now=T0 + 3) == [] and await store.version() == 2
        await client.aclose()

    asyncio.run(run())
    sync = SilenceStore(redis.Redis.from_url(redis_url))
    assert len(sync.list(include_expired=True)) == 1  # the same keys as the sync store


def cli(redis_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"SPENDWARDEN_REDIS_URL": redis_url, "SPENDWARDEN_CONFIG": None,
                                                     "SPENDWARDEN_ROUTING_FILE": None})


def test_cli_add_list_expire(redis_url: str) -> None:
    added = cli(redis_url, "silence", "add", "tenant=acme", "rule=~daily-.*", "--for", "2h",
                "--comment", "INC-4411 known loop", "--author", "ana")
    assert added.exit_code == 0, added.output
    silence_id = added.stdout.strip()
    stored = SilenceStore(redis.Redis.from_url(redis_url)).get(silence_id)
    assert stored is not None and stored.created_by == "ana"
    assert 7190 < stored.ends_at - time.time() <= 7200

    listed = cli(redis_url, "silence", "list")
    assert listed.exit_code == 0, listed.output
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "MATCHERS", "ENDS", "COMMENT", "AUTHOR"]
    assert row.startswith(silence_id) and 'tenant="acme",rule=~"daily-.*"' in row
    assert row.rstrip().endswith("INC-4411 known loop  ana")

    routed = cli(redis_url, "alerts", "route", "--labels", "tenant=acme,rule=daily-burn", "--silences")
    assert routed.exit_code == 0, routed.output
    assert f"silenced by {silence_id}" in routed.stdout

    expired = cli(redis_url, "silence", "expire", silence_id)
    assert expired.exit_code == 0 and expired.stdout.startswith(f"expired {silence_id}")
    assert cli(redis_url, "silence", "list").stdout.strip() == "no active silences"
    assert "expired" in cli(redis_url, "silence", "list", "--all").stdout
    assert "not silenced" in cli(redis_url, "alerts", "route", "--labels", "tenant=acme", "--silences").stdout

    again = cli(redis_url, "silence", "expire", silence_id)
    assert again.exit_code == 2 and "already expired" in again.stderr
    unknown = cli(redis_url, "silence", "expire", "no-such-id")
    assert unknown.exit_code == 2 and "no silence with id no-such-id" in unknown.stderr


def test_cli_unreachable_redis_is_one_line() -> None:
    result = CliRunner().invoke(main, ["silence", "list"], env={"SPENDWARDEN_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 2
    assert result.stderr.startswith("spendwarden: error: Redis at 127.0.0.1:1/0: ConnectionError")
