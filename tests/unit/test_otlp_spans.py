"""OTLP traces → cost events: spans made by the real OpenTelemetry Python SDK, encoded the way the
collector's Kafka exporter writes them, converted, then validated and priced by the real Ingest.

Spans are recorded with ``TracerProvider`` + ``SimpleSpanProcessor`` + ``InMemorySpanExporter`` and
encoded to an ``ExportTraceServiceRequest`` by the OTLP exporters' own ``encode_spans``;
``MessageToDict`` turns that into protobuf JSON (ids in base64), and ``collector_json`` rewrites it
the way the collector's ``otlp_json`` marshaler writes it (ids in lowercase hex, enums as integers).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendwarden.exceptions import ConfigError, RejectedEvent, RuleFileError
from spendwarden.streams.engine import Engine, position
from spendwarden.streams.ingest import Ingest, Rejection
from spendwarden.streams.otlp import decode_any_value, decode_export, spans_to_events
from spendwarden.streams.otlp_mapping import TraceMapping, load_mapping
from spendwarden.streams.pricebook import Pricebook

# A small pricebook, so each expected cost below can be worked out by hand from these lines
# (prices quoted: exact decimals, as Pricebook.load reads them).
PRICES = """
versions:
  - version: "t-1"
    effective_from: "2026-01-01T00:00:00Z"
    prices:
      - {provider: openai, model: gpt-4o, input_per_mtok: "2.50", output_per_mtok: "10.00",
         cached_per_mtok: "1.25"}
      - {provider: anthropic, model: claude-haiku-4, input_per_mtok: "0.80", output_per_mtok: "4.00"}
      - {provider: openai, model: text-embedding-3-small, input_per_mtok: "0.02"}
      - {provider: internal, model: web-search, per_call: "0.005"}
"""
PRICEBOOK = Pricebook.from_dict(yaml.safe_load(PRICES), "test-prices")
INGEST = Ingest(PRICEBOOK)
MAPPING = TraceMapping()

T0 = int(datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp()) * 10**9
NOW = T0 / 1e9 + 3600
MS = 10**6


def nanos(usd_per_mtok: str, tokens: int) -> Decimal:
    """Nano-dollars of ``tokens`` at a per-million-token price, exactly."""
    return Decimal(usd_per_mtok) * tokens / 10**6 * 10**9


# ------------------------------------------------------------------ building real SDK spans

class Recorder:
    """One in-memory exporter shared by tracer providers (one per process/resource)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.spans: dict[str, ReadableSpan] = {}

    def tracer(self, **resource: Any) -> Tracer:
        provider = TracerProvider(resource=Resource.create(resource))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        return provider.get_tracer("app.genai", "1.0")

    @contextmanager
    def span(self, tracer: Tracer, label: str, start_ms: int, end_ms: int, **attrs: Any) -> Iterator[Any]:
        """A span from T0 + start_ms to T0 + end_ms (plus 123 ns, to see them truncated)."""
        with tracer.start_as_current_span(label, attributes=attrs, start_time=T0 + start_ms * MS,
                                          end_on_exit=False) as span:
            yield span
        span.end(end_time=T0 + end_ms * MS + 123)
        self.spans[label] = span

    def request(self) -> ExportTraceServiceRequest:
        return encode_spans(self.exporter.get_finished_spans())

    def span_id(self, label: str) -> str:
        return format(self.spans[label].context.span_id, "016x")

    def trace_id(self, label: str) -> str:
        return format(self.spans[label].context.trace_id, "032x")


