"""Which span or resource attributes attribute a GenAI span's cost (docs/traces.md).

Each cost-event field below takes an ordered list of attribute keys. The span's own attributes
are searched first (every key in order), then the resource's: a span says more about the call
than the process that made it (a multi-tenant service sets the tenant per request). For
``tenant_id`` and ``allocated_cost_usd`` the first value found wins (an invalid tenant rejects
the span); for the labels, the first value valid for the field (a workflow step has no spaces).
A field no key answers is left out of the event, so the cost event's own default applies
(``use_case_id`` "unknown", ``risk_tier`` "high", ``environment`` "prod"), except ``tenant_id``:
spend without a tenant is counted under ``unattributed_tenant``, never dropped, so a coverage
rule can see it.

``service.name`` is deliberately not a default source of ``use_case_id``: it names the program,
which often serves several use cases, and the SDK fills it with ``unknown_service:<process>``
when unset (not a valid id). Add it to ``use_case_id`` where one service is one use case.

Below the mapping: how ``streams/otlp.py`` reads attribute values (OTLP JSON ``AnyValue``).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spendwarden.exceptions import RejectedEvent
from spendwarden.rules.loader import read_config_bytes, validate_yaml
from spendwarden.streams.events import _ID

_Keys = list[str]


def _keys(*keys: str) -> Any:
    return Field(default_factory=lambda: list(keys))


class TraceMapping(BaseModel):
    """Attribute keys per cost-event field, first hit wins (span attributes, then resource)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant_id: _Keys = _keys("spendwarden.tenant_id", "tenant.id", "tenant_id")
    use_case_id: _Keys = _keys("spendwarden.use_case_id", "use_case.id", "use_case_id")
    workflow_step: _Keys = _keys("spendwarden.workflow_step", "gen_ai.agent.name")
    risk_tier: _Keys = _keys("spendwarden.risk_tier", "risk_tier")
    business_unit: _Keys = _keys("spendwarden.business_unit", "business_unit")
    cost_center: _Keys = _keys("spendwarden.cost_center", "cost_center")
    environment: _Keys = _keys(
        "spendwarden.environment", "deployment.environment.name", "deployment.environment"
    )
    business_outcome_id: _Keys = _keys("spendwarden.business_outcome_id", "business_outcome_id")
    allocated_cost_usd: _Keys = _keys("spendwarden.cost_usd")
    # A valid tenant id (a leading "_" is not): spend of GenAI spans with no tenant attribute.
    unattributed_tenant: str = Field(default="unattributed", pattern=_ID)

    @field_validator(
        "tenant_id", "use_case_id", "workflow_step", "risk_tier", "business_unit", "cost_center",
        "environment", "business_outcome_id", "allocated_cost_usd", mode="before",
    )
    @classmethod
    def _one_key_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator(
        "tenant_id", "use_case_id", "workflow_step", "risk_tier", "business_unit", "cost_center",
        "environment", "business_outcome_id", "allocated_cost_usd",
    )
    @classmethod
    def _no_empty_key(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key.strip():
                raise ValueError("an attribute key cannot be empty")
        return value


# Mapped fields in the order the converter fills them (the attribute-sourced ones).
MAPPED_FIELDS: tuple[str, ...] = (
    "tenant_id", "use_case_id", "workflow_step", "risk_tier", "business_unit", "cost_center",
    "environment", "business_outcome_id", "allocated_cost_usd",
)


def load_mapping(path: str | os.PathLike[str]) -> TraceMapping:
    """Read a mapping YAML file; RuleFileError names ``file:line:col``, ConfigError if unreadable.

    An empty file gives the defaults; a field given replaces that field's default list.
    """
    found = validate_yaml(read_config_bytes(path, "trace mapping"), str(path), TraceMapping,
                          "of field: [attribute keys]")
    return TraceMapping() if found is None else found[0]


# ---------------------------------------------------------------- reading attributes (for otlp.py)
_SHOWN = 60
_URLSAFE = str.maketrans("-_", "+/")


def short(value: Any) -> str:
    """repr of a value for a message, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def decode_any_value(value: Any) -> Any:
    """An OTLP JSON AnyValue as Python: str, int, float, bool, bytes, list, dict; None if empty.

    int64 comes as a decimal string in OTLP JSON (``{"intValue": "123"}``), or as a number from
    lenient writers; doubles may be ``"NaN"`` or ``"Infinity"``. ValueError for a malformed value.
    """
    if not isinstance(value, dict):
        raise ValueError(f"an AnyValue is an object, got {short(value)}")
    for kind, inner in value.items():
        if kind == "stringValue" and isinstance(inner, str):
            return inner
        if kind == "intValue" and not isinstance(inner, bool) and isinstance(inner, (int, str)):
            return int(inner)
        if kind == "doubleValue" and not isinstance(inner, bool) and isinstance(inner, (int, float, str)):
            return float(inner)
        if kind == "boolValue" and isinstance(inner, bool):
            return inner
        if kind == "bytesValue" and isinstance(inner, str):
            return base64.b64decode(std_base64(inner), validate=True)
        if kind == "arrayValue" and isinstance(inner, dict):
            return [decode_any_value(item) for item in _items(inner.get("values"))]
        if kind == "kvlistValue" and isinstance(inner, dict):
            return {kv.get("key"): decode_any_value(kv.get("value", {}))
                    for kv in _items(inner.get("values")) if isinstance(kv, dict)}
        raise ValueError(f"{kind} holds {short(inner)}")
    return None


def _items(value: Any) -> list[Any]:
    if value is None or isinstance(value, list):
        return value or []
    raise ValueError(f"expected a list, got {short(value)}")


def std_base64(text: str) -> str:
    """URL-safe or unpadded base64 (protobuf JSON accepts both) as standard padded base64."""
    text = text.translate(_URLSAFE)
    return text + "=" * (-len(text) % 4)


def attribute_map(value: Any) -> dict[str, Any]:
    """KeyValue list → {key: AnyValue} (values decoded only when read); malformed entries ignored."""
    if not isinstance(value, list):
        return {}
    return {kv["key"]: kv.get("value") for kv in value
            if isinstance(kv, dict) and isinstance(kv.get("key"), str)}


def _read(attrs: dict[str, Any], key: str) -> Any:
    """The decoded attribute, None when absent or empty; RejectedEvent naming the key if malformed."""
    raw = attrs.get(key)
    if raw is None:
        return None
    try:
        value = decode_any_value(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise RejectedEvent("invalid", f"attribute {key}: {str(exc)[:200]}", key) from None
    return None if value == "" else value


def hits(attrs: dict[str, Any], keys: tuple[str, ...] | list[str]) -> Iterator[tuple[str, Any]]:
    """(key, decoded value) of each key present and not empty, in the order given."""
    for key in keys:
        if key in attrs:  # most keys are absent: no call then
            value = _read(attrs, key)
            if value is not None:
                yield key, value


def first_hit(attrs: dict[str, Any], keys: tuple[str, ...] | list[str]) -> tuple[str, Any] | None:
    """(key, decoded value) of the first key present and not empty, in the order given."""
    for key in keys:
        if key in attrs:
            value = _read(attrs, key)
            if value is not None:
                return key, value
    return None


def text_of(hit: tuple[str, Any]) -> str:
    key, value = hit
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # ids sent as numbers (tenant 42); repr of a float is its shortest form
    raise RejectedEvent("invalid", f"attribute {key}: expected a string, got {short(value)}", key)


def count_of(attrs: dict[str, Any], keys: tuple[str, ...]) -> int:
    """A token count: a whole number ≥ 0 (int, integral double or digit string); 0 when absent."""
    hit = first_hit(attrs, keys)
    if hit is None:
        return 0
    key, value = hit
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        detail = f"attribute {key}: expected a whole number of tokens, got {short(hit[1])}"
        raise RejectedEvent("invalid", detail, key)
    if value < 0:
        raise RejectedEvent("invalid", f"attribute {key}: {value} tokens is negative", key)
    return value
