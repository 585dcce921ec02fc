"""Budget reservations: hold a call's expected cost before making it, so concurrent gateways
overshoot a budget by at most what calls cost beyond their reservations, not by N × budget.

Needs only redis-py. For budgets with ``reservations: true`` the worker publishes exact spend
to ``sw:{tenant}:spend`` (fenced SET, never INCR) and, in the same atomic script, releases the
reservations of the cost events that spend now includes. A reservation is a field of
``sw:{tenant}:reservations`` named by the call's ``cost_event_id``, so the gateway must send
the call's cost event with that id (the LiteLLM plugin does). Which budgets cover a call (by use
case and risk tier) and their limits come from ``sw:reservable``, which the worker writes from
the rules; the reservation script then checks, atomically, each of them:
``spend + open reservations holding it + estimate ≤ limit`` (a budget nobody spent in yet has
spent 0). A reservation is released when the worker
counts the call's cost event, when the gateway reports the call failed (``release``), or when
its TTL passes (set it above the pipeline's worst lag; 10 minutes by default).
Contract: docs/redis.md, "Reservations".
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Optional, Union

from redis.exceptions import RedisError

from .verdicts import normalise_tier

NANOS = Decimal(1_000_000_000)
Money = Union[Decimal, float, int, str]

# The holds of one tenant live in three keys of its hash slot: a hash id -> {"a": nano-USD,
# "e": expiry, "f": [budget fields]}, a sorted set of expiries, and a hash of the running total
# held per budget field, so a reservation costs the same however many holds are open. Both the
# gateway's scripts and the worker's settle script drop a hold with this function.
HOLD_LUA = """
local function drop_hold(holds, expiries, totals, id)
  local raw = redis.call('HGET', holds, id)
  if raw then
    local ok, r = pcall(cjson.decode, raw)
    local a = ok and type(r) == 'table' and type(r.f) == 'table' and math.floor(tonumber(r.a) or 0) or 0
    if a > 0 then  -- integers as text: '%.14g' would give 1e+15, and Redis refuses "-0"
      for _, f in ipairs(r.f) do
        if redis.call('HINCRBY', totals, f, string.format('%d', -a)) <= 0 then redis.call('HDEL', totals, f) end
      end
    end
    redis.call('HDEL', holds, id)
  end
  redis.call('ZREM', expiries, id)
end
local function expire_holds(holds, expiries, totals, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 200)) do
    drop_hold(holds, expiries, totals, id)
  end
