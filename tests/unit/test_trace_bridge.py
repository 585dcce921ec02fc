"""streams/trace_bridge.py: one export → records keyed by tenant, within the cost topic's limits."""

from __future__ import annotations

import orjson

from spendwarden.streams.otlp_mapping import TraceMapping
from spendwarden.streams.pricebook import Pricebook
from spendwarden.streams.trace_bridge import TraceBridge


def export(spans_by_tenant: dict[str, int]) -> bytes:
    resource_spans = []
    span_no = 0
    for tenant, count in spans_by_tenant.items():
        spans = []
        for _ in range(count):
            span_no += 1
            spans.append({"traceId": f"{span_no:032x}", "spanId": f"{span_no:016x}", "name": "chat",
                          "startTimeUnixNano": "1767225600000000000", "endTimeUnixNano": "1767225601000000000",
                          "attributes": [
                              {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                              {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                              {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                              {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}}]})
        resource_spans.append({"resource": {"attributes": [
            {"key": "spendwarden.tenant_id", "value": {"stringValue": tenant}}]},
            "scopeSpans": [{"scope": {"name": "app"}, "spans": spans}]})
    return orjson.dumps({"resourceSpans": resource_spans})


def test_each_tenant_gets_records_of_at_most_the_batch_size_keyed_by_it() -> None:
    bridge = TraceBridge(TraceMapping(), Pricebook.default(), max_events_per_record=4)
    found = bridge.convert(export({"acme": 10, "globex": 3}))
    sizes = [(key, len(orjson.loads(value))) for key, value in found.records]
    assert sizes == [(b"acme", 4), (b"acme", 4), (b"acme", 2), (b"globex", 3)]
    ids = [e["cost_event_id"] for _, value in found.records for e in orjson.loads(value)]
    assert ids == [f"{n:016x}" for n in range(1, 14)]  # every span once, in order
    assert found.stats["events"] == 13 and not found.rejections


def test_records_are_halved_until_they_fit_the_byte_limit() -> None:
    one = len(TraceBridge(TraceMapping(), Pricebook.default()).convert(export({"acme": 1})).records[0][1])
    bridge = TraceBridge(TraceMapping(), Pricebook.default(), max_record_bytes=3 * one)
    found = bridge.convert(export({"acme": 8}))
    assert all(len(value) <= 3 * one for _, value in found.records)
    assert sum(len(orjson.loads(value)) for _, value in found.records) == 8


def test_bytes_that_are_no_export_are_one_rejection() -> None:
    found = TraceBridge(TraceMapping(), Pricebook.default()).convert(b"[1, 2]")
    assert not found.records and [r.reason for r in found.rejections] == ["decode"]


def test_what_cannot_be_read_is_refused_never_raised() -> None:
    bridge = TraceBridge(TraceMapping(), Pricebook.default())
    assert [r.reason for r in bridge.convert(None).rejections] == ["decode"]  # a tombstone
    odd = orjson.loads(export({"acme": 1}))
    odd["resourceSpans"][0]["resource"]["attributes"] = [
        {"key": "spendwarden.tenant_id", "value": {"kvlistValue": {"values": [{"key": ["a"], "value": {}}]}}}]
    found = bridge.convert(orjson.dumps(odd))
    assert not found.records and found.rejections  # refused with a reason, not a TypeError


def test_one_event_over_the_byte_limit_is_refused_not_sent() -> None:
    big = orjson.loads(export({"acme": 2}))
    span = big["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"].append({"key": "spendwarden.workflow_step", "value": {"stringValue": "x" * 150}})
    small = len(TraceBridge(TraceMapping(), Pricebook.default()).convert(export({"acme": 1})).records[0][1])
    bridge = TraceBridge(TraceMapping(), Pricebook.default(), max_record_bytes=small + 20)
    found = bridge.convert(orjson.dumps(big))
    assert [len(orjson.loads(value)) for _, value in found.records] == [1]
    assert [r.reason for r in found.rejections] == ["too_large"]
