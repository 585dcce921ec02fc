"""Cost events from a gateway to Kafka without ever making an LLM call wait for the broker.

A gateway's logging hook runs on the call's event loop, so :meth:`TenantBatcher.add` only
appends to a bounded in-memory buffer and returns. A background task (started lazily inside
the running loop) drains the buffer about every ``linger_s`` seconds: events are grouped by
tenant and each group is sent as records holding a JSON array of at most ``max_batch`` events,
keyed by tenant, so the worker pays its per-record cost once per batch (FACTS.md: Faust costs
~100 µs a record) and one tenant's events stay in one partition, in order.

If the broker is unreachable, events wait in the buffer and are retried with backoff; once the
buffer holds ``buffer_max`` events the oldest are dropped and counted in ``dropped``: losing
the oldest spend is the price of never blocking calls, and the count makes the loss visible.
An ``atexit`` hook tries a last flush when the process ends.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import time
from typing import Any, Awaitable, Callable, Optional, Protocol

try:  # spendwarden depends on prometheus_client; a vendored copy may not
    from prometheus_client import Counter, Gauge
except ImportError:  # pragma: no cover - exercised only without prometheus_client
    Counter = Gauge = None  # type: ignore[assignment,misc]


class Producer(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the batcher uses (fakes in tests)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> Any: ...


ProducerFactory = Callable[[], Producer]

_METRICS: dict[str, Any] = {}


def _metric(kind: Any, name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
    """One process-wide prometheus metric per name (several instances share it), or None."""
    if kind is None:
        return None
    if name not in _METRICS:
        _METRICS[name] = kind(name, doc, labels)
    return _METRICS[name]


class TenantBatcher:
    """Buffers cost events and sends them as per-tenant JSON-array records; see the module doc."""

    def __init__(self, bootstrap: str, topic: str, *, linger_s: float = 0.05, max_batch: int = 50,
                 buffer_max: int = 10_000, request_timeout_s: float = 10.0,
                 producer_factory: Optional[ProducerFactory] = None, flush_at_exit: bool = True) -> None:
        if max_batch < 1 or buffer_max < 1:
            raise ValueError("max_batch and buffer_max must be at least 1")
        self.bootstrap = bootstrap
        self.topic = topic
        self.linger_s = linger_s
        self.max_batch = max_batch
        self.buffer_max = buffer_max
        self.request_timeout_s = request_timeout_s
        self._factory = producer_factory or self._aiokafka_producer
        self._buffer: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._producer: Optional[Producer] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._closing = False
        # Counters: plain attributes, mirrored to prometheus when it is importable.
        self.queued = 0  # events accepted by add()
        self.sent_events = 0
        self.sent_records = 0
        self.dropped = 0  # oldest events dropped because the buffer was full
        self.send_errors = 0  # failed attempts (the events stay buffered)
        self.last_error: Optional[str] = None
        self._m_sent = _metric(Counter, "spendwarden_gateway_cost_events_sent_total",
                               "Cost events the gateway delivered to Kafka")
        self._m_dropped = _metric(Counter, "spendwarden_gateway_cost_events_dropped_total",
                                  "Cost events lost because the gateway's buffer was full")
        self._m_errors = _metric(Counter, "spendwarden_gateway_cost_event_send_errors_total",
                                 "Failed attempts to send cost events to Kafka (events kept)")
        self._m_buffered = _metric(Gauge, "spendwarden_gateway_cost_events_buffered",
                                   "Cost events waiting in the gateway's buffer")
        if flush_at_exit:
            atexit.register(self._flush_at_exit)

    @property
    def buffered(self) -> int:
        """Events waiting to be sent."""
        return len(self._buffer)

    def add(self, event: dict[str, Any]) -> None:
        """Queue one event (must carry ``tenant_id``); never blocks, never raises for a full buffer."""
        self._buffer.append((str(event.get("tenant_id") or ""), event))
        self.queued += 1
        self._trim()
        self._ensure_task()
        if self._wake is not None:
            self._wake.set()  # the sender sleeps on it whenever the buffer ran empty

    def _trim(self) -> None:
        over = len(self._buffer) - self.buffer_max
        for _ in range(max(0, over)):
            self._buffer.popleft()
        if over > 0:
            self.dropped += over
            if self._m_dropped is not None:
                self._m_dropped.inc(over)
        if self._m_buffered is not None:
            self._m_buffered.set(len(self._buffer))

    def _ensure_task(self) -> None:
        """Start the sender in the running loop; restart it if the loop changed (tests, reloads)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: events wait until a later add() inside one, or the exit flush
        if self._task is not None and not self._task.done() and self._loop is loop:
            return
        if self._loop is not loop:
            self._producer = None  # bound to a loop that is gone
        self._loop = loop
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name="spendwarden-cost-events")

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closing:
            assert self._wake is not None
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            if len(self._buffer) < self.max_batch:
                await asyncio.sleep(self.linger_s)
            if await self.send_pending():
                backoff = 0.1
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def send_pending(self) -> bool:
        """Send what is buffered now; False (events kept, counted) if the broker refused or is away."""
        taken = list(self._buffer)
        if not taken:
            return True
        self._buffer.clear()
        chunks = self._chunks(taken)
        done = 0
        try:
            producer = await self._started()
            for tenant, indexes in chunks:
                value = json.dumps([taken[i][1] for i in indexes], separators=(",", ":")).encode()
                await producer.send_and_wait(self.topic, value, key=tenant.encode())
                done += 1
                self.sent_records += 1
                self.sent_events += len(indexes)
                if self._m_sent is not None:
                    self._m_sent.inc(len(indexes))
            return True
        except BaseException as exc:  # any failure keeps the events; the call path never sees it
            self.send_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if self._m_errors is not None:
                self._m_errors.inc()
            # Unsent events go back in front of newer ones, in arrival order; the bound then drops the oldest.
            unsent = sorted(i for _, indexes in chunks[done:] for i in indexes)
            self._buffer.extendleft(taken[i] for i in reversed(unsent))
            self._trim()
            if isinstance(exc, asyncio.CancelledError):
                raise  # whoever cancels (aclose) stops the producer
            await self._drop_producer()
            return False
        finally:
            if self._m_buffered is not None:
                self._m_buffered.set(len(self._buffer))

    def _chunks(self, items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, list[int]]]:
        """(tenant, indexes into ``items``) per record: grouped by tenant, at most ``max_batch`` each."""
        groups: dict[str, list[int]] = {}
        for index, (tenant, _) in enumerate(items):
            groups.setdefault(tenant, []).append(index)
        return [(tenant, indexes[start:start + self.max_batch])
                for tenant, indexes in groups.items()
                for start in range(0, len(indexes), self.max_batch)]

    def records(self, items: list[tuple[str, dict[str, Any]]]) -> list[tuple[bytes, bytes, int]]:
        """(key, JSON array, event count) per record the items would make, in arrival order."""
        return [(tenant.encode(), json.dumps([items[i][1] for i in indexes], separators=(",", ":")).encode(),
                 len(indexes)) for tenant, indexes in self._chunks(items)]

    async def _started(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await _quietly(producer.stop())
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly(producer.stop())

    def _aiokafka_producer(self) -> Producer:
        from aiokafka import AIOKafkaProducer

        timeout_ms = int(self.request_timeout_s * 1000)
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0,
                                request_timeout_ms=timeout_ms, client_id="spendwarden-gateway")

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop the sender, try to send what is left within ``timeout_s``, stop the producer."""
        self._closing = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await _quietly(task)
        deadline = time.monotonic() + timeout_s
        while self._buffer and time.monotonic() < deadline:
            if not await _within(self.send_pending(), deadline - time.monotonic()):
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        await self._drop_producer()
        self._closing = False

    def _flush_at_exit(self) -> None:
        """Last chance at interpreter exit, on a fresh loop (the server's loop is gone by now)."""
        if not self._buffer:
            return
        self._producer = None
        self._task = None
        self._loop = None
        try:
            asyncio.run(self.aclose(timeout_s=min(5.0, self.request_timeout_s)))
        except Exception:  # noqa: BLE001 - exiting anyway; the loss stays in the counters
            pass


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - cleanup
        pass


async def _within(awaitable: Awaitable[bool], timeout_s: float) -> bool:
    try:
        return await asyncio.wait_for(awaitable, max(0.01, timeout_s))
    except (Exception, asyncio.TimeoutError):  # noqa: BLE001
        return False
