"""LiteLLM request metadata → (tenant, use case, risk tier), and LiteLLM's logging payload → a cost event.

Pure functions, no litellm import, so the mapping and the event shape are tested without a proxy.
The event follows ``spendwarden.streams.events.CostEvent`` (schema v1); it is built as a plain
dict here because this package must not need pydantic (docs/litellm.md).

A scope source is one of:

* ``metadata.<field>``: the request's metadata (what the client sent as ``metadata`` plus the
  ``user_api_key_*`` fields the proxy adds: ``metadata.user_api_key_team_alias``);
* ``key.<attribute>``: the proxy's ``UserAPIKeyAuth`` (``key.team_id``, ``key.team_alias``,
  ``key.key_alias``, ``key.user_id``); after the call it is read back from the metadata field
  ``user_api_key_<attribute>`` the proxy logged;
* ``tag:<prefix>``: the first request tag starting with the prefix, without it (``tag:use_case:``).

The first source giving a usable id wins; otherwise the default applies.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping, Optional, Sequence

from .verdicts import normalise_tier

# Same patterns as streams/events.py (_ID, _NAME): ids end up in Redis keys and fields.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/@+=]{0,127}$")
_NAME = re.compile(r"^[^\s{}]{1,200}$")

DEFAULT_TENANT_FROM = ("metadata.tenant_id", "key.team_alias", "key.team_id", "tag:tenant:")
DEFAULT_USE_CASE_FROM = ("metadata.use_case_id", "tag:use_case:")
DEFAULT_RISK_TIER_FROM = ("metadata.risk_tier", "tag:risk_tier:")
# Optional cost-event dimensions copied from the request metadata when they are valid ids.
OPTIONAL_FIELDS = ("workflow_step", "cost_center", "business_unit", "business_outcome_id")

# Keys the pre-call hook stamps into the request metadata, read back by the logging hooks.
STAMP_ID = "cost_event_id"
STAMP_TENANT = "spendwarden_tenant_id"
STAMP_USE_CASE = "spendwarden_use_case_id"
STAMP_RISK_TIER = "spendwarden_risk_tier"


@dataclass(frozen=True)
class Scope:
    """Who pays for a call, as spendwarden's budgets and the decision hash name it."""

    tenant: str
    use_case: str
    risk_tier: str


@dataclass(frozen=True)
class ScopeMapping:
    """Where tenant, use case and risk tier come from; see the module docstring for sources."""

    tenant_from: Sequence[str] = DEFAULT_TENANT_FROM
    use_case_from: Sequence[str] = DEFAULT_USE_CASE_FROM
    risk_tier_from: Sequence[str] = DEFAULT_RISK_TIER_FROM
    default_tenant: str = "default"
    default_use_case: str = "unknown"
    environment: str = "prod"

    def __post_init__(self) -> None:
        for source in (*self.tenant_from, *self.use_case_from, *self.risk_tier_from):
            if not source.startswith(("metadata.", "key.", "tag:")) or source in ("metadata.", "key."):
                raise ValueError(f"scope source {source!r}: use metadata.<field>, key.<attribute> or tag:<prefix>")
        for name, value in (("default_tenant", self.default_tenant), ("default_use_case", self.default_use_case),
                            ("environment", self.environment)):
            if not _ID.match(value):
                raise ValueError(f"{name} {value!r} is not a valid id (letters, digits, ._-/@+=)")


def metadata_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """The request metadata of a proxy request body or ``litellm_params`` (``litellm_metadata`` on
    some routes), merged; empty when there is none."""
    merged: dict[str, Any] = {}
    for name in ("litellm_metadata", "metadata"):
        value = container.get(name)
        if isinstance(value, Mapping):
            merged.update(value)
    return merged


def tags_of(*sources: Any) -> list[str]:
    """Every string tag found in the given lists (request ``tags``, metadata ``tags``, ``request_tags``)."""
    out: list[str] = []
    for tags in sources:
        if isinstance(tags, (list, tuple)):
            out.extend(t for t in tags if isinstance(t, str) and t not in out)
    return out


def _lookup(source: str, metadata: Mapping[str, Any], key: Any, tags: Sequence[str]) -> Any:
    if source.startswith("metadata."):
        return metadata.get(source[len("metadata."):])
    if source.startswith("key."):
        attribute = source[len("key."):]
        value = getattr(key, attribute, None) if key is not None else None
        return value if value is not None else metadata.get(f"user_api_key_{attribute}")
    prefix = source[len("tag:"):]
    for tag in tags:
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag[len(prefix):]
    return None


def _first_id(sources: Iterable[str], metadata: Mapping[str, Any], key: Any, tags: Sequence[str]) -> Optional[str]:
    for source in sources:
        value = _lookup(source, metadata, key, tags)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and _ID.match(value.strip()):
            return value.strip()
    return None


def resolve_scope(mapping: ScopeMapping, metadata: Mapping[str, Any], key: Any = None,
                  tags: Sequence[str] = ()) -> tuple[Scope, bool]:
    """The call's scope and whether the tenant came from a source (False: the default tenant)."""
    tenant = _first_id(mapping.tenant_from, metadata, key, tags)
    use_case = _first_id(mapping.use_case_from, metadata, key, tags) or mapping.default_use_case
    tier = None
    for source in mapping.risk_tier_from:
        tier = _lookup(source, metadata, key, tags)
        if tier is not None:
            break
    # Unknown or missing tiers are high: never put a call under a laxer tier's decision.
    return Scope(tenant or mapping.default_tenant, use_case, normalise_tier(tier)), tenant is not None


