"""The only code that writes decisions to Redis (key contract v1, see docs/redis.md).

Gateways read one hash per tenant with a single ``HMGET``; this module keeps that hash right
under the conditions a streaming worker lives in: several incarnations of a worker may run
at once during a rebalance (a *zombie* keeps writing after it lost the tenant), and Redis may
go away. Hence:

* every write is fenced by ``(generation, position)`` in a Lua script, so an older worker
  (lower generation) or a replay of older input (same generation, lower position) cannot
  overwrite newer state; the check and the write are one atomic script;
* Redis errors never stop the worker: they flip :attr:`DecisionPublisher.healthy` and are
  logged once per outage; after recovery the caller runs :meth:`DecisionPublisher.republish`
  so nothing stale survives the gap.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AskError, AuthenticationError, ClusterDownError, ClusterError, MovedError, NoPermissionError,
    RedisClusterException, ResponseError, TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from spendwarden.gateway.reservations import HOLD_LUA, TEMPLATES_KEY, hold_keys, spend_key
from spendwarden.logs import get_logger
from spendwarden.streams.effects import DecisionChanged

CONTRACT_VERSION = 1
META_PREFIX = "_"
EXPIRES_FIELD = "_expires_at"
FENCE_FIELD = "_fence"
RULES_VERSION_FIELD = "_rules_version"
ON_STALE_FIELD = "_on_stale"

log = get_logger(__name__)
T = TypeVar("T")


def decisions_key(tenant: str) -> str:
    """Hash holding a tenant's verdicts; ``{tenant}`` is the Cluster hash tag (one slot per tenant)."""
    _check_tenant(tenant)
    return f"sw:{{{tenant}}}:decisions"


def changes_channel(tenant: str) -> str:
    """Sharded pub/sub channel announcing changes; same hash tag, so same slot as the hash."""
    _check_tenant(tenant)
    return f"sw:{{{tenant}}}:changes"


def _check_tenant(tenant: str) -> None:
    # A brace would move the hash tag and split a tenant's keys across slots.
    if not tenant or "{" in tenant or "}" in tenant:
        raise ValueError(f"tenant id unusable in a Redis key: {tenant!r}")


# KEYS[1] decisions hash. The change channel is ARGV[7], not a key: a second key that never
# exists makes a node importing the slot answer TRYAGAIN while a cluster reshards.
# ARGV[1] generation, ARGV[2] position, ARGV[3] expires_at, ARGV[4] mode (apply|replace|heartbeat),
# ARGV[5] rules_version ('' keeps it), ARGV[6] n = fields to set, ARGV[7] change channel, ARGV[8] the
# tenant's on_stale policy ('' keeps it), then n field/value pairs, then the fields to delete. Numbers
# compare as Lua doubles: exact below 2^53.
FENCED_WRITE_SCRIPT = """
local gen = tonumber(ARGV[1])
local pos = tonumber(ARGV[2])
local mode = ARGV[4]
local stored = redis.call('HGET', KEYS[1], '_fence')
local sgen, spos
if stored then
  local g, p = string.match(stored, '^(%-?%d+):(%-?%d+)$')
  sgen, spos = tonumber(g), tonumber(p)
end
if sgen then
  if gen < sgen then return 0 end
  if mode ~= 'heartbeat' and gen == sgen and pos < spos then return 0 end
end
local fence = ARGV[1] .. ':' .. ARGV[2]
if mode == 'heartbeat' then
  if sgen and gen == sgen then fence = stored else fence = ARGV[1] .. ':-1' end
end
local changed, keep = {}, {}
local n = tonumber(ARGV[6])
local channel = ARGV[7]
local i = 9
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  keep[ARGV[i]] = true
  changed[#changed + 1] = ARGV[i]
  i = i + 2
end
if mode == 'replace' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 1) ~= '_' and not keep[f] then
      redis.call('HDEL', KEYS[1], f)
      changed[#changed + 1] = f
    end
  end
end
for j = i, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[j])
  changed[#changed + 1] = ARGV[j]
end
redis.call('HSET', KEYS[1], '_fence', fence, '_expires_at', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], '_rules_version', ARGV[5]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], '_on_stale', ARGV[8]) end
if #changed > 0 then
  redis.call('SPUBLISH', channel, cjson.encode({fields = changed, fence = fence}))
end
return 1
"""


