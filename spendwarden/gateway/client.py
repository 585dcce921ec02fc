"""Gateway clients (sync and asyncio): one HMGET per call, a :class:`Verdict` back, never an exception.

A gateway asks before each LLM call. The answer must come fast (one round trip, no parsing
beyond the few verdicts found) and must never break the call path: a Redis that is down, slow,
refusing the user (ACL) or resharding is treated like stale decisions, so the tenant's
``on_stale`` policy answers (the last ``_on_stale`` this client read for the tenant, else the
client's default) and :attr:`GatewayStats.redis_errors` counts it.

``estimated_cost`` is accepted so the signature stays stable when reservations (ARCHITECTURE.md
§7, built separately) arrive; this client does not use it.

With ``cache_ttl_s > 0`` answers are cached per tenant and scope and dropped when the tenant's
change channel announces a write (``SSUBSCRIBE sw:{tenant}:changes``, subscribed lazily per
tenant seen); see :mod:`spendwarden.gateway.cache` for when an answer may be stored. The cache
needs a plain (non-cluster) client; on Redis Cluster use it without a cache.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from .cache import DecisionCache, Raw
from .verdicts import Verdict, decide, normalise_tier, stale_policy, stale_verdict, verdict_fields

# Everything a Redis call may raise for reasons outside our code: server down, timeouts,
# refused credentials or ACL, cluster moving slots.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)
LISTEN_POLL_S = 1.0
SUBSCRIBE_RETRY_S = 5.0


def decisions_key(tenant: str) -> str:
    """``sw:{tenant}:decisions`` (same as the writer's helper; repeated to stay redis-py only)."""
    return f"sw:{{{tenant}}}:decisions"


def changes_channel(tenant: str) -> str:
    return f"sw:{{{tenant}}}:changes"


@dataclass
class GatewayStats:
    """Plain counters for the gateway's own metrics; no metrics library needed."""

    checks: int = 0
    allows: int = 0
    degrades: int = 0
    throttles: int = 0
    blocks: int = 0
    stale: int = 0
    redis_errors: int = 0
    cache_hits: int = 0
    invalid_tenants: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Core:
    """What both clients share: argument checks, decisions, the stale policy memory, counters."""

    def __init__(self, on_stale: str, cache_ttl_s: float, clock: Callable[[], float]) -> None:
        if on_stale not in ("open", "closed"):
            raise ValueError(f"on_stale must be 'open' or 'closed', not {on_stale!r}")
        if cache_ttl_s < 0:
            raise ValueError("cache_ttl_s must be >= 0")
        self.on_stale = on_stale
        self.stats = GatewayStats()
        self._clock = clock
        self._policy: dict[str, str] = {}  # last _on_stale read per tenant, for Redis errors
        self.cache: Optional[DecisionCache] = DecisionCache(cache_ttl_s) if cache_ttl_s > 0 else None
        self._subscribed: set[str] = set()
        self._retry_subscribe: dict[str, float] = {}

    def _scope(self, tenant: str, use_case: str, risk_tier: Optional[str],
               model: Optional[str]) -> Union[Verdict, tuple[str, tuple[str, ...], str]]:
        """(key, fields, tier), or the stale answer for a tenant id no key can hold."""
        self.stats.checks += 1
        if not isinstance(tenant, str) or not tenant or "{" in tenant or "}" in tenant:
            self.stats.invalid_tenants += 1
            return self._count(stale_verdict(self.on_stale, f"tenant id {tenant!r} unusable in a Redis key"))
        tier = normalise_tier(risk_tier)
        return decisions_key(tenant), verdict_fields(use_case or "*", tier, model), tier

    def _cached(self, tenant: str, fields: tuple[str, ...], tier: str) -> Optional[Verdict]:
        """A fresh verdict from the cache; an answer that looks stale now is re-read instead."""
        assert self.cache is not None
        values = self.cache.get(tenant, fields)
        if values is None:
            return None
        verdict = decide(values, tier, self._clock(), self._policy.get(tenant, self.on_stale), tenant=tenant)
        if verdict.stale:
            self.cache.drop(tenant, fields)  # the worker may have refreshed it meanwhile
            return None
        self.stats.cache_hits += 1
        return self._count(verdict)

    def _decided(self, tenant: str, fields: tuple[str, ...], tier: str, raw: list[Raw]) -> Verdict:
        values = dict(zip(fields, raw))
        policy = stale_policy(values, self.on_stale)
        self._policy[tenant] = policy
        return self._count(decide(values, tier, self._clock(), policy, tenant=tenant))

    def _failed(self, tenant: str, exc: BaseException) -> Verdict:
        self.stats.redis_errors += 1
        why = f"redis unavailable: {type(exc).__name__}"  # no message: it can carry addresses
        return self._count(stale_verdict(self._policy.get(tenant, self.on_stale), why, tenant))

    def _count(self, verdict: Verdict) -> Verdict:
        stats, action = self.stats, verdict.action
        if action == "allow":
            stats.allows += 1
        elif action == "degrade":
            stats.degrades += 1
        elif action == "throttle":
            stats.throttles += 1
        else:
            stats.blocks += 1
        if verdict.stale:
            stats.stale += 1
        return verdict

    def _may_subscribe(self, tenant: str) -> bool:
        return tenant not in self._subscribed and self._retry_subscribe.get(tenant, 0.0) <= time.monotonic()

    def _subscribe_failed(self, tenant: str) -> None:
        self._subscribed.discard(tenant)
        self._retry_subscribe[tenant] = time.monotonic() + SUBSCRIBE_RETRY_S


class _SyncChanges(redis.client.PubSub):
    """PubSub that reports every (re)connect: whatever was published while away is lost."""

    on_reconnect: Callable[[], None]

    def on_connect(self, connection: Any) -> None:
        self.on_reconnect()
        super().on_connect(connection)


class _AsyncChanges(aioredis.client.PubSub):
    on_reconnect: Callable[[], None]

    async def on_connect(self, connection: Any) -> None:
        self.on_reconnect()
        await super().on_connect(connection)


def _pubsub(client: Any, cls: Any, on_reconnect: Callable[[], None]) -> Any:
    """``client.pubsub()`` with our class (redis-py registers the bound ``on_connect``)."""
    extra = {"event_dispatcher": client._event_dispatcher} if hasattr(client, "_event_dispatcher") else {}
    pubsub = cls(client.connection_pool, **extra)
    pubsub.on_reconnect = on_reconnect
    return pubsub


class GatewayClient(_Core):
    """Blocking client for threaded gateways. Give ``redis`` short socket timeouts: a check waits
    at most as long as the client's ``socket_timeout`` (then the stale policy answers)."""

    def __init__(self, redis: redis.Redis, *, on_stale: str = "open", cache_ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(on_stale, cache_ttl_s, clock)
        if self.cache is not None and getattr(redis, "connection_pool", None) is None:
            raise ValueError("the local cache needs a non-cluster redis client")
        self._redis = redis
        self._pubsub: Any = None
        self._listener: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._sub_lock = threading.Lock()

    def check(self, tenant: str, use_case: str, risk_tier: Optional[str], model: Optional[str] = None,
              estimated_cost: Optional[float] = None) -> Verdict:
        """The verdict for one call; ``estimated_cost`` is reserved for reservations (unused)."""
        scope = self._scope(tenant, use_case, risk_tier, model)
        if isinstance(scope, Verdict):
            return scope
        key, fields, tier = scope
        token = None
        if self.cache is not None:
            hit = self._cached(tenant, fields, tier)
            if hit is not None:
                return hit
            if self._may_subscribe(tenant):
                self._subscribe(tenant)
            token = self.cache.token(tenant)
        try:
            raw = self._redis.hmget(key, fields)
        except REDIS_FAILURES as exc:
            return self._failed(tenant, exc)
        if self.cache is not None and token is not None:
            self.cache.store(tenant, fields, dict(zip(fields, raw)), token)
        return self._decided(tenant, fields, tier, raw)

    def close(self) -> None:
        """Stop the change listener (if any) and release its connection; the redis client stays open."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=LISTEN_POLL_S + 2)
            self._listener = None
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except REDIS_FAILURES:
                pass
            self._pubsub = None
        self._subscribed.clear()

    def _subscribe(self, tenant: str) -> None:
        cache = self.cache
        assert cache is not None
        with self._sub_lock:
            if tenant in self._subscribed:
                return
            try:
                if self._pubsub is None:
                    self._pubsub = _pubsub(self._redis, _SyncChanges, cache.reset)
                self._pubsub.ssubscribe(changes_channel(tenant))
                self._subscribed.add(tenant)
            except REDIS_FAILURES:
                self._subscribe_failed(tenant)
                return
            if self._listener is None:
                self._stop.clear()
                self._listener = threading.Thread(target=self._listen, name="spendwarden-gateway-changes",
                                                  daemon=True)
                self._listener.start()

    def _listen(self) -> None:
        """Own loop rather than ``run_in_thread``: the cache needs the subscribe confirmations."""
        cache = self.cache
        assert cache is not None
        while not self._stop.is_set():
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                message = pubsub.get_sharded_message(ignore_subscribe_messages=False, timeout=LISTEN_POLL_S)
            except Exception:  # noqa: BLE001 - any failure: the subscription can no longer be trusted
                cache.reset()
                self._stop.wait(0.2)
                continue
            cache.on_message(message)


class AsyncGatewayClient(_Core):
    """asyncio client; same behaviour as :class:`GatewayClient`, with ``await check(...)``."""

    def __init__(self, redis: aioredis.Redis, *, on_stale: str = "open", cache_ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(on_stale, cache_ttl_s, clock)
        if self.cache is not None and getattr(redis, "connection_pool", None) is None:
            raise ValueError("the local cache needs a non-cluster redis client")
        self._redis = redis
        self._pubsub: Any = None
        self._listener: Optional[asyncio.Task[None]] = None
        self._sub_lock = asyncio.Lock()

    async def check(self, tenant: str, use_case: str, risk_tier: Optional[str], model: Optional[str] = None,
                    estimated_cost: Optional[float] = None) -> Verdict:
        """The verdict for one call; ``estimated_cost`` is reserved for reservations (unused)."""
        scope = self._scope(tenant, use_case, risk_tier, model)
        if isinstance(scope, Verdict):
            return scope
        key, fields, tier = scope
        token = None
        if self.cache is not None:
            hit = self._cached(tenant, fields, tier)
            if hit is not None:
                return hit
            if self._may_subscribe(tenant):
                await self._subscribe(tenant)
            token = self.cache.token(tenant)
        try:
            raw = await self._redis.hmget(key, fields)
        except REDIS_FAILURES as exc:
            return self._failed(tenant, exc)
        if self.cache is not None and token is not None:
            self.cache.store(tenant, fields, dict(zip(fields, raw)), token)
        return self._decided(tenant, fields, tier, raw)

    async def close(self) -> None:
        """Stop the change listener (if any) and release its connection; the redis client stays open."""
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
                pass
            self._listener = None
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except REDIS_FAILURES:
                pass
            self._pubsub = None
        self._subscribed.clear()

    async def _subscribe(self, tenant: str) -> None:
        cache = self.cache
        assert cache is not None
        async with self._sub_lock:
            if tenant in self._subscribed:
                return
            try:
                if self._pubsub is None:
                    self._pubsub = _pubsub(self._redis, _AsyncChanges, cache.reset)
                await self._pubsub.ssubscribe(changes_channel(tenant))
                self._subscribed.add(tenant)
            except REDIS_FAILURES:
                self._subscribe_failed(tenant)
                return
            if self._listener is None:
                self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        cache = self.cache
        assert cache is not None
        while self._pubsub is not None:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=LISTEN_POLL_S)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - any failure: the subscription can no longer be trusted
                cache.reset()
                await asyncio.sleep(0.2)
                continue
            cache.on_message(message)
