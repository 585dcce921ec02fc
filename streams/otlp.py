"""OTLP traces → cost-event dicts per tenant: GenAI spans become the calls they bill (docs/traces.md).

Pure: ``decode_export`` reads one Kafka record as the Collector's Kafka exporter writes it
(``otlp_json``; ``otlp_proto`` when ``opentelemetry-proto`` is installed); ``spans_to_events`` turns
spans carrying ``gen_ai.operation.name`` into schema-v1 cost-event dicts grouped by tenant (for
the worker to re-key), plus a ``Rejection`` per GenAI span that cannot be one. ``Ingest``
validates and prices the dicts downstream like any cost event. ``cost_event_id`` is the span id,
so a gateway sending its own event for the call under that id is counted once (docs/traces.md).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from itertools import chain
from typing import Any, Iterator

import orjson

from spendwarden.exceptions import ConfigError, RejectedEvent
from spendwarden.streams.events import _ID, _NAME, RISK_TIERS, CostEvent
from spendwarden.streams.ingest import Rejection
from spendwarden.streams.otlp_mapping import (
    MAPPED_FIELDS, TraceMapping, attribute_map, count_of, decode_any_value, first_hit, hits, load_mapping,
    short, std_base64, text_of,
)
from spendwarden.streams.pricebook import Pricebook

__all__ = [
    "ENCODINGS", "MODEL_CALL_OPERATIONS", "TOOL_OPERATIONS", "TraceMapping", "check_encoding",
    "decode_any_value", "decode_export", "load_mapping", "spans_to_events",
]

ENCODINGS = ("otlp_json", "otlp_proto")
MODEL_CALL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
# Older names after the current ones; the first key present wins.
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
_MODEL = ("gen_ai.response.model", "gen_ai.request.model")
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_CACHED = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
           "gen_ai.usage.cached_tokens")
_NANOS = 1_000_000_000
_TENANT = re.compile(_ID)
_is_id, _is_name = _TENANT.match, re.compile(_NAME).match
# Labels take the first value that passes the cost event's own check; one that does not is
# skipped (counted as ``unusable_values``; none usable: the event's default applies) rather than
# dead-lettering the spend, as the LiteLLM plugin does: "Math Tutor" is no valid workflow_step.
_LABEL_CHECKS = {
    "use_case_id": _is_id, "business_unit": _is_id, "cost_center": _is_id, "environment": _is_id,
    "workflow_step": _is_name, "risk_tier": frozenset(RISK_TIERS).__contains__,
    "business_outcome_id": lambda text: len(text) <= 200,
}


# ---------------------------------------------------------------- decoding the export
def check_encoding(encoding: str) -> None:
    """ConfigError unless this install can decode ``encoding``: call it once at startup."""
    if encoding not in ENCODINGS:
        raise ConfigError(f"trace encoding {encoding!r} is not supported; "
                          f"choose one of {', '.join(ENCODINGS)}")
    if encoding == "otlp_proto":
        _proto_parts()


def decode_export(raw: bytes, encoding: str = "otlp_json", max_bytes: int | None = None) -> dict[str, Any]:
    """One Kafka record as an ExportTraceServiceRequest dict (OTLP JSON field names).

    RejectedEvent("decode") for bytes that are not one (bad JSON or protobuf, no ``resourceSpans``
    list), RejectedEvent("too_large") above ``max_bytes``, ConfigError for an encoding this install
    cannot read. Protobuf gives base64 ids, which ``spans_to_events`` accepts.
    """
    check_encoding(encoding)
    if max_bytes is not None and len(raw) > max_bytes:
        raise RejectedEvent("too_large", f"record is {len(raw)} bytes; the limit is {max_bytes}")
    value = _decode_proto(raw) if encoding == "otlp_proto" else _decode_json(raw)
    if not isinstance(value, dict) or not isinstance(value.get("resourceSpans"), list):
        got = (f"an object with keys {short(sorted(value)[:5])}" if isinstance(value, dict)
               else type(value).__name__)
        raise RejectedEvent("decode", f"expected an OTLP ExportTraceServiceRequest with a resourceSpans "
                                      f"list, got {got}")
    return value


def _decode_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError, ValueError, RecursionError) as exc:
        raise RejectedEvent("decode", f"not UTF-8 JSON: {str(exc)[:200]}") from None


def _proto_parts() -> tuple[Any, Any, Any]:
    try:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError:
        raise ConfigError("trace encoding otlp_proto needs the package opentelemetry-proto; "
                          "install it or have the collector write otlp_json") from None
    return ExportTraceServiceRequest, DecodeError, MessageToDict


def _decode_proto(raw: bytes) -> Any:
    ExportTraceServiceRequest, DecodeError, MessageToDict = _proto_parts()  # noqa: N806
    try:
        message = ExportTraceServiceRequest.FromString(bytes(raw))
    except (DecodeError, RecursionError, ValueError) as exc:
        detail = f"not an OTLP protobuf ExportTraceServiceRequest: {str(exc)[:200]}"
        raise RejectedEvent("decode", detail) from None
    return MessageToDict(message) if message.resource_spans else {"resourceSpans": []}


def _id_hex(value: Any, size: int, name: str) -> str:
    """A trace (16 bytes) or span (8 bytes) id as lowercase hex, from hex (OTLP JSON) or base64
    (protobuf JSON). The lengths differ (32/16 hex vs 24/12 base64), so the forms cannot clash."""
    if isinstance(value, str) and value:
        try:
            data = (bytes.fromhex(value) if len(value) == 2 * size
                    else base64.b64decode(std_base64(value), validate=True))
        except (ValueError, binascii.Error):
            data = b""
        if len(data) == size:
            if not any(data):
                raise RejectedEvent("invalid", f"{name} is all zeros, which OTLP defines as invalid", name)
            return data.hex()
    raise RejectedEvent("invalid", f"{name}: {short(value)} is neither {2 * size} hex digits nor "
                                   f"base64 of {size} bytes", name)


def _iso_utc(value: Any) -> str:
    """``endTimeUnixNano`` (decimal string in OTLP JSON) as ISO 8601 UTC with ``Z``, to the microsecond."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError
        nanos = int(value)
        if nanos <= 0:
            raise ValueError
        seconds, rest = divmod(nanos, _NANOS)
        moment = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1000)
    except (ValueError, OverflowError, OSError):
        raise RejectedEvent("invalid", f"endTimeUnixNano: {short(value)} is not a time in nanoseconds "
                                       "since the epoch", "endTimeUnixNano") from None
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