# KEYS[1] spend hash, then the tenant's holds, their expiries and the held totals (same hash
# tag; spendwarden.gateway.reservations). ARGV[1] generation, ARGV[2] position, ARGV[3] n = fields
# to set, then n field/value pairs, then the cost_event_ids whose holds the published spend now
# includes. Fenced like decisions: a zombie or a replay of older input cannot set spend back
# (which would let gateways reserve money already spent); and a value of an earlier period (a
# late event) never replaces the current period's.
SPEND_SCRIPT = HOLD_LUA + """
local gen = tonumber(ARGV[1])
local pos = tonumber(ARGV[2])
local stored = redis.call('HGET', KEYS[1], '_fence')
if stored then
  local g, p = string.match(stored, '^(%-?%d+):(%-?%d+)$')
  if gen < tonumber(g) or (gen == tonumber(g) and pos < tonumber(p)) then return 0 end
end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  local new = cjson.decode(ARGV[i + 1])
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  local keep = false
  if old then
    local ok, o = pcall(cjson.decode, old)
    keep = ok and type(o) == 'table' and tonumber(o['end']) ~= nil and tonumber(o['end']) > tonumber(new['end'])
  end
  if not keep then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
redis.call('HSET', KEYS[1], '_fence', ARGV[1] .. ':' .. ARGV[2])
for j = i, #ARGV do
  drop_hold(KEYS[2], KEYS[3], KEYS[4], ARGV[j])
end
return 1
"""