def collector_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP JSON as the collector's ``otlp_json`` encoding writes it.

    Protobuf's JSON mapping (``MessageToDict``) already gives the OTLP JSON field names
    (lowerCamelCase) and int64 as decimal strings; OTLP JSON differs in writing ``traceId``,
    ``spanId`` and ``parentSpanId`` (also in links) as lowercase hex instead of base64, and enums
    as integers. So: integers for enums, then every id base64 → hex.
    """
    data = MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return data


def agent_day() -> Recorder:
    """Two services, three tenants plus an unattributed process, in one export.

    support-bot (tenant acme on the resource): invoke_agent → chat → an HTTP call, execute_tool
    (a priced web search, a local function); a legacy-attribute chat whose span names tenant
    initech (span beats resource). drafting (tenant globex via tenant.id): embeddings, a
    create_agent span. batch (no tenant): one chat.
    """
    rec = Recorder()
    support = rec.tracer(**{"service.name": "support-bot", "spendwarden.tenant_id": "acme",
                            "spendwarden.use_case_id": "support", "deployment.environment.name": "staging",
                            "spendwarden.cost_center": "cc-42"})
    with rec.span(support, "agent", 0, 5000, **{
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage",
            "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            # Agent frameworks put the sum of their children's usage here: counting it would double.
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200}):
        with rec.span(support, "chat", 100, 1600, **{
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-latest", "gen_ai.response.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
                "gen_ai.usage.cache_read.input_tokens": 400, "gen_ai.agent.name": "triage",
                "spendwarden.risk_tier": "low"}):
            with rec.span(support, "http", 110, 1590, **{"http.request.method": "POST",
                                                         "server.address": "api.openai.com"}):
                pass
        with rec.span(support, "tool", 1700, 2200, **{
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web-search",
                "gen_ai.tool.type": "function", "spendwarden.workflow_step": "research"}):
            pass
        with rec.span(support, "local-tool", 2300, 2301, **{
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_order"}):
            pass
    with rec.span(support, "legacy-chat", 6000, 7250, **{
            "gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-haiku-4", "gen_ai.usage.prompt_tokens": 2000,
            "gen_ai.usage.completion_tokens": 300, "spendwarden.tenant_id": "initech"}):
        pass
    drafting = rec.tracer(**{"service.name": "drafting", "tenant.id": "globex"})
    with rec.span(drafting, "create", 0, 10, **{"gen_ai.operation.name": "create_agent",
                                                "gen_ai.agent.name": "writer"}):
        pass
    with rec.span(drafting, "embed", 20, 80, **{
            "gen_ai.operation.name": "embeddings", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small", "gen_ai.usage.input_tokens": 12345,
            "deployment.environment": "prod-eu"}):
        pass
    batch = rec.tracer(**{"service.name": "batch"})
    with rec.span(batch, "orphan-chat", 0, 999, **{
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 50}):
        pass
    return rec


@pytest.fixture(scope="module")
def day() -> Recorder:
    return agent_day()


def convert(rec: Recorder, **kw: Any) -> tuple[dict[str, list[dict[str, Any]]], list[Rejection]]:
    raw = orjson.dumps(collector_json(rec.request()))
    return spans_to_events(decode_export(raw), MAPPING, **kw)


# ------------------------------------------------------------------ the produced events

def test_export_is_split_by_tenant_with_every_field(day: Recorder) -> None:
    """Each GenAI model or tool span becomes one event under its tenant; agent, create_agent and
    HTTP spans make none; every field comes from the span, its resource or the mapping defaults."""
    by_tenant, rejections = convert(day)
    assert rejections == []
    assert list(by_tenant) == ["acme", "initech", "globex", "unattributed"]

    def ids(label: str) -> dict[str, Any]:
        return {"schema_version": 1, "cost_event_id": day.span_id(label), "trace_id": day.trace_id(label),
                "origin": "trace"}

    acme_resource = {"tenant_id": "acme", "use_case_id": "support", "cost_center": "cc-42",
                     "environment": "staging"}
    assert by_tenant["acme"] == [
        {**ids("chat"), "ts": "2026-05-01T12:00:01.600000Z", **acme_resource,
         "workflow_step": "triage", "risk_tier": "low", "component": "model_call",
         "provider": "openai", "model_or_service": "gpt-4o",  # the response model, not the request's
         "input_tokens": 1000, "output_tokens": 200, "cached_tokens": 400, "api_calls": 1},
        {**ids("tool"), "ts": "2026-05-01T12:00:02.200000Z", **acme_resource,
         "workflow_step": "research", "component": "tool", "model_or_service": "web-search",
         "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "api_calls": 1},
        {**ids("local-tool"), "ts": "2026-05-01T12:00:02.301000Z", **acme_resource,
         "component": "tool", "model_or_service": "lookup_order",
         "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "api_calls": 1},
    ]
    assert by_tenant["initech"] == [
        {**ids("legacy-chat"), "ts": "2026-05-01T12:00:07.250000Z", "tenant_id": "initech",
         "use_case_id": "support", "cost_center": "cc-42", "environment": "staging",
         "component": "model_call", "provider": "anthropic", "model_or_service": "claude-haiku-4",
         "input_tokens": 2000, "output_tokens": 300, "cached_tokens": 0, "api_calls": 1},
    ]
    assert by_tenant["globex"] == [
        {**ids("embed"), "ts": "2026-05-01T12:00:00.080000Z", "tenant_id": "globex",
         "environment": "prod-eu", "component": "model_call", "provider": "openai",
         "model_or_service": "text-embedding-3-small",
         "input_tokens": 12345, "output_tokens": 0, "cached_tokens": 0, "api_calls": 1},
    ]
    assert by_tenant["unattributed"] == [
        {**ids("orphan-chat"), "ts": "2026-05-01T12:00:00.999000Z", "tenant_id": "unattributed",
         "component": "model_call", "provider": "openai", "model_or_service": "gpt-4o",
         "input_tokens": 100, "output_tokens": 50, "cached_tokens": 0, "api_calls": 1},
    ]
    # The nested spans really are nested (the skipped agent is the parent of what counts).
    assert day.spans["chat"].parent.span_id == day.spans["agent"].context.span_id
    assert day.spans["http"].parent.span_id == day.spans["chat"].context.span_id


def test_skips_are_counted_in_stats(day: Recorder) -> None:
    """Non-GenAI spans, agent/create_agent spans and (with a pricebook) unpriced tools are skipped."""
    stats: dict[str, int] = {}
    by_tenant, _ = convert(day, pricebook=PRICEBOOK, stats=stats)
    assert stats == {"spans": 9, "events": 5, "rejected": 0, "not_genai": 1, "no_cost_operation": 2,
                     "unpriced_tool": 1, "unattributed": 1, "unusable_values": 0}
    assert [e["model_or_service"] for e in by_tenant["acme"]] == ["gpt-4o", "web-search"]


def test_ingest_prices_each_tenant_record_exactly(day: Recorder) -> None:
    """Each tenant's events, sent as one JSON array record, are validated and priced by the real
    Ingest to the nano-dollar, from the pricebook lines above."""
    by_tenant, _ = convert(day, pricebook=PRICEBOOK)
    priced: dict[str, list[int]] = {}
    for tenant, events in by_tenant.items():
        good, bad = INGEST.parse_record(orjson.dumps(events), now=NOW)
        assert bad == []
        assert all(p.event.tenant_id == tenant and p.pricing_version == "t-1" for p in good)
        priced[tenant] = [p.cost_nanos for p in good]
    chat = nanos("2.50", 1000 - 400) + nanos("1.25", 400) + nanos("10.00", 200)  # cached at its own rate
    assert chat == 4_000_000
    assert priced == {
        "acme": [int(chat), int(Decimal("0.005") * 10**9)],                       # 4,000,000 + 5,000,000
        "initech": [int(nanos("0.80", 2000) + nanos("4.00", 300))],               # 2,800,000
        "globex": [int(nanos("0.02", 12345))],                                    # 246,900
        "unattributed": [int(nanos("2.50", 100) + nanos("10.00", 50))],           # 750,000
    }
    assert priced["globex"] == [246_900] and priced["initech"] == [2_800_000]


def test_protobuf_json_ids_in_base64_give_the_same_events(day: Recorder) -> None:
    """``MessageToDict`` output as is (ids base64, enums as names) converts to the same events."""
    hexed, _ = convert(day)
    as_b64 = MessageToDict(day.request())
    assert as_b64["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"].endswith("=")
    from_b64, rejections = spans_to_events(decode_export(orjson.dumps(as_b64)), MAPPING)
    assert rejections == [] and from_b64 == hexed


def test_protobuf_encoding_gives_the_same_events(day: Recorder) -> None:
    """``encoding: otlp_proto`` records (the collector's default) decode to the same events."""
    hexed, _ = convert(day)
    request = decode_export(day.request().SerializeToString(), "otlp_proto")
    assert spans_to_events(request, MAPPING) == (hexed, [])
    with pytest.raises(RejectedEvent) as bad:
        decode_export(b"\x0a\xff\xff\xff", "otlp_proto")
    assert bad.value.reason == "decode"
    with pytest.raises(ConfigError, match="otlp_avro"):
        decode_export(b"{}", "otlp_avro")


def test_span_event_and_gateway_event_count_once(day: Recorder, ruleset_from_yaml: Any) -> None:
    """A gateway that sends its own cost event for the call under the span id (same tenant, same
    end time) is counted once by the engine, whichever copy arrives first."""
    span_event = convert(day)[0]["acme"][0]
    gateway_event = {"cost_event_id": day.span_id("chat"), "ts": "2026-05-01T12:00:01.600Z",
                     "tenant_id": "acme", "use_case_id": "support", "provider": "openai",
                     "model_or_service": "gpt-4o", "allocated_cost_usd": "0.004"}
    rules = ruleset_from_yaml(
        "budgets:\n  - {name: daily, for_each: [tenant_id], period: day, limit_usd: 100}\n")
    for first, second in ((gateway_event, span_event), (span_event, gateway_event)):
        engine = Engine(rules)
        for offset, obj in enumerate((first, second), start=1):
            (priced,), _ = INGEST.parse_record(orjson.dumps(obj), now=NOW)
            engine.process(priced, position(offset))
        assert engine.stats.duplicates == 1
        assert engine.totals() == {("daily", ("acme",), "2026-05-01"): 4_000_000}


# ------------------------------------------------------------------ rejections and decode errors

def test_bad_spans_are_rejected_with_their_index() -> None:
    """Negative or non-numeric tokens and unparseable ids reject that span only, with its index."""
    rec = Recorder()
    tracer = rec.tracer(**{"tenant.id": "acme"})
    for label, attrs in (
        ("ok", {"gen_ai.usage.input_tokens": 10}),
        ("negative", {"gen_ai.usage.output_tokens": -5}),
        ("words", {"gen_ai.usage.input_tokens": "ten"}),
        ("bad-id", {}),
        ("plain", None),
    ):
        extra = ({} if attrs is None
                 else {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", **attrs})
        with rec.span(tracer, label, 0, 10, **extra):
            pass
    request = collector_json(rec.request())
    spans = request["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[3]["spanId"] = "not-a-span-id"
    by_tenant, rejections = spans_to_events(request, MAPPING)
    assert [e["cost_event_id"] for e in by_tenant["acme"]] == [rec.span_id("ok")]
    assert [(r.reason, r.field, r.index) for r in rejections] == [
        ("invalid", "gen_ai.usage.output_tokens", 1),
        ("invalid", "gen_ai.usage.input_tokens", 2),
        ("invalid", "spanId", 3),
    ]
    assert "-5 tokens is negative" in rejections[0].detail
    where = f"resourceSpans[0].scopeSpans[0].spans[1] (spanId {rec.span_id('negative')})"
    assert rejections[0].detail.startswith(where)
    assert "'ten'" in rejections[1].detail
    assert "'not-a-span-id'" in rejections[2].detail


@pytest.mark.parametrize("raw, said", [
    (b"{not json", "not UTF-8 JSON"),
    (b'{"cost_event_id": "e1", "tenant_id": "acme"}', "resourceSpans"),
    (b'{"resourceSpans": {}}', "resourceSpans"),
    (b"[]", "got list"),
    (b"\xff\xfe", "not UTF-8 JSON"),
])
def test_bad_records_are_decode_rejections(raw: bytes, said: str) -> None:
    with pytest.raises(RejectedEvent) as caught:
        decode_export(raw)
    assert caught.value.reason == "decode" and said in caught.value.detail


def test_oversized_record_is_too_large() -> None:
    with pytest.raises(RejectedEvent) as caught:
        decode_export(b'{"resourceSpans": []}', max_bytes=10)
    assert caught.value.reason == "too_large"


def test_any_value_kinds() -> None:
    """Every AnyValue kind of OTLP JSON, int64 as a string or a number, doubles as text."""
    assert decode_any_value({"stringValue": "a"}) == "a"
    assert decode_any_value({"intValue": "9007199254740993"}) == 9007199254740993  # beyond float precision
    assert decode_any_value({"intValue": 7}) == 7
    assert decode_any_value({"doubleValue": 0.5}) == 0.5
    assert decode_any_value({"doubleValue": "Infinity"}) == float("inf")
    assert decode_any_value({"boolValue": False}) is False
    assert decode_any_value({"bytesValue": base64.b64encode(b"\x00\x01").decode()}) == b"\x00\x01"
    assert decode_any_value({"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "x"}]}}) == [1, "x"]
    assert decode_any_value({"kvlistValue": {"values": [
        {"key": "k", "value": {"arrayValue": {}}}]}}) == {"k": []}
    assert decode_any_value({}) is None
    for bad in ({"intValue": "1.5"}, {"intValue": True}, {"stringValue": 3}, {"weirdValue": 1}, "x"):
        with pytest.raises(ValueError):
            decode_any_value(bad)


def test_numeric_tenant_and_string_tokens_from_other_writers() -> None:
    """A tenant id sent as a number is its decimal text; tokens as decimal strings or integral
    doubles (JavaScript SDKs) are counted; the older cached-token key is read."""
    request = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "tenant.id", "value": {"intValue": "42"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "EEE19B7EC3C1B174",
            "endTimeUnixNano": 1777636800000000000, "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"doubleValue": 30.0}},
                {"key": "gen_ai.usage.output_tokens", "value": {"stringValue": "7"}},
                {"key": "gen_ai.usage.cached_tokens", "value": {"intValue": 20}}]}]}]}]}
    (event,) = spans_to_events(request, MAPPING)[0]["42"]
    assert event["cost_event_id"] == "eee19b7ec3c1b174" and event["ts"] == "2026-05-01T12:00:00.000000Z"
    assert (event["input_tokens"], event["output_tokens"], event["cached_tokens"]) == (30, 7, 20)


