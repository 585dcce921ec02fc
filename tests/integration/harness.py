"""Helpers for worker integration tests: run `spendwarden worker` as a real process, produce
cost events with aiokafka, and read back what the worker reports over HTTP and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import orjson

from spendwarden.embedded import TopicSpec, create_topics, free_port

SPENDWARDEN = str(Path(sys.executable).with_name("spendwarden"))

RULES = """
tenants:
  acme: {timezone: UTC, tier: gold, on_stale: closed}
budgets:
  - name: uc-daily
    for_each: [tenant_id, use_case_id]
    period: day
    limit_usd: LIMIT
rules:
  - name: uc-cap
    budget: uc-daily
    when: budget.used_ratio >= 1.0
    severity: high
    decide: {level: block, only_risk_tiers: [low, medium]}
    runbook: https://runbooks.example/uc-cap
"""


class ChildProcess:
    """A `spendwarden <command>` child in its own session, logging to ``log_path``, serving
    ``/readyz`` on ``port``; subclasses give ``command`` and ``env()``."""

    command = "worker"
    process: Optional[subprocess.Popen[bytes]]
    log_path: Path
    port: int

    bootstrap: str
    redis_url: str
    data_dir: Path
    extra_env: dict[str, str]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SPENDWARDEN_KAFKA_BOOTSTRAP": self.bootstrap,
            "SPENDWARDEN_REDIS_URL": self.redis_url,
            "SPENDWARDEN_DATA_DIR": str(self.data_dir),
            "SPENDWARDEN_PARTITIONS": "4",
            "SPENDWARDEN_LOG_JSON": "true",
        })
        env.update(self.own_env())
        env.update(self.extra_env)
        return env

    def own_env(self) -> dict[str, str]:
        """The settings of this kind of process (topics, ports, ...)."""
        raise NotImplementedError

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([SPENDWARDEN, self.command], env=self.env(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            try:
                status, body = http(self.port, "/readyz")
                if status == 200 and body.get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"{self.command} not ready after {timeout_s}s\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class WorkerRun(ChildProcess):
    """One worker deployment (consumer group, topics, rules dir) that can be started many times."""

    bootstrap: str
    redis_url: str
    topics: dict[str, str]
    rules_dir: Path
    data_dir: Path
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    app_id: str = field(default_factory=lambda: f"sw-test-{uuid.uuid4().hex[:8]}")
    process: Optional[subprocess.Popen[bytes]] = None

    def own_env(self) -> dict[str, str]:
        return {
            "SPENDWARDEN_APP_ID": self.app_id,
            "SPENDWARDEN_COST_TOPIC": self.topics["events"],
            "SPENDWARDEN_DEAD_LETTER_TOPIC": self.topics["dead"],
            "SPENDWARDEN_ALERTS_TOPIC": self.topics["alerts"],
            "SPENDWARDEN_DECISIONS_TOPIC": self.topics["decisions"],
            "SPENDWARDEN_LATE_TOPIC": self.topics["late"],
            "SPENDWARDEN_RULES_DIR": str(self.rules_dir),
            "SPENDWARDEN_HTTP_PORT": str(self.port),
        }

    def wait_ready_or_serving(self, timeout_s: float = 60) -> None:
        """Wait until partitions are recovered, even when Redis is unusable (/readyz then says 503)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            try:
                if http(self.port, "/budgets")[0] == 200 and b"partitions recovered" in self.log_path.read_bytes():
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"worker did not recover partitions after {timeout_s}s\n{self.tail()}")

    def budgets(self) -> dict[str, Any]:
        return http(self.port, "/budgets")[1]

    def totals(self) -> dict[tuple[str, str, str], Decimal]:
        return {(b["budget"], "/".join(b["instance"]), b["period"]): Decimal(b["spend_usd"])
                for b in self.budgets()["budgets"]}

    def wait_offsets(self, ends: dict[int, int], timeout_s: float = 60) -> None:
        """Wait until the worker's consumer group has committed every partition up to its end.

        Faust commits an offset only after the batch was processed and its checkpoint flushed,
        so this is the honest "caught up" signal, also right after a restart.
        """
        deadline = time.monotonic() + timeout_s
        committed: dict[int, int] = {}
        while time.monotonic() < deadline:
            committed = committed_offsets(self.bootstrap, self.app_id, self.topics["events"], list(ends))
            if all(committed.get(p, 0) >= end for p, end in ends.items() if end > 0):
                return
            time.sleep(0.5)
        raise AssertionError(f"group committed {committed}, wanted {ends}\n{self.tail()}")


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    async def run() -> dict[int, int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            found = {}
            for p in partitions:
                offset = await consumer.committed(TopicPartition(topic, p))
                found[p] = offset if offset is not None else 0
            return found
        finally:
            await consumer.stop()

    return asyncio.run(run())


def http(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def new_run(bootstrap: str, redis_url: str, topic_names: Callable[..., dict[str, str]], folder: Path,
            limit: str = "100", **rule_files: str) -> WorkerRun:
    """A worker deployment with its own topics and a rules folder: RULES at ``limit`` plus ``rule_files``."""
    topics = topic_names("events", "dead", "alerts", "decisions", "late")
    make_topics(bootstrap, topics)
    rules = folder / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES.replace("LIMIT", limit))
    for name, text in rule_files.items():
        (rules / name).write_text(text)
    return WorkerRun(bootstrap, redis_url, topics, rules, folder / "data", folder / "worker.log")


def make_topics(bootstrap: str, topics: dict[str, str]) -> None:
    asyncio.run(create_topics(bootstrap, [TopicSpec(name, 4, compacted=(base == "decisions"))
                                          for base, name in topics.items()]))


def add_input_topic(worker: WorkerRun, bootstrap: str, topic_names: Callable[..., dict[str, str]], base: str,
                    setting: str) -> None:
    """A further input topic of the worker (traces, outcomes): made, named in ``worker.topics[base]``
    and given to the worker as the env setting ``setting``."""
    made = topic_names(base)
    make_topics(bootstrap, made)
    worker.extra_env[setting] = made[base]
    worker.topics[base] = made[base]


def event(i: int, cost: str, *, tenant: str = "acme", use_case: str = "chat", prefix: str = "e",
          ts: Optional[datetime] = None) -> dict[str, Any]:
    return {"cost_event_id": f"{prefix}{i}", "ts": (ts or datetime.now(timezone.utc)).isoformat(),
            "tenant_id": tenant, "use_case_id": use_case, "risk_tier": "low", "allocated_cost_usd": cost}


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
            pace: Optional[Callable[[int], None]] = None) -> dict[int, int]:
    """Send (key, value) records; returns the end offset of every partition written."""
    async def run() -> dict[int, int]:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        ends: dict[int, int] = {}
        try:
            for n, (key, value) in enumerate(records):
                meta = await (await producer.send(topic, value, key=key))
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
                if pace is not None:
                    pace(n)
        finally:
            await producer.stop()
        return ends

    return asyncio.run(run())


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    async def run() -> dict[int, int]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(4)]
            ends = await consumer.end_offsets(tps)
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(run())


def read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 20) -> list[Any]:
    async def run() -> list[Any]:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    group_id=f"reader-{uuid.uuid4().hex[:6]}", session_timeout_ms=10000,
                                    heartbeat_interval_ms=1000, fetch_max_wait_ms=50)
        await consumer.start()
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(found) < expect and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    found.extend(orjson.loads(m.value) for m in messages)
        finally:
            await consumer.stop()
        return found

    return asyncio.run(run())


def encode(events: Iterable[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    return [(e["tenant_id"].encode(), orjson.dumps(e)) for e in events]