end
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: holds, expiries, totals. ARGV: the spend hash (same hash tag, so same slot; an argument,
# not a key, because Redis checks a script's declared keys for write access and gateways may
# only read spend), amount (nano-USD), reservation id, ttl seconds, then (field, limit) for each
# reservable budget covering the call (from ``sw:reservable``). Time is Redis' own (TIME), so a
# gateway with a wrong clock cannot expire others' holds. A budget instance nobody spent in yet,
# or whose period ended, has spent 0 against the template's limit.
# Returns {1} held, {2} no reservable budget covers the call (nothing held), {0, field, available}.
RESERVE_SCRIPT = HOLD_LUA + """
local spend_key, id, ttl = ARGV[1], ARGV[3], tonumber(ARGV[4])
local amount = math.max(0, math.floor(tonumber(ARGV[2])))
if #ARGV < 6 then return {2} end
local now = redis_now()
expire_holds(KEYS[1], KEYS[2], KEYS[3], now)
if redis.call('HEXISTS', KEYS[1], id) == 1 then return {1} end
local fields = {}
for j = 5, #ARGV - 1, 2 do
  local field, limit = ARGV[j], tonumber(ARGV[j + 1])
  local spend = 0
  local raw = redis.call('HGET', spend_key, field)
  if raw then
    local ok, b = pcall(cjson.decode, raw)
    if ok and type(b) == 'table' and tonumber(b['end']) and tonumber(b['end']) > now then
      spend = tonumber(b.spend) or 0
      limit = tonumber(b.limit) or limit
    end
  end
  local available = limit - spend - (tonumber(redis.call('HGET', KEYS[3], field)) or 0)
  if amount > available then return {0, field, string.format('%.0f', available)} end
  fields[#fields + 1] = field
end
redis.call('HSET', KEYS[1], id, cjson.encode({a = string.format('%d', amount), e = now + ttl, f = fields}))
redis.call('ZADD', KEYS[2], string.format('%.3f', now + ttl), id)
if amount > 0 then
  for _, f in ipairs(fields) do redis.call('HINCRBY', KEYS[3], f, string.format('%d', amount)) end
end
return {1}
"""

# KEYS: holds, expiries, totals. ARGV: the reservation id.
RELEASE_SCRIPT = HOLD_LUA + """
drop_hold(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return 1
"""
TEMPLATES_KEY = "sw:reservable"


def covering(templates: dict[str, Any], tenant: str, use_case: str, tier: str) -> list[Any]:
    """(spend field, limit in nano-USD) of each reservable budget that counts this call."""
    found: list[Any] = []
    for budget in templates.get("budgets", []):
        if budget["tiers"] is not None and tier not in budget["tiers"]:
            continue
        if budget["use_cases"] is not None and use_case not in budget["use_cases"]:
            continue
        limit = budget["tenant_limits"].get(tenant, budget["limit"])
        if limit is not None:
            found += [f"{use_case if budget['per_use_case'] else '*'}|{budget['budget']}", int(limit)]
    return found


@dataclass(frozen=True)
class Reservation:
    """The answer to ``reserve``: whether to make the call, and whether money is held for it."""

    allowed: bool
    held: bool  # release it if the call fails; the worker releases it when it counts the call
    reservation_id: str
    reason: str
    budget: Optional[str] = None  # the budget that refused, as "<use case>|<budget>"
    available_usd: Optional[Decimal] = None
    error: bool = False  # Redis could not be asked; ``allowed`` is the on_error policy


def spend_key(tenant: str) -> str:
    """The tenant's reservable budgets' spend, written by the worker (same slot as its holds)."""
    return f"sw:{{{tenant}}}:spend"


def hold_keys(tenant: str) -> list[str]:
    """The tenant's holds, their expiries and the running totals per budget field (one slot)."""
    base = f"sw:{{{tenant}}}:reservations"
    return [base, base + ":expiries", base + ":held"]


def _nanos(usd: Money) -> int:
    return int((Decimal(str(usd)) * NANOS).to_integral_value())


def _answer(raw: Any, reservation_id: str) -> Reservation:
    code = int(raw[0])
    if code == 1:
        return Reservation(True, True, reservation_id, "reserved")
    if code == 2:
        return Reservation(True, False, reservation_id, "no reservable budget covers this call")
    field = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
    available = Decimal(raw[2].decode() if isinstance(raw[2], bytes) else str(raw[2])) / NANOS
    return Reservation(False, False, reservation_id,
                       f"budget {field.split('|', 1)[-1]} has {max(available, Decimal(0)):.6f} USD left "
                       f"after spend and open reservations", field, available)


def _parse(raw: Any) -> dict[str, Any]:
    """``sw:reservable`` as published by the worker ({} when no worker published it yet)."""
    return json.loads(raw) if raw else {}


class _Holds:
    """What the sync and asyncio classes share: settings, the cached templates, the script arguments."""

    def __init__(self, redis: Any, *, ttl_s: float = 600.0, on_error: str = "open", templates_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.ttl_s, self.on_error, self.clock = redis, ttl_s, on_error, clock
        self.templates_ttl_s = templates_ttl_s
        self._script = redis.register_script(RESERVE_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._templates: tuple[float, dict[str, Any]] = (-1e18, {})
        self.errors = 0
        self.templates_missing = 0  # times sw:reservable was missing: calls then go ahead unheld

    def _templates_due(self) -> bool:
        return self.clock() - self._templates[0] > self.templates_ttl_s

    def _keep_templates(self, raw: Any) -> None:
        if not raw:
            self.templates_missing += 1
        self._templates = (self.clock(), _parse(raw))

    def _args(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
              reservation_id: str) -> list[Any]:
        budgets = covering(self._templates[1], tenant, use_case, normalise_tier(risk_tier))
        return [spend_key(tenant), max(0, _nanos(estimated_cost_usd)), reservation_id, self.ttl_s, *budgets]

    def _failed(self, reservation_id: str, exc: BaseException) -> Reservation:
        self.errors += 1
        return Reservation(self.on_error == "open", False, reservation_id,
                           f"reservation not checked ({type(exc).__name__}); on_error {self.on_error}", error=True)


class Reservations(_Holds):
    """Reserve and release on a sync redis-py client; never raises on Redis errors."""

    def reserve(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
                reservation_id: str) -> Reservation:
        """Hold ``estimated_cost_usd`` under ``reservation_id`` (the call's cost_event_id)."""
        try:
            if self._templates_due():
                self._keep_templates(self.redis.get(TEMPLATES_KEY))
            args = self._args(tenant, use_case, risk_tier, estimated_cost_usd, reservation_id)
            return _answer(self._script(keys=hold_keys(tenant), args=args), reservation_id)
        except (RedisError, OSError, ValueError) as exc:
            return self._failed(reservation_id, exc)

    def release(self, tenant: str, reservation_id: str) -> None:
        """The call failed or was not made: free what it held."""
        try:
            self._release(keys=hold_keys(tenant), args=[reservation_id])
        except (RedisError, OSError):
            self.errors += 1  # it expires with its TTL


class AsyncReservations(_Holds):
    """The same on a redis.asyncio client."""

    async def reserve(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
                      reservation_id: str) -> Reservation:
        try:
            if self._templates_due():
                self._keep_templates(await self.redis.get(TEMPLATES_KEY))
            args = self._args(tenant, use_case, risk_tier, estimated_cost_usd, reservation_id)
            return _answer(await self._script(keys=hold_keys(tenant), args=args), reservation_id)
        except (RedisError, OSError, ValueError, asyncio.TimeoutError) as exc:
            return self._failed(reservation_id, exc)

    async def release(self, tenant: str, reservation_id: str) -> None:
        try:
            await self._release(keys=hold_keys(tenant), args=[reservation_id])
        except (RedisError, OSError, asyncio.TimeoutError):
            self.errors += 1


def estimate_cost(input_tokens: int, max_output_tokens: int, input_usd_per_token: Money,
                  output_usd_per_token: Money) -> Decimal:
    """The most a call can cost: its prompt at the input price plus its output cap at the output price."""
    return (Decimal(input_tokens) * Decimal(str(input_usd_per_token))
            + Decimal(max_output_tokens) * Decimal(str(output_usd_per_token)))