def stamped_scope(metadata: Mapping[str, Any]) -> Optional[Scope]:
    """The scope the pre-call hook stamped into the metadata, so both hooks agree on it."""
    tenant, use_case, tier = (metadata.get(STAMP_TENANT), metadata.get(STAMP_USE_CASE),
                              metadata.get(STAMP_RISK_TIER))
    if isinstance(tenant, str) and isinstance(use_case, str) and isinstance(tier, str):
        return Scope(tenant, use_case, tier)
    return None


def decimal_text(value: Any) -> Optional[str]:
    """A cost as a plain decimal string (``1.35e-05`` → ``0.0000135``); None if not a finite number ≥ 0.

    Floats keep 15 significant digits: LiteLLM sums per-token prices in binary floating point, so
    ``0.000225`` arrives as ``0.00022500000000000002``; 15 digits is what a double holds exactly."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(f"{value:.15g}") if isinstance(value, float) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or number < 0:
        return None
    return format(number.normalize(), "f") if number else "0"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def cached_tokens(payload: Mapping[str, Any]) -> int:
    """Prompt tokens served from the provider's cache, from the logged usage object (0 if unknown)."""
    usage = (payload.get("metadata") or {}).get("usage_object") or {}
    details = usage.get("prompt_tokens_details") or {}
    return _int(details.get("cached_tokens")) or _int(usage.get("cache_read_input_tokens"))


def _ts(payload: Mapping[str, Any], end_time: Any) -> str:
    seconds = payload.get("endTime")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds > 0:
        moment = datetime.fromtimestamp(seconds, timezone.utc)
    elif isinstance(end_time, datetime):
        # LiteLLM passes naive local datetimes; astimezone() reads a naive one as local time.
        moment = end_time.astimezone(timezone.utc)
    else:
        moment = datetime.now(timezone.utc)
    return moment.isoformat()


def build_cost_event(kwargs: Mapping[str, Any], end_time: Any, mapping: ScopeMapping, *, failed: bool = False) -> dict[str, Any]:
    """A schema-v1 cost event from a LiteLLM logging call's ``kwargs`` (``response_cost`` and the
    ``standard_logging_object``). A failure gets its own id (``<id>:failed:<n>``) so a retried call's
    later success, which carries the stamped id, is not taken for a duplicate of it by the worker."""
    payload: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
    params: Mapping[str, Any] = kwargs.get("litellm_params") or {}
    metadata = {**(payload.get("metadata") or {}), **metadata_of(params)}
    requester = metadata.get("requester_metadata")
    if isinstance(requester, Mapping):
        metadata = {**requester, **metadata}
    scope = stamped_scope(metadata)
    if scope is None:
        tags = tags_of(payload.get("request_tags"), metadata.get("tags"))
        scope = resolve_scope(mapping, metadata, None, tags)[0]
    event_id = next((v for v in (metadata.get(STAMP_ID), payload.get("litellm_call_id"), kwargs.get("litellm_call_id"),
                                 payload.get("id")) if isinstance(v, str) and v), None) or str(uuid.uuid4())
    if failed:
        event_id = f"{event_id}:failed:{uuid.uuid4().hex[:12]}"
    cost = decimal_text(kwargs.get("response_cost"))
    if cost is None:
        cost = decimal_text(payload.get("response_cost"))
    if failed and cost is None:
        cost = "0"
    model = payload.get("model_group") or payload.get("model") or kwargs.get("model")
    provider = payload.get("custom_llm_provider") or kwargs.get("custom_llm_provider")
    event: dict[str, Any] = {
        "schema_version": 1,
        "cost_event_id": event_id[:200],
        "ts": _ts(payload, end_time),
        "tenant_id": scope.tenant,
        "use_case_id": scope.use_case,
        "risk_tier": scope.risk_tier,
        "environment": mapping.environment,
        "component": "model_call",
        "input_tokens": _int(payload.get("prompt_tokens")),
        "output_tokens": _int(payload.get("completion_tokens")),
        "cached_tokens": cached_tokens(payload),
        "api_calls": 1,
        "allocation_method": "direct_metered",
    }
    trace = payload.get("trace_id") or kwargs.get("litellm_trace_id")
    if isinstance(trace, str) and trace:
        event["trace_id"] = trace[:200]
    if cost is not None:  # absent: the worker prices the call from its pricebook
        event["allocated_cost_usd"] = cost
    if isinstance(model, str) and _NAME.match(model):
        event["model_or_service"] = model
    if isinstance(provider, str) and _NAME.match(provider):
        event["provider"] = provider
    if payload.get("cache_hit") is True:
        event["cache_status"] = "hit"
    for name in OPTIONAL_FIELDS:
        value = metadata.get(name)
        if isinstance(value, str) and (_NAME if name == "workflow_step" else _ID).match(value):
            event[name] = value
    return event
