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

NANOS = Decimal(1_000_000_000)
RISK_TIERS = ("low", "medium", "high")
Money = Union[Decimal, float, int, str]

# KEYS[1] reservations hash. ARGV: the spend hash (same hash tag, so same slot; an argument, not
# a key, because Redis checks a script's declared keys for write access and gateways may only
# read spend), amount (nano-USD), reservation id, ttl seconds, now (epoch seconds), then
# (field, limit) for each reservable budget covering the call (from ``sw:reservable``). A budget
# with no spend field yet has spent 0. A reservation records the fields it was held against, so
# each budget counts exactly the holds that cover it.
# Returns {1} held, {2} no reservable budget covers the call (nothing held), {0, field, available}.
RESERVE_SCRIPT = """
local spend_key = ARGV[1]
local amount, id, ttl, now = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if #ARGV < 7 then return {2} end
if redis.call('HEXISTS', KEYS[1], id) == 1 then return {1} end
local reserved, stale = {}, {}
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  local ok, r = pcall(cjson.decode, held[i + 1])
  if not ok or type(r) ~= 'table' or tonumber(r.e) == nil or tonumber(r.e) <= now then
    stale[#stale + 1] = held[i]
  else
    for _, f in ipairs(r.f) do reserved[f] = (reserved[f] or 0) + tonumber(r.a) end
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
local fields = {}
for j = 6, #ARGV - 1, 2 do
  local field, limit = ARGV[j], tonumber(ARGV[j + 1])
  local spend = 0
  local raw = redis.call('HGET', spend_key, field)
  if raw then
    local b = cjson.decode(raw)
    if tonumber(b['end']) > now then spend = tonumber(b.spend) end
    limit = tonumber(b.limit)
  end
  local available = limit - spend - (reserved[field] or 0)
  if amount > available then return {0, field, string.format('%.0f', available)} end
  fields[#fields + 1] = field
end
redis.call('HSET', KEYS[1], id, cjson.encode({a = amount, e = now + ttl, f = fields}))
return {1}
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


def _spend_key(tenant: str) -> str:
    return f"sw:{{{tenant}}}:spend"


def _reservations_key(tenant: str) -> str:
    return f"sw:{{{tenant}}}:reservations"


def _tier(risk_tier: Optional[str]) -> str:
    tier = (risk_tier or "").strip().lower()
    return tier if tier in RISK_TIERS else "high"  # an unknown risk tier is high


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


def _failed(reservation_id: str, on_error: str, exc: BaseException) -> Reservation:
    allowed = on_error == "open"
    return Reservation(allowed, False, reservation_id,
                       f"reservation not checked ({type(exc).__name__}); on_error {on_error}", error=True)


class Reservations:
    """Reserve and release on a sync redis-py client; never raises on Redis errors."""

    def __init__(self, redis: Any, *, ttl_s: float = 600.0, on_error: str = "open", templates_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.ttl_s, self.on_error, self.clock = redis, ttl_s, on_error, clock
        self.templates_ttl_s = templates_ttl_s
        self._script = redis.register_script(RESERVE_SCRIPT)
        self._templates: tuple[float, dict[str, Any]] = (-1e18, {})
        self.errors = 0

    def reserve(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
                reservation_id: str) -> Reservation:
        """Hold ``estimated_cost_usd`` under ``reservation_id`` (the call's cost_event_id)."""
        try:
            now = self.clock()
            if now - self._templates[0] > self.templates_ttl_s:
                self._templates = (now, _parse(self.redis.get(TEMPLATES_KEY)))
            budgets = covering(self._templates[1], tenant, use_case, _tier(risk_tier))
            args = [_spend_key(tenant), _nanos(estimated_cost_usd), reservation_id, self.ttl_s, now, *budgets]
            return _answer(self._script(keys=[_reservations_key(tenant)], args=args), reservation_id)
        except (RedisError, OSError, ValueError) as exc:
            self.errors += 1
            return _failed(reservation_id, self.on_error, exc)

    def release(self, tenant: str, reservation_id: str) -> None:
        """The call failed or was not made: free what it held."""
        try:
            self.redis.hdel(_reservations_key(tenant), reservation_id)
        except (RedisError, OSError):
            self.errors += 1  # it expires with its TTL


class AsyncReservations:
    """The same on a redis.asyncio client."""

    def __init__(self, redis: Any, *, ttl_s: float = 600.0, on_error: str = "open", templates_ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.ttl_s, self.on_error, self.clock = redis, ttl_s, on_error, clock
        self.templates_ttl_s = templates_ttl_s
        self._script = redis.register_script(RESERVE_SCRIPT)
        self._templates: tuple[float, dict[str, Any]] = (-1e18, {})
        self.errors = 0

    async def reserve(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
                      reservation_id: str) -> Reservation:
        try:
            now = self.clock()
            if now - self._templates[0] > self.templates_ttl_s:
                self._templates = (now, _parse(await self.redis.get(TEMPLATES_KEY)))
            budgets = covering(self._templates[1], tenant, use_case, _tier(risk_tier))
            args = [_spend_key(tenant), _nanos(estimated_cost_usd), reservation_id, self.ttl_s, now, *budgets]
            return _answer(await self._script(keys=[_reservations_key(tenant)], args=args), reservation_id)
        except (RedisError, OSError, ValueError, asyncio.TimeoutError) as exc:
            self.errors += 1
            return _failed(reservation_id, self.on_error, exc)

    async def release(self, tenant: str, reservation_id: str) -> None:
        try:
            await self.redis.hdel(_reservations_key(tenant), reservation_id)
        except (RedisError, OSError, asyncio.TimeoutError):
            self.errors += 1


def estimate_cost(input_tokens: int, max_output_tokens: int, input_usd_per_token: Money,
                  output_usd_per_token: Money) -> Decimal:
    """The most a call can cost: its prompt at the input price plus its output cap at the output price."""
    return (Decimal(input_tokens) * Decimal(str(input_usd_per_token))
            + Decimal(max_output_tokens) * Decimal(str(output_usd_per_token)))