# ---------------------------------------------------------------- spans → events
def _label(value: Any) -> str:
    """A label's text: a string, a number's decimal text (tenant 42), else "" (never valid)."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


class _Skip(Exception):
    """A GenAI span that is deliberately not an event (an unpriced tool)."""


def _event(span: dict[str, Any], attrs: dict[str, Any], resource: dict[str, Any], component: str,
           mapping: TraceMapping, pricebook: Pricebook | None, counts: dict[str, int]) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "cost_event_id": _id_hex(span.get("spanId"), 8, "spanId"),
        "trace_id": _id_hex(span.get("traceId"), 16, "traceId"),
        "ts": _iso_utc(span.get("endTimeUnixNano")),
        "tenant_id": mapping.unattributed_tenant,
        "origin": "trace",
    }
    for field in MAPPED_FIELDS:
        keys = getattr(mapping, field)
        check = _LABEL_CHECKS.get(field)
        if check is None:  # tenant_id (checked below), allocated_cost_usd (Ingest checks it): first hit
            hit = first_hit(attrs, keys) or first_hit(resource, keys)  # the span's own attributes win
            if hit is not None:
                event[field] = text_of(hit)
            continue
        for hit in chain(hits(attrs, keys), hits(resource, keys)):  # a label: the first usable hit
            text = _label(hit[1])
            text = text.lower() if field == "risk_tier" else text
            if check(text):
                event[field] = text
                break
            counts["unusable_values"] += 1
    if not _TENANT.match(event["tenant_id"]):  # it becomes a Kafka key before Ingest sees it
        raise RejectedEvent("invalid", f"tenant_id: {short(event['tenant_id'])} is not a valid tenant id "
                                       f"(pattern {_ID})", "tenant_id")
    event["component"] = component
    provider = first_hit(attrs, _PROVIDER)
    if provider is not None:
        event["provider"] = text_of(provider)
    service = first_hit(attrs, ("gen_ai.tool.name",) if component == "tool" else _MODEL)
    if service is not None:
        event["model_or_service"] = text_of(service)
    event["input_tokens"] = count_of(attrs, _INPUT)
    event["output_tokens"] = count_of(attrs, _OUTPUT)
    event["cached_tokens"] = count_of(attrs, _CACHED)
    event["api_calls"] = 1
    if component == "tool" and pricebook is not None and "allocated_cost_usd" not in event:
        probe = CostEvent.model_construct(
            provider=event.get("provider"), model_or_service=event.get("model_or_service"), api_calls=1,
            input_tokens=event["input_tokens"], output_tokens=event["output_tokens"],
            cached_tokens=event["cached_tokens"], gpu_seconds=0.0,
        )
        if pricebook.price(probe, int(span["endTimeUnixNano"]) / _NANOS)[0] is None:
            raise _Skip  # most tools are local functions: no price, no cost, no dead letter
    return event


def _spans(request: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, resource attributes, span) for every span in document order; a malformed level
    yields the offending value in place of a span so the caller rejects it."""
    for r, resource_spans in enumerate(request.get("resourceSpans") or ()):
        where = f"resourceSpans[{r}]"
        if not isinstance(resource_spans, dict):
            yield where, {}, resource_spans
            continue
        resource = resource_spans.get("resource")
        resource_attrs = attribute_map(resource.get("attributes")) if isinstance(resource, dict) else {}
        scopes = resource_spans.get("scopeSpans") or ()
        for s, scope_spans in enumerate(scopes if isinstance(scopes, list) else (scopes,)):
            spans = scope_spans.get("spans") if isinstance(scope_spans, dict) else scope_spans
            if not isinstance(spans, list):
                yield f"{where}.scopeSpans[{s}]", resource_attrs, spans
                continue
            for k, span in enumerate(spans):
                yield f"{where}.scopeSpans[{s}].spans[{k}]", resource_attrs, span


