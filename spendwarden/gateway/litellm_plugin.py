"""spendwarden inside a LiteLLM proxy: ask before each call, report the cost after it.

Name the module-level instance in the proxy config (docs/litellm.md)::

    litellm_settings:
      callbacks: spendwarden.gateway.litellm_plugin.proxy_handler

Before a call, :meth:`SpendwardenLogger.async_pre_call_hook` maps the request to (tenant, use
case, risk tier), asks :class:`~spendwarden.gateway.AsyncGatewayClient` (one Redis ``HMGET``)
and refuses (``block``, ``throttle``: HTTP 429 with Retry-After), rewrites (``degrade``: model
alias, output-token cap) or lets the call through. It stamps a ``cost_event_id`` into the
request metadata, so the cost event of this call carries the id reservations are keyed on.
After a call the logging hooks build the cost event and hand it to a
:class:`~spendwarden.gateway.kafka_batcher.TenantBatcher`: they return at once and never raise,
so a broken broker, a bad payload or a bug here costs at most a counted, missing event, never a
failed call. litellm is imported only if present, so ``spendwarden.gateway`` never needs it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from decimal import Decimal
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .kafka_batcher import Counter, TenantBatcher, _metric
from .litellm_events import (
    DEFAULT_RISK_TIER_FROM, DEFAULT_TENANT_FROM, DEFAULT_USE_CASE_FROM, STAMP_ID, STAMP_RISK_TIER, STAMP_TENANT,
    STAMP_USE_CASE, Scope, ScopeMapping, build_cost_event, metadata_of, resolve_scope, tags_of,
)
from .reservations import estimate_cost
from .verdicts import Verdict

try:
    from litellm.integrations.custom_logger import CustomLogger as _Base
except ImportError:  # pragma: no cover - the plugin is only useful inside LiteLLM
    _Base = object  # type: ignore[assignment,misc]

ENV_PREFIX = "SPENDWARDEN_LITELLM_"
DEFAULT_RETRY_AFTER_S = 60.0  # a refusal without a period end: ask again in a minute
REVIEW_FLAG = "spendwarden_review"
REFUSED_FLAG = "spendwarden_refused"


class BudgetRefused(Exception):
    """Raised instead of fastapi's HTTPException when fastapi is missing (same attributes)."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers


@dataclass
class PluginStats:
    """Plain counters (also prometheus metrics when available); ``*_errors`` are swallowed failures."""

    checks: int = 0
    allowed: int = 0
    degraded: int = 0
    throttled: int = 0
    blocked: int = 0
    review: int = 0
    default_tenant: int = 0  # calls no source named a tenant for
    check_errors: int = 0  # the pre-call hook failed: the call went ahead unchecked
    events: int = 0  # cost events handed to the batcher
    refusals_not_reported: int = 0  # our own 429s, which LiteLLM reports as failed calls
    event_errors: int = 0  # logging hook failures: the event is lost
    reserved: int = 0  # calls with money held for them (reserve on)
    reservations_refused: int = 0  # 429s because a reservable budget had no room
    released: int = 0  # holds given back by failed calls


