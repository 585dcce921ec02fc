"""OTLP traces on a real broker: spans made by the OpenTelemetry SDK reach the worker as the
collector's Kafka exporter writes them (otlp_json), are split by tenant, priced and counted; a
gateway's cost event for a traced call is counted once; a broken export is dead-lettered."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harness import WorkerRun, add_input_topic, encode, new_run, produce, read_topic


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path, limit="1000")
    add_input_topic(worker, broker, topic_names, "traces", "SPENDWARDEN_TRACES_TOPIC")
    yield worker
    worker.kill()


def otlp_json(exporter: InMemorySpanExporter) -> bytes:
    """ExportTraceServiceRequest as the collector's otlp_json encoding writes it: ids in hex."""
    data = MessageToDict(encode_spans(exporter.get_finished_spans()), use_integers_for_enums=True)
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(data)


def chat(tracer: Any, input_tokens: int, output_tokens: int) -> Any:
    now = time.time_ns()
    span = tracer.start_span("chat gpt-4o", start_time=now - 2_000_000_000, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "spendwarden.risk_tier": "low"})
    span.end(end_time=now)
    return span


def test_spans_are_priced_split_by_tenant_and_counted_once(run: WorkerRun) -> None:
    exporter = InMemorySpanExporter()
    tracers = {}
    for tenant in ("acme", "globex"):
        provider = TracerProvider(resource=Resource.create({
            "service.name": f"{tenant}-bot", "spendwarden.tenant_id": tenant, "spendwarden.use_case_id": "chat"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers[tenant] = provider.get_tracer("app")
    traced = [chat(tracers["acme"], 1000, 100) for _ in range(3)] + [chat(tracers["globex"], 4000, 0)]
    with tracers["acme"].start_as_current_span("GET /health"):  # ordinary traffic: not a cost
        pass
    run.start()
    run.wait_ready()

    # The gateway also reported the first acme call, under the span id (docs/traces.md).
    first = traced[0]
    gateway = {"cost_event_id": format(first.context.span_id, "016x"),
               "ts": datetime.fromtimestamp(first.end_time / 1e9, timezone.utc).isoformat(),
               "tenant_id": "acme", "use_case_id": "chat", "risk_tier": "low", "provider": "openai",
               "model_or_service": "gpt-4o", "input_tokens": 1000, "output_tokens": 100}
    produce(run.bootstrap, run.topics["events"], encode([gateway]))
    produce(run.bootstrap, run.topics["traces"], [(b"", otlp_json(exporter)), (b"", b"{not an export")])

    # gpt-4o: $2.50 per M input, $10 per M output (the bundled pricebook).
    acme_call = Decimal("2.50") * 1000 / 10**6 + Decimal("10") * 100 / 10**6
    expected = {"acme": 3 * acme_call, "globex": Decimal("2.50") * 4000 / 10**6}
    deadline = time.monotonic() + 60
    totals: dict[str, Decimal] = {}
    while time.monotonic() < deadline:
        totals = {}
        for budget in run.budgets()["budgets"]:
            totals[budget["tenant"]] = totals.get(budget["tenant"], Decimal(0)) + Decimal(budget["spend_usd"])
        if totals == expected:
            break
        time.sleep(0.25)
    assert totals == expected, run.tail()

    dead = read_topic(run.bootstrap, run.topics["dead"], expect=1)
    assert [d["reason"] for d in dead] == ["decode"]
    assert dead[0]["source"]["topic"] == run.topics["traces"]
    time.sleep(1.5)  # a few more batches: nothing else arrives (the duplicate stays counted once)
    again = {b["tenant"]: Decimal(b["spend_usd"]) for b in run.budgets()["budgets"]}
    assert again == expected