def spans_to_events(
    request: dict[str, Any],
    mapping: TraceMapping,
    *,
    pricebook: Pricebook | None = None,
    stats: dict[str, int] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], list[Rejection]]:
    """Cost-event dicts per tenant (document order) and the rejections of GenAI spans.

    Only spans with ``gen_ai.operation.name`` count: model calls (``chat``, ``text_completion``,
    ``generate_content``, ``embeddings``) and tools (``execute_tool``); agent, workflow and other
    operations carry no cost of their own (their children do, and an agent span's usage is often
    the sum of its children's). Other spans are ordinary traffic, skipped without a word.

    ``pricebook``: when given, a tool span the pricebook cannot price and that carries no cost
    attribute is skipped (a local function costs nothing) instead of becoming an ``unpriced``
    dead letter; without it every tool span becomes an event. ``stats``, when given, is
    incremented: ``spans``, ``events``, ``rejected``, ``not_genai``, ``no_cost_operation``,
    ``unpriced_tool``, ``unattributed``, ``unusable_values`` (label values skipped as invalid).
    A rejection's ``index`` is the span's position among all spans of the request, from 0.
    """
    counts = dict.fromkeys(("spans", "events", "rejected", "not_genai", "no_cost_operation",
                            "unpriced_tool", "unattributed", "unusable_values"), 0)
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    rejections: list[Rejection] = []
    for index, (where, resource_attrs, span) in enumerate(_spans(request)):
        counts["spans"] += 1
        if not isinstance(span, dict):
            counts["rejected"] += 1
            rejections.append(Rejection("decode", f"{where}: expected a span object, got {short(span)}",
                                        None, index))
            continue
        attrs = attribute_map(span.get("attributes"))
        operation = attrs.get("gen_ai.operation.name")
        if operation is None:
            counts["not_genai"] += 1
            continue
        operation = operation.get("stringValue") if isinstance(operation, dict) else None
        operation = operation if isinstance(operation, str) else None  # a list is unhashable
        component = ("model_call" if operation in MODEL_CALL_OPERATIONS
                     else "tool" if operation in TOOL_OPERATIONS else None)
        if component is None:
            counts["no_cost_operation"] += 1
            continue
        try:
            event = _event(span, attrs, resource_attrs, component, mapping, pricebook, counts)
        except _Skip:
            counts["unpriced_tool"] += 1
            continue
        except RejectedEvent as exc:
            counts["rejected"] += 1
            span_id = span.get("spanId")
            what = f"{where} (spanId {span_id[:40]})" if isinstance(span_id, str) else where
            rejections.append(Rejection(exc.reason, f"{what}: {exc.detail}", exc.field, index))
            continue
        counts["events"] += 1
        tenant = event["tenant_id"]
        if tenant == mapping.unattributed_tenant:
            counts["unattributed"] += 1
        by_tenant.setdefault(tenant, []).append(event)
    if stats is not None:
        for name, value in counts.items():
            stats[name] = stats.get(name, 0) + value
    return by_tenant, rejections

