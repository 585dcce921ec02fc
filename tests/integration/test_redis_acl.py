"""Redis with a password and an ACL user limited to the key patterns docs/security.md lists."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from harness import SPENDWARDEN, WorkerRun, encode, event, new_run, produce
from test_worker import _start_private_redis, wait_for

# The worker's user, exactly as docs/security.md gives it.
WORKER_ACL = ["on", ">worker-secret", "resetkeys", "~sw:*", "resetchannels", "&sw:*", "-@all",
              "+ping", "+select", "+hgetall", "+publish", "+evalsha", "+eval", "+script|load", "+script|exists",
              "+hget", "+hset", "+hdel", "+hkeys", "+spublish"]


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[int]:
    """A private redis-server whose default user needs a password, with a worker user per the docs."""
    port, (_, stop_all) = _start_private_redis(tmp_path, "--requirepass", "admin-secret")
    try:  # a failed setup must not leave the server running
        admin = redis.Redis(port=port, password="admin-secret", socket_connect_timeout=0.2)
        wait_for(lambda: _answers(admin), timeout_s=10, what="private redis-server")
        admin.execute_command("ACL", "SETUSER", "sw-worker", *WORKER_ACL)
        admin.close()
        yield port
    finally:
        stop_all()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def run(broker: str, topic_names: Any, tmp_path: Path, locked_redis: int) -> Iterator[WorkerRun]:
    url = f"redis://sw-worker:worker-secret@127.0.0.1:{locked_redis}/0"
    worker = new_run(broker, url, topic_names, tmp_path)
    yield worker
    worker.kill()


def test_worker_runs_as_a_least_privilege_acl_user(run: WorkerRun, locked_redis: int) -> None:
    run.start()
    run.wait_ready()
    produce(run.bootstrap, run.topics["events"], encode(event(i, "30") for i in range(4)))
    admin = redis.Redis(port=locked_redis, password="admin-secret")
    found = wait_for(lambda: admin.hgetall("sw:{acme}:decisions").get(b"chat:low"), what="a decision")
    assert b'"block"' in found
    denied = redis.Redis(port=locked_redis, username="sw-worker", password="worker-secret")
    with pytest.raises(redis.exceptions.NoPermissionError):
        denied.set("other-app:key", "x")  # outside sw:* and outside the granted commands
    assert "worker-secret" not in run.log_path.read_text()


def test_a_user_without_a_permission_the_script_needs_is_refused_at_start(run: WorkerRun, locked_redis: int) -> None:
    """PING and SCRIPT LOAD would pass without +spublish; the start probe runs the script itself."""
    admin = redis.Redis(port=locked_redis, password="admin-secret")
    admin.execute_command("ACL", "SETUSER", "sw-worker", "-spublish")
    done = subprocess.run([SPENDWARDEN, "worker"], env=run.env(), capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"spendwarden: error: Redis at 127.0.0.1:{locked_redis}/0: the user lacks a permission")
    assert "docs/security.md" in lines[0]


def test_wrong_password_is_a_one_line_error(run: WorkerRun, locked_redis: int) -> None:
    env = dict(run.env(), SPENDWARDEN_REDIS_URL=f"redis://sw-worker:not-it@127.0.0.1:{locked_redis}/0")
    started = time.monotonic()
    done = subprocess.run([SPENDWARDEN, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.monotonic() - started < 30
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"spendwarden: error: Redis at 127.0.0.1:{locked_redis}/0 refused the credentials "
                     "(invalid username-password pair or user is disabled.); check the user and password in "
                     "SPENDWARDEN_REDIS_URL, SPENDWARDEN_REDIS_PASSWORD or _FILE"], done.stderr
    assert "not-it" not in done.stderr + done.stdout


GATEWAY_ACL = ["on", ">gateway-secret", "resetkeys", "%R~sw:*", "resetchannels", "&sw:*", "-@all",
               "+ping", "+hmget", "+hgetall", "+ssubscribe", "+sunsubscribe", "+subscribe", "+unsubscribe"]


def test_gateway_user_reads_decisions_and_cannot_write_them(locked_redis: int) -> None:
    admin = redis.Redis(port=locked_redis, password="admin-secret")
    admin.execute_command("ACL", "SETUSER", "sw-gateway", *GATEWAY_ACL)
    admin.hset("sw:{acme}:decisions", mapping={"chat:low": '{"level": "block"}', "_expires_at": "9"})
    gateway = redis.Redis(port=locked_redis, username="sw-gateway", password="gateway-secret")
    assert gateway.hmget("sw:{acme}:decisions", "chat:low", "_expires_at") == [b'{"level": "block"}', b"9"]
    with pytest.raises(redis.exceptions.NoPermissionError):
        gateway.hset("sw:{acme}:decisions", "chat:low", '{"level": "allow"}')
    pubsub = gateway.pubsub()
    pubsub.ssubscribe("sw:{acme}:changes")
    admin.spublish("sw:{acme}:changes", "hello")
    message = wait_for(lambda: pubsub.get_sharded_message(timeout=0.2, ignore_subscribe_messages=True),
                       what="a change message")
    assert message["data"] == b"hello"
    pubsub.close()


GATEWAY_RESERVATION_GRANTS = ["%RW~sw:*:reservations*", "+get", "+hget", "+hexists", "+hset", "+hdel", "+hincrby",
                              "+zadd", "+zrem", "+zrangebyscore", "+time", "+evalsha", "+eval", "+script|load"]


def test_with_the_reservation_grants_a_gateway_reserves_and_releases_but_cannot_touch_spend(
        locked_redis: int) -> None:
    """docs/security.md's grants for gateways: `%RW~sw:*:reservations` and the script's commands."""
    import asyncio

    import redis.asyncio as aioredis

    from spendwarden.gateway.reservations import Reservations
    from spendwarden.streams.publisher import DecisionPublisher

    admin = redis.Redis(port=locked_redis, password="admin-secret")
    admin.execute_command("ACL", "SETUSER", "sw-gateway", *GATEWAY_ACL)
    admin.execute_command("ACL", "SETUSER", "sw-gateway", *GATEWAY_RESERVATION_GRANTS)
    admin.execute_command("ACL", "SETUSER", "sw-worker", "+set", "+hincrby", "+zrem")
    templates = {"version": 1, "rules_version": "v", "budgets": [
        {"budget": "uc", "per_use_case": True, "tiers": None, "use_cases": None, "limit": 10_000_000_000,
         "tenant_limits": {}}]}

    async def as_worker() -> None:
        client = aioredis.Redis(port=locked_redis, username="sw-worker", password="worker-secret")
        publisher = DecisionPublisher(client, generation=1)
        assert await publisher.publish_templates(templates)
        assert await publisher.publish_spend({"acme": {"chat|uc": {"spend": 9_000_000_000, "limit": 10_000_000_000,
                                                                   "end": time.time() + 3600}}}, {}, 1)
        assert publisher.healthy
        await client.aclose()
    asyncio.run(as_worker())

    gateway = redis.Redis(port=locked_redis, username="sw-gateway", password="gateway-secret")
    res = Reservations(gateway)
    assert res.reserve("acme", "chat", "low", "0.75", "call-1").held
    assert not res.reserve("acme", "chat", "low", "0.5", "call-2").allowed  # 9 + 0.75 + 0.5 > 10
    res.release("acme", "call-1")
    assert res.errors == 0 and admin.hlen("sw:{acme}:reservations") == 0 and admin.hlen("sw:{acme}:reservations:held") == 0
    assert res.reserve("acme", "chat", "low", "0.75", "call-3").held

    async def settle() -> None:  # the worker counts call-3: spend and release in one script, as its user
        client = aioredis.Redis(port=locked_redis, username="sw-worker", password="worker-secret")
        publisher = DecisionPublisher(client, generation=1)
        assert await publisher.publish_spend({"acme": {"chat|uc": {"spend": 9_750_000_000, "limit": 10_000_000_000,
                                                                   "end": time.time() + 3600}}}, {"acme": ["call-3"]}, 2)
        assert publisher.healthy and publisher.rejected == 0
        await client.aclose()
    asyncio.run(settle())
    assert admin.hlen("sw:{acme}:reservations") == 0 and admin.zcard("sw:{acme}:reservations:expiries") == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        gateway.hset("sw:{acme}:spend", "chat|uc", "{}")
