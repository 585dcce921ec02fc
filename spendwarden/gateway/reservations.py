"""Budget reservations: hold a call's expected cost before making it, so concurrent gateways
overshoot a budget by at most what calls cost beyond their reservations, not by N × budget.

Needs only redis-py. For budgets with ``reservations: true`` the worker publishes exact spend
to ``sw:{tenant}:spend`` (fenced SET, never INCR) and, in the same atomic script, releases the
reservations of the cost events that spend now includes. A reservation is a field of
``sw:{tenant}:reservations`` named by the call's ``cost_event_id``, so the gateway must send
the call's cost event with that id (the LiteLLM plugin does). The reservation script checks,
atomically, every reservable budget covering the call's use case and risk tier:
``spend + open reservations + estimate ≤ limit``. A reservation is released when the worker
counts the call's cost event, when the gateway reports the call failed (``release``), or when
its TTL passes (set it above the pipeline's worst lag; 10 minutes by default).
Contract: docs/redis.md, "Reservations".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Optional, Union

from redis.exceptions import RedisError

NANOS = Decimal(1_000_000_000)
RISK_TIERS = ("low", "medium", "high")
Money = Union[Decimal, float, int, str]

# KEYS[1] spend hash, KEYS[2] reservations hash. ARGV: use case, risk tier, amount (nano-USD),
# reservation id, ttl seconds, now (epoch seconds).
# Returns {1} held, {2} no reservable budget covers the call (nothing held), {0, field, available}.
RESERVE_SCRIPT = """
local uc, tier, amount, id = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local ttl, now = tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('HEXISTS', KEYS[2], id) == 1 then return {1} end
local function has(list, value)
  if list == nil or list == cjson.null then return true end
  for _, v in ipairs(list) do if v == value then return true end end
  return false
end
local open, stale = {}, {}
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local a, e, ruc, rtier = string.match(held[i + 1], '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if a == nil or tonumber(e) <= now then
    stale[#stale + 1] = held[i]
  else
    open[#open + 1] = {tonumber(a), ruc, rtier}
  end
end
if #stale > 0 then redis.call('HDEL', KEYS[2], unpack(stale)) end
local covering = 0
local budgets = redis.call('HGETALL', KEYS[1])
for i = 1, #budgets, 2 do
  local field = budgets[i]
  if string.sub(field, 1, 1) ~= '_' then
    local buc = string.match(field, '^([^|]*)|')
    local b = cjson.decode(budgets[i + 1])
    local function covers(call_uc, call_tier)
      return (buc == '*' or buc == call_uc) and has(b.use_cases, call_uc) and has(b.tiers, call_tier)
    end
    if covers(uc, tier) then
      covering = covering + 1
      local spend = 0
      if tonumber(b['end']) > now then spend = tonumber(b.spend) end
      local reserved = 0
      for _, r in ipairs(open) do
        if covers(r[2], r[3]) then reserved = reserved + r[1] end
      end
      local available = tonumber(b.limit) - spend - reserved
      if amount > available then return {0, field, tostring(available)} end
    end
  end
end
if covering == 0 then return {2} end
redis.call('HSET', KEYS[2], id, string.format('%d|%.3f|%s|%s', amount, now + ttl, uc, tier))
return {1}
"""


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


def _keys(tenant: str) -> list[str]:
    return [f"sw:{{{tenant}}}:spend", f"sw:{{{tenant}}}:reservations"]


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


def _failed(reservation_id: str, on_error: str, exc: BaseException) -> Reservation:
    allowed = on_error == "open"
    return Reservation(allowed, False, reservation_id,
                       f"reservation not checked ({type(exc).__name__}); on_error {on_error}", error=True)


class Reservations:
    """Reserve and release on a sync redis-py client; never raises on Redis errors."""

    def __init__(self, redis: Any, *, ttl_s: float = 600.0, on_error: str = "open",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.ttl_s, self.on_error, self.clock = redis, ttl_s, on_error, clock
        self._script = redis.register_script(RESERVE_SCRIPT)
        self.errors = 0

    def reserve(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
                reservation_id: str) -> Reservation:
        """Hold ``estimated_cost_usd`` under ``reservation_id`` (the call's cost_event_id)."""
        args = [use_case, _tier(risk_tier), _nanos(estimated_cost_usd), reservation_id, self.ttl_s, self.clock()]
        try:
            return _answer(self._script(keys=_keys(tenant), args=args), reservation_id)
        except (RedisError, OSError) as exc:
            self.errors += 1
            return _failed(reservation_id, self.on_error, exc)

    def release(self, tenant: str, reservation_id: str) -> None:
        """The call failed or was not made: free what it held."""
        try:
            self.redis.hdel(_keys(tenant)[1], reservation_id)
        except (RedisError, OSError):
            self.errors += 1  # it expires with its TTL


class AsyncReservations:
    """The same on a redis.asyncio client."""

    def __init__(self, redis: Any, *, ttl_s: float = 600.0, on_error: str = "open",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.ttl_s, self.on_error, self.clock = redis, ttl_s, on_error, clock
        self._script = redis.register_script(RESERVE_SCRIPT)
        self.errors = 0

    async def reserve(self, tenant: str, use_case: str, risk_tier: Optional[str], estimated_cost_usd: Money,
                      reservation_id: str) -> Reservation:
        args = [use_case, _tier(risk_tier), _nanos(estimated_cost_usd), reservation_id, self.ttl_s, self.clock()]
        try:
            return _answer(await self._script(keys=_keys(tenant), args=args), reservation_id)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self.errors += 1
            return _failed(reservation_id, self.on_error, exc)

    async def release(self, tenant: str, reservation_id: str) -> None:
        try:
            await self.redis.hdel(_keys(tenant)[1], reservation_id)
        except (RedisError, OSError, asyncio.TimeoutError):
            self.errors += 1


def estimate_cost(input_tokens: int, max_output_tokens: int, input_usd_per_token: Money,
                  output_usd_per_token: Money) -> Decimal:
    """The most a call can cost: its prompt at the input price plus its output cap at the output price."""
    return (Decimal(input_tokens) * Decimal(str(input_usd_per_token))
            + Decimal(max_output_tokens) * Decimal(str(output_usd_per_token)))