class DecisionPublisher:
    """Publishes verdicts for the tenants a worker owns, fenced by its ``generation``.

    ``generation`` must grow with every new owner of a partition (e.g. the consumer group
    generation or a counter in Redis); ``position`` is the source offset of the input that
    produced a change. ``rejected`` counts writes refused by the fence: each is a sign that
    this process is a zombie and should stop.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        generation: int,
        heartbeat_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self.generation = int(generation)
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self._clock = clock
        self._script = redis.register_script(FENCED_WRITE_SCRIPT)
        self._spend_script = redis.register_script(SPEND_SCRIPT)
        self._healthy = True
        # Set by any failed call, cleared by the service once a republish went through: a
        # failed batch followed by a good one must not leave its decisions out of Redis.
        self.write_failed = False
        self.rejected = 0
        # The tenant's on_stale policy ("open" | "closed"), written as ``_on_stale`` with every
        # write, so a gateway knows what to do once the state goes stale; "" writes nothing.
        self.on_stale: Callable[[str], str] = lambda tenant: ""

    @property
    def healthy(self) -> bool:
        """False since the last Redis connection error, timeout or refusal, until a call succeeds."""
        return self._healthy

    async def apply(self, changes: Sequence[DecisionChanged], position: int) -> int:
        """Write changed verdicts (None deletes the field); returns the number of tenants written."""
        by_tenant: dict[str, dict[str, dict[str, Any] | None]] = {}
        for change in changes:
            _check_field(change.field)
            by_tenant.setdefault(change.tenant_id, {})[change.field] = change.verdict  # last wins
        if not by_tenant:
            return 0
        calls = [(t, "apply", fields) for t, fields in by_tenant.items()]
        return await self._run(calls, position)

    async def heartbeat(self, tenants: Iterable[str]) -> None:
        """Extend ``_expires_at`` of owned tenants; fenced, so a zombie cannot keep state fresh."""
        calls = [(t, "heartbeat", {}) for t in dict.fromkeys(tenants)]
        if calls:
            await self._run(calls, -1)

    async def republish(self, verdicts: Mapping[str, Mapping[str, dict[str, Any]]], position: int) -> None:
        """Replace each given tenant's whole decision set (after an outage nothing stale may remain)."""
        calls = []
        for tenant, fields in verdicts.items():
            for name in fields:
                _check_field(name)
            calls.append((tenant, "replace", dict(fields)))
        if calls:
            await self._run(calls, position)

    async def publish_spend(self, fields: Mapping[str, Mapping[str, dict[str, Any]]],
                            settled: Mapping[str, Sequence[str]], position: int) -> bool:
        """Set reservable budgets' absolute spend (never INCR: a replay cannot count twice) and
        release the reservations of the cost events it now includes, atomically per tenant.
        False when Redis failed (the caller republishes from its state later)."""
        tenants = list(dict.fromkeys([*fields, *settled]))
        if not tenants:
            return True
        calls = []
        for tenant in tenants:
            values = fields.get(tenant, {})
            args: list[Any] = [self.generation, position, len(values)]
            for name, value in values.items():
                args += [name, orjson.dumps(value)]
            args += list(settled.get(tenant, ()))
            _check_tenant(tenant)
            calls.append(([spend_key(tenant), *hold_keys(tenant)], args))
        if isinstance(self._redis, RedisCluster):
            gate = asyncio.Semaphore(CLUSTER_CONCURRENCY)

            async def one(keys: list[str], args: list[Any]) -> Any:
                async with gate:
                    return await self._spend_script(keys=keys, args=args)
            outcome = await self._guard(asyncio.gather(*(one(k, a) for k, a in calls)))
        else:
            pipe = self._redis.pipeline(transaction=False)
            for keys, args in calls:
                await self._spend_script(keys=keys, args=args, client=pipe)
            outcome = await self._guard(pipe.execute())
        if outcome is None:
            return False
        refused = sum(1 for r in outcome if int(r) != 1)
        if refused:
            self.rejected += refused
            log.warning("spend_write_fenced", rejected=refused, generation=self.generation)
        return True

    async def publish_templates(self, templates: dict[str, Any]) -> bool:
        """Which budgets gateways reserve against and their limits (``sw:reservable``); a plain SET:
        it is a function of the rules alone, so every worker running them writes the same."""
        return await self._guard(self._redis.set(TEMPLATES_KEY, orjson.dumps(templates))) is not None

    async def read(self, tenant: str) -> dict[str, dict[str, Any]]:
        """A tenant's verdicts by field (meta ``_`` fields left out); for tests and ``status``."""
        raw = await self._guard(self._redis.hgetall(decisions_key(tenant)))
        out: dict[str, dict[str, Any]] = {}
        for name, value in (raw or {}).items():
            name = name.decode() if isinstance(name, bytes) else name
            if not name.startswith(META_PREFIX):
                out[name] = orjson.loads(value)
        return out

    async def _run(
        self, calls: list[tuple[str, str, Mapping[str, dict[str, Any] | None]]], position: int
    ) -> int:
        """One script call per tenant, pipelined (or concurrent on Redis Cluster, whose
        pipelines refuse scripts); returns how many the fence accepted."""
        expires_at = f"{self._clock() + self.heartbeat_ttl_s:.3f}"
        cluster = isinstance(self._redis, RedisCluster)
        pipe = None if cluster else self._redis.pipeline(transaction=False)
        pending: list[tuple[list[str], list[Any]]] = []
        for tenant, mode, fields in calls:
            sets: list[str | bytes] = []
            dels: list[str] = []
            rules_version = ""
            for name, verdict in fields.items():
                if verdict is None:
                    dels.append(name)
                else:
                    sets += [name, orjson.dumps(verdict)]
                    rules_version = str(verdict.get("rules_version") or rules_version)
            args: list[Any] = [self.generation, position, expires_at, mode, rules_version, len(sets) // 2]
            keys = [decisions_key(tenant)]
            args += [changes_channel(tenant), self.on_stale(tenant)]
            if pipe is None:
                pending.append((keys, args + sets + dels))
            else:
                await self._script(keys=keys, args=args + sets + dels, client=pipe)
        results = await (self._guard(pipe.execute()) if pipe is not None else self._concurrently(pending))
        if results is None:
            return 0
        accepted = sum(1 for r in results if int(r) == 1)
        rejected = len(results) - accepted
        if rejected:
            self.rejected += rejected
            log.warning("decision_write_fenced", rejected=rejected, generation=self.generation)
        return accepted

    async def _concurrently(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any] | None:
        """Redis Cluster: the script calls, a bounded number at a time (the client keeps a
        limited pool per node). Any failure counts as a failed write (republished later);
        the calls that succeeded still count."""
        gate = asyncio.Semaphore(CLUSTER_CONCURRENCY)

        async def one(keys: list[str], args: list[Any]) -> Any:
            async with gate:
                return await self._script(keys=keys, args=args)

        outcomes = await asyncio.gather(*(one(keys, args) for keys, args in calls), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures[:1]:
            if not self._outage(failure):
                raise failure
        if not failures:
            self._mark_healthy()
        return [o for o in outcomes if not isinstance(o, BaseException)]

    async def _guard(self, awaitable: Awaitable[T]) -> T | None:
        """Await a Redis call; connection trouble marks us unhealthy instead of raising.

        The worker must keep consuming while Redis is away (spend still has to be counted);
        gateways meanwhile see ``_expires_at`` pass and apply their ``on_stale`` policy.
        """
        try:
            result = await awaitable
        except Exception as exc:  # noqa: BLE001 - sorted by _outage; anything else is re-raised
            if not self._outage(exc):
                raise
            return None
        self._mark_healthy()
        return result

    def _outage(self, exc: BaseException) -> bool:
        """Mark Redis unhealthy (and the writes as failed) for an outage or a refusal; False for
        anything else, which is a bug to surface."""
        if isinstance(exc, (AuthenticationError, NoPermissionError)) or (
                isinstance(exc, ResponseError) and is_acl_refusal(exc)):
            # Credentials or ACL changed under a running worker: keep counting, report it, and
            # republish once Redis accepts writes again (docs/security.md lists what is needed).
            if self._healthy:
                log.error("redis_refused", error=type(exc).__name__, detail=str(exc).splitlines()[0][:200])
        elif isinstance(exc, _OUTAGES):
            if self._healthy:
                # Only the class name: messages and client reprs can carry addresses or URLs.
                log.warning("redis_unavailable", error=type(exc).__name__)
        else:
            return False
        self._healthy = False
        self.write_failed = True
        return True

    def _mark_healthy(self) -> None:
        if not self._healthy:
            log.info("redis_recovered")
        self._healthy = True


CLUSTER_CONCURRENCY = 16
# Redis away, or a cluster reconfiguring (a node down, a slot moving): retry by republishing.
_OUTAGES = (RedisConnectionError, RedisTimeoutError, asyncio.TimeoutError, RedisClusterException, ClusterError,
            ClusterDownError, TryAgainError, AskError, MovedError)

# Commands refused inside a script come back as plain ERR replies, not NOPERM (Redis 7.0).
_ACL_WORDS = ("NOPERM", "can't run this command", "can't publish to the channel", "can't access at least one of the keys",
              "ACL failure in script", "no permissions to")


def is_acl_refusal(exc: ResponseError) -> bool:
    """Whether Redis refused a command for the user's ACL (not a bug in the command)."""
    text = str(exc)
    return isinstance(exc, NoPermissionError) or any(word in text for word in _ACL_WORDS)


def probe_write(client: Any) -> None:
    """Run the fenced-write script as the worker will, on a probe key (sync client): set a
    field and publish, then delete it (HGET, HSET, HKEYS, HDEL, SPUBLISH on ``sw:*``)."""
    key, channel = decisions_key(PROBE_TENANT), changes_channel(PROBE_TENANT)
    client.eval(FENCED_WRITE_SCRIPT, 1, key, 0, 0, 0, "replace", "", 1, channel, "", "probe", "1")
    client.eval(FENCED_WRITE_SCRIPT, 1, key, 0, 0, 0, "replace", "", 0, channel, "")


PROBE_TENANT = "__spendwarden_probe__"


def _check_field(name: str) -> None:
    # ``_`` fields are the contract's metadata; a decision must never overwrite them.
    if not name or name.startswith(META_PREFIX):
        raise ValueError(f"invalid decision field: {name!r}")