def _env_list(environ: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = environ.get(ENV_PREFIX + name)
    if raw is None or not raw.strip():
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _env_bool(raw: Optional[str], default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def settings_from_env(environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """Constructor arguments from ``SPENDWARDEN_*`` variables (docs/litellm.md lists them)."""
    env = os.environ if environ is None else environ
    get = lambda name, default: env.get(ENV_PREFIX + name) or default  # noqa: E731
    return {
        "redis_url": env.get("SPENDWARDEN_REDIS_URL") or "redis://127.0.0.1:6379/0",
        "bootstrap": env.get("SPENDWARDEN_KAFKA_BOOTSTRAP") or "127.0.0.1:9092",
        "topic": env.get("SPENDWARDEN_COST_TOPIC") or "ai.cost-events",
        "mapping": ScopeMapping(
            tenant_from=_env_list(env, "TENANT_FROM", DEFAULT_TENANT_FROM),
            use_case_from=_env_list(env, "USE_CASE_FROM", DEFAULT_USE_CASE_FROM),
            risk_tier_from=_env_list(env, "RISK_TIER_FROM", DEFAULT_RISK_TIER_FROM),
            default_tenant=get("DEFAULT_TENANT", "default"),
            default_use_case=get("DEFAULT_USE_CASE", "unknown"),
            environment=get("ENVIRONMENT", "prod"),
        ),
        "on_stale": get("ON_STALE", "open"),
        "cache_ttl_s": float(get("CACHE_TTL_S", "0")),
        "enforce": _env_bool(env.get(ENV_PREFIX + "ENFORCE"), True),
        "check_model": _env_bool(env.get(ENV_PREFIX + "CHECK_MODEL"), True),
        "linger_s": float(get("BATCH_MS", "50")) / 1000.0,
        "max_batch": int(get("BATCH_MAX", "50")),
        "buffer_max": int(get("BUFFER_MAX", "10000")),
        "reserve": _env_bool(env.get(ENV_PREFIX + "RESERVE"), False),
        "reserve_ttl_s": float(get("RESERVE_TTL_S", "600")),
        "reserve_default_usd": get("RESERVE_DEFAULT_USD", "0.01"),
        "reserve_output_tokens": int(get("RESERVE_OUTPUT_TOKENS", "1024")),
    }


def apply_degrade(data: dict[str, Any], verdict: Verdict) -> None:
    """Rewrite the request per an L1 decision: route to ``model_alias``, cap output tokens."""
    if verdict.model_alias:
        data["model"] = verdict.model_alias
    cap = verdict.max_output_tokens
    if cap:
        if "max_completion_tokens" in data:
            data["max_completion_tokens"] = _capped(data["max_completion_tokens"], cap)
        if "max_tokens" in data or "max_completion_tokens" not in data:
            data["max_tokens"] = _capped(data.get("max_tokens"), cap)


def _capped(value: Any, cap: int) -> int:
    return min(value, cap) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else cap


def refusal(verdict: Verdict, scope: Scope) -> Exception:
    """HTTP 429 with Retry-After whose message names the deciding rule and why (safe for callers)."""
    retry = verdict.retry_after if verdict.retry_after and verdict.retry_after > 0 else DEFAULT_RETRY_AFTER_S
    what = "blocked" if verdict.action == "block" else "throttled"
    rule = verdict.rule or ("stale-decisions" if verdict.stale else "unknown")
    detail = (f"spendwarden {what} this call for tenant {scope.tenant!r} (use case {scope.use_case!r}, "
              f"risk tier {scope.risk_tier}): rule {rule!r}: {verdict.reason or verdict.level}")
    return _refused(detail, retry)


def _refused(detail: str, retry_after_s: float) -> Exception:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    try:
        from fastapi import HTTPException
    except ImportError:  # pragma: no cover - the proxy always has fastapi
        return BudgetRefused(429, detail, headers)
    return HTTPException(status_code=429, detail=detail, headers=headers)


class SpendwardenLogger(_Base):  # type: ignore[misc,valid-type]
    """The LiteLLM callback. Arguments override the environment; ``client``/``batcher`` are for tests."""

    def __init__(self, *, client: Any = None, batcher: Optional[TenantBatcher] = None,
                 environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> None:
        if _Base is not object:
            super().__init__()
        settings = settings_from_env(environ)
        unknown = set(overrides) - set(settings)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        settings.update(overrides)
        self.settings = settings
        self.mapping: ScopeMapping = settings["mapping"]
        self.enforce: bool = settings["enforce"]
        self.stats = PluginStats()
        self._client = client
        self._holds: Any = None
        self._client_loop: Optional[asyncio.AbstractEventLoop] = None
        self._batcher = batcher
        self.last_error: Optional[str] = None
        self._m_verdicts = _metric(Counter, "spendwarden_litellm_verdicts_total",
                                   "Verdicts the LiteLLM plugin applied, by action", ("action",))
        self._m_errors = _metric(Counter, "spendwarden_litellm_hook_errors_total",
                                 "Failures inside the LiteLLM plugin's hooks (call not affected)", ("hook",))

    # --- wiring -------------------------------------------------------------------------------

    def client(self) -> Any:
        """The gateway client; created on first use in the running loop (redis-py binds to it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or (self._client_loop is not None and self._client_loop is not loop):
            import redis.asyncio as aioredis

            from .client import AsyncGatewayClient

            from .reservations import AsyncReservations

            redis = aioredis.Redis.from_url(self.settings["redis_url"], socket_timeout=0.5, socket_connect_timeout=0.5)
            self._client = AsyncGatewayClient(redis, on_stale=self.settings["on_stale"],
                                              cache_ttl_s=self.settings["cache_ttl_s"])
            self._holds = AsyncReservations(redis, ttl_s=self.settings["reserve_ttl_s"],
                                            on_error=self.settings["on_stale"])
            self._client_loop = loop
        return self._client

    def holds(self) -> Any:
        """Budget reservations on the client's connection (docs/redis.md, "Reservations")."""
        self.client()
        return self._holds

    def batcher(self) -> TenantBatcher:
        """The cost-event batcher; its sender task starts with the first event."""
        if self._batcher is None:
            s = self.settings
            self._batcher = TenantBatcher(s["bootstrap"], s["topic"], linger_s=s["linger_s"],
                                          max_batch=s["max_batch"], buffer_max=s["buffer_max"])
        return self._batcher

    async def aclose(self) -> None:
        """Flush buffered events and stop the producer (the batcher also tries at interpreter exit)."""
        if self._batcher is not None:
            await self._batcher.aclose()

    # --- before the call ----------------------------------------------------------------------

    def scope_of(self, data: Mapping[str, Any], key: Any = None) -> Scope:
        """(tenant, use case, risk tier) of a proxy request body per the configured mapping."""
        metadata = metadata_of(data)
        scope, named = resolve_scope(self.mapping, metadata, key, tags_of(data.get("tags"), metadata.get("tags")))
        if not named:
            self.stats.default_tenant += 1
        return scope

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict[str, Any],
                                  call_type: Any) -> dict[str, Any]:
        """Refuse, degrade or pass the call per spendwarden's decision; returns the (rewritten) body."""
        try:
            scope = self.scope_of(data, user_api_key_dict)
            _stamp(data, scope)
            model = data.get("model") if self.settings["check_model"] else None
            self.stats.checks += 1
            verdict: Verdict = await self.client().check(scope.tenant, scope.use_case, scope.risk_tier,
                                                         model=model if isinstance(model, str) else None)
        except Exception as exc:  # noqa: BLE001 - our failure must not fail the call: it goes ahead unchecked
            self._error("pre_call", exc)
            self.stats.check_errors += 1
            return data
        self._count(verdict)
        if not self.enforce:
            return data
        if verdict.action in ("block", "throttle"):
            for metadata in _metadata_dicts(data):
                metadata[REFUSED_FLAG] = verdict.action  # LiteLLM logs our 429 as a failed call: not a cost
            raise refusal(verdict, scope)
        try:
            if verdict.action == "degrade":
                apply_degrade(data, verdict)
            if verdict.review:
                for metadata in _metadata_dicts(data):
                    metadata[REVIEW_FLAG] = True
        except Exception as exc:  # noqa: BLE001
            self._error("pre_call", exc)
        if self.settings["reserve"]:
            await self._reserve(data, scope)
        return data

    async def _reserve(self, data: dict[str, Any], scope: Scope) -> None:
        """Hold the call's most it can cost under its cost_event_id; refuse when a budget has no room.

        The worker releases the hold when it counts the call's cost event; a failed call
        releases it in the failure hook; otherwise it expires after ``reserve_ttl_s``."""
        try:
            event_id = _metadata_dicts(data)[0][STAMP_ID]
            estimate = estimate_call(data, self.settings["reserve_default_usd"], self.settings["reserve_output_tokens"])
            answer = await self.holds().reserve(scope.tenant, scope.use_case, scope.risk_tier, estimate, event_id)
        except Exception as exc:  # noqa: BLE001 - our failure must not fail the call
            self._error("reserve", exc)
            return
        self.stats.reserved += int(answer.held)
        if answer.allowed:
            return
        self.stats.reservations_refused += 1
        for metadata in _metadata_dicts(data):
            metadata[REFUSED_FLAG] = "reservation"
        raise _refused(f"spendwarden: call refused for tenant {scope.tenant} (use case {scope.use_case}, "
                       f"risk tier {scope.risk_tier}): {answer.reason}", DEFAULT_RETRY_AFTER_S)

    def _count(self, verdict: Verdict) -> None:
        stats = self.stats
        name = {"allow": "allowed", "degrade": "degraded", "throttle": "throttled", "block": "blocked"}.get(
            verdict.action, "allowed")
        setattr(stats, name, getattr(stats, name) + 1)
        if verdict.review:
            stats.review += 1
        if self._m_verdicts is not None:
            self._m_verdicts.labels(verdict.action).inc()

    # --- after the call -----------------------------------------------------------------------

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Queue the call's cost event; returns at once."""
        self._emit(kwargs, end_time, failed=False)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        """Queue a failed call's event (reported cost, else zero) under its own id."""
        self._emit(kwargs, end_time, failed=True)

    async def async_post_call_failure_hook(self, request_data: dict[str, Any], original_exception: Exception,
                                           user_api_key_dict: Any, traceback_str: Optional[str] = None) -> None:
        """The request failed for good (after the router's retries and fallbacks, or refused by a
        later hook): give its hold back. Not per attempt: a retry that succeeds still needs it."""
        if not self.settings["reserve"]:
            return None
        try:
            metadata = metadata_of(request_data)
            if metadata.get(STAMP_ID) and not metadata.get(REFUSED_FLAG):
                await self.holds().release(metadata[STAMP_TENANT], metadata[STAMP_ID])
                self.stats.released += 1
        except Exception as exc:  # noqa: BLE001 - the hold expires with its TTL anyway
            self._error("release", exc)
        return None

    def _emit(self, kwargs: Any, end_time: Any, failed: bool) -> None:
        try:
            if failed and metadata_of(kwargs.get("litellm_params") or {}).get(REFUSED_FLAG):
                self.stats.refusals_not_reported += 1  # refused by us before any model ran
                return
            event = build_cost_event(kwargs, end_time, self.mapping, failed=failed)
            self.batcher().add(event)
            self.stats.events += 1
        except Exception as exc:  # noqa: BLE001 - never fail the call path; the loss is counted
            self.stats.event_errors += 1
            self._error("log_failure" if failed else "log_success", exc)

    def _error(self, hook: str, exc: BaseException) -> None:
        self.last_error = f"{hook}: {type(exc).__name__}: {exc}"[:300]
        if self._m_errors is not None:
            self._m_errors.labels(hook).inc()


def _metadata_dicts(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = [data[name] for name in ("metadata", "litellm_metadata") if isinstance(data.get(name), dict)]
    if not found:
        data["metadata"] = {}
        found = [data["metadata"]]
    return found


def _stamp(data: dict[str, Any], scope: Scope) -> None:
    """A fresh id (never the client's: a reused id would make the worker drop the cost as a
    duplicate) and the resolved scope, so the logging hook reports exactly what was checked."""
    event_id = str(uuid.uuid4())
    for metadata in _metadata_dicts(data):
        metadata[STAMP_ID] = event_id
        metadata[STAMP_TENANT] = scope.tenant
        metadata[STAMP_USE_CASE] = scope.use_case
        metadata[STAMP_RISK_TIER] = scope.risk_tier


proxy_handler = SpendwardenLogger()


def estimate_call(data: Mapping[str, Any], default_usd: str, output_tokens: int = 1024) -> Decimal:
    """The most a call can cost: its prompt (about 4 characters a token) at the model's input
    price plus its output cap (``max_tokens``, else ``output_tokens``) at the output price, from
    LiteLLM's price map for the deployments behind the requested model name (the priciest);
    ``default_usd`` when none of them has a price there."""
    prices = [p for p in _prices(str(data.get("model"))) if p.get("input_cost_per_token") and
              p.get("output_cost_per_token")]
    if not prices:
        return Decimal(default_usd)
    prompt_tokens = len(json.dumps(data.get("messages") or data.get("input") or "", default=str)) // 4 + 1
    cap = int(data.get("max_tokens") or data.get("max_completion_tokens") or output_tokens)
    return max(estimate_cost(prompt_tokens, cap, p["input_cost_per_token"], p["output_cost_per_token"])
               for p in prices)


def _prices(model: str) -> list[dict[str, Any]]:
    """Price-map entries for a proxy model name: its own, or those of the deployments it routes to."""
    try:
        import litellm
    except ImportError:  # pragma: no cover - only inside LiteLLM
        return []
    names = [model]
    try:
        from litellm.proxy.proxy_server import llm_router

        for deployment in (llm_router.get_model_list(model_name=model) or []) if llm_router else []:
            target = str((deployment.get("litellm_params") or {}).get("model") or "")
            names += [target, target.split("/", 1)[-1]]
    except Exception:  # noqa: BLE001 - outside a proxy, or an older router API: the name alone
        pass
    return [litellm.model_cost[name] for name in dict.fromkeys(names) if name in litellm.model_cost]