# ------------------------------------------------------------------ the mapping file

def test_mapping_file_changes_attribution(tmp_path: Path) -> None:
    """A field given in the file replaces its default list; the unattributed tenant is configurable."""
    path = tmp_path / "traces.yaml"
    path.write_text("use_case_id: [use_case.id, service.name]\nunattributed_tenant: no-tenant\n"
                    "allocated_cost_usd: llm.cost_usd\n")
    mapping = load_mapping(path)
    assert mapping.use_case_id == ["use_case.id", "service.name"]
    assert mapping.allocated_cost_usd == ["llm.cost_usd"]
    assert mapping.tenant_id == TraceMapping().tenant_id
    rec = Recorder()
    tracer = rec.tracer(**{"service.name": "drafting"})
    with rec.span(tracer, "c", 0, 1, **{"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                        "llm.cost_usd": 0.1}):
        pass
    (event,) = spans_to_events(collector_json(rec.request()), mapping)[0]["no-tenant"]
    assert event["use_case_id"] == "drafting" and event["allocated_cost_usd"] == "0.1"
    (priced,), _ = INGEST.parse_record(orjson.dumps(event), now=NOW)
    assert priced.cost_nanos == 100_000_000  # its own cost, not the pricebook's


def test_mapping_file_typo_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "traces.yaml"
    path.write_text("tenant_id: [tenant.id]\nuse_cases: [use_case.id]\n")
    with pytest.raises(RuleFileError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{path}:2:1: use_cases: Extra inputs are not permitted")


def test_mapping_file_bad_value_and_bad_tenant(tmp_path: Path) -> None:
    path = tmp_path / "traces.yaml"
    path.write_text("tenant_id:\n  - tenant.id\n  - 3\nunattributed_tenant: _nobody\n")
    with pytest.raises(RuleFileError) as caught:
        load_mapping(path)
    assert str(caught.value).startswith(f"{path}:3:5: tenant_id.1: Input should be a valid string")
    path.write_text("unattributed_tenant: _nobody\n")
    with pytest.raises(RuleFileError, match=rf"^{path}:1:22: unattributed_tenant: String should match"):
        load_mapping(path)
    path.write_text("")
    assert load_mapping(path) == TraceMapping()
    with pytest.raises(ConfigError):
        load_mapping(tmp_path / "missing.yaml")


def test_labels_that_are_no_valid_ids_are_left_out_not_dead_lettered() -> None:
    """An agent named "Math Tutor" (the semconv example) cannot be a workflow_step, nor can a bool,
    and a list is no use case: each is skipped for the next usable value (the resource's use case)
    or the event's default, so the spend still counts; "LOW" is "low"."""
    rec = Recorder()
    tracer = rec.tracer(**{"tenant.id": "acme", "use_case.id": "support"})
    with rec.span(tracer, "c", 0, 1, **{
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.agent.name": "Math Tutor", "spendwarden.workflow_step": True,
            "spendwarden.tenant_id": "",  # empty is absent: the resource's tenant applies
            "spendwarden.risk_tier": "LOW", "spendwarden.use_case_id": ["a", "b"],
            "gen_ai.usage.input_tokens": 10}):
        pass
    stats: dict[str, int] = {}
    (event,) = spans_to_events(collector_json(rec.request()), MAPPING, stats=stats)[0]["acme"]
    assert "workflow_step" not in event and event["use_case_id"] == "support" and event["risk_tier"] == "low"
    assert stats["unusable_values"] == 3 and stats["rejected"] == 0
    (priced,), _ = INGEST.parse_record(orjson.dumps(event), now=NOW)
    assert priced.event.workflow_step is None and priced.cost_nanos == int(nanos("2.50", 10))


def test_invalid_tenant_attribute_is_rejected_not_keyed() -> None:
    """A tenant value that is not a valid id would become a bad Kafka key: the span is rejected."""
    rec = Recorder()
    tracer = rec.tracer(**{"tenant.id": "acme corp"})
    with rec.span(tracer, "c", 0, 1, **{"gen_ai.operation.name": "chat"}):
        pass
    by_tenant, (rejection,) = spans_to_events(collector_json(rec.request()), MAPPING)
    assert by_tenant == {} and rejection.field == "tenant_id" and rejection.index == 0

