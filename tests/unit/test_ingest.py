"""Ingest: every bad record becomes a Rejection with the right reason, never an exception."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendwarden.exceptions import RejectedEvent
from spendwarden.streams.events import CostEvent
from spendwarden.streams.ingest import Ingest, Rejection
from spendwarden.streams.pricebook import Pricebook

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp()
INGEST = Ingest(Pricebook.default(), max_record_bytes=4096, max_batch=50)


def good(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cost_event_id": "e1",
        "ts": "2026-05-01T11:59:00Z",
        "tenant_id": "acme",
        "use_case_id": "support",
        "risk_tier": "low",
        "provider": "openai",
        "model_or_service": "gpt-4o",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not ...}


def parse(obj: Any) -> tuple[list[Any], list[Rejection]]:
    raw = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return INGEST.parse_record(raw, now=NOW)


def rejected(obj: Any) -> Rejection:
    events, rejections = parse(obj)
    assert events == [] and len(rejections) == 1, rejections
    return rejections[0]


def test_good_event_priced() -> None:
    """A valid single event is priced from the pricebook with its version."""
    events, rejections = parse(good())
    assert rejections == []
    (ev,) = events
    assert ev.cost_nanos == ev.list_cost_nanos == 1000 * 2500 + 100 * 10000
    assert ev.pricing_version == "2026-10" and ev.event.risk_tier == "low"


def test_missing_risk_tier_is_high() -> None:
    """No risk_tier means high, so cost controls never treat it as low risk."""
    (ev,), _ = parse(good(risk_tier=...))
    assert ev.event.risk_tier == "high"


def test_own_cost_kept_and_list_price_recorded() -> None:
    """allocated_cost_usd wins; the pricebook figure is kept as list_cost_nanos."""
    (ev,), _ = parse(good(allocated_cost_usd="0.0042"))
    assert ev.cost_nanos == 4_200_000 and ev.list_cost_nanos == 3_500_000 and ev.pricing_version == "2026-10"
    (ev,), _ = parse(good(allocated_cost_usd=0.5, model_or_service="unlisted-model"))
    assert ev.cost_nanos == 500_000_000 and ev.list_cost_nanos is None


def test_unpriced_rejected() -> None:
    """No own cost and no pricebook entry → unpriced, naming the model and version."""
    r = rejected(good(provider="acme-ai", model_or_service="mystery-1"))
    assert r.reason == "unpriced" and "acme-ai/mystery-1" in r.detail and "2026-10" in r.detail
    r = rejected(good(ts="2025-01-01T00:00:00Z"))
    assert r.reason == "unpriced" and "none in force" in r.detail


NEG_TOKENS = "input_tokens: Input should be greater than or equal to 0 (got -5)"


@pytest.mark.parametrize(
    ("record", "field", "needle"),
    [
        (good(input_tokens=-5), "input_tokens", NEG_TOKENS),
        (good(allocated_cost_usd=-1), None, "adjustment"),
        (good(risk_tier="extreme"), "risk_tier", "'low', 'medium' or 'high'"),
        (good(tenant_id=...), "tenant_id", "tenant_id: Field required"),
        (good(input_tokens="lots"), "input_tokens", "valid integer"),
        (good(ts="2026-05-01T11:59:00"), "ts", "timezone"),
        (good(cached_tokens=2000), "cached_tokens", "exceeds input_tokens"),
        (good(allocated_cost_usd="1e999999999"), "allocated_cost_usd", "beyond"),
        (good(input_tokens=10**15), "input_tokens", "above the limit"),
        (good(cost_event_id="x" * 500), "cost_event_id", "…"),
        ([1], None, "expected a JSON object"),
    ],
)
def test_invalid_rejections(record: Any, field: str | None, needle: str) -> None:
    """Schema and sanity failures are 'invalid' with the field and a readable detail."""
    r = rejected(record)
    assert r.reason == "invalid" and r.field == field and needle in r.detail, r


def test_negative_adjustment_accepted() -> None:
    """A refund sent as component: adjustment may carry a negative cost."""
    (ev,), _ = parse(good(component="adjustment", allocated_cost_usd="-0.25"))
    assert ev.cost_nanos == -250_000_000


def test_future_beyond_skew() -> None:
    """Events too far ahead of now are 'future'; within skew, or with no now, pass."""
    r = rejected(good(ts="2026-05-01T12:10:00Z"))
    assert r.reason == "future" and "300 s" in r.detail and r.field == "ts"
    assert parse(good(ts="2026-05-01T12:04:00Z"))[1] == []
    assert INGEST.parse_record(orjson.dumps(good(ts="2030-01-01T00:00:00Z")))[1] == []


def test_decode_failures() -> None:
    """Oversized, non-UTF-8, non-JSON and scalar records are rejected with index None."""
    assert rejected(orjson.dumps(good(trace_id="x" * 5000))).reason == "too_large"
    assert rejected(orjson.dumps([good()] * 51)).reason == "too_large"
    assert rejected(b'{"tenant_id": "\xff\xfe"}').reason == "decode"
    assert rejected(b"{not json").reason == "decode"
    assert rejected(b'{"gpu_seconds": NaN}').reason == "decode"
    r = rejected(b"42")
    assert r.reason == "decode" and r.index is None
    assert parse(b"[]") == ([], [])


def test_nan_in_dict_rejected() -> None:
    """NaN or Infinity inside a Python dict (no JSON) is still refused as invalid."""
    for field, value in (("gpu_seconds", float("nan")), ("allocated_cost_usd", Decimal("Infinity"))):
        with pytest.raises(RejectedEvent) as info:
            INGEST.validate(good(**{field: value}))
        assert info.value.reason == "invalid" and info.value.field == field


def test_array_mixes_good_and_bad() -> None:
    """Good array items are kept; each bad item is rejected with its index."""
    items = [good(cost_event_id="a"), good(input_tokens=-1), "x", good(cost_event_id="b"), good(risk_tier=0)]
    events, rejections = parse(items)
    assert [e.event.cost_event_id for e in events] == ["a", "b"]
    assert [(r.index, r.reason, r.field) for r in rejections] == [
        (1, "invalid", "input_tokens"),
        (2, "invalid", None),
        (4, "invalid", "risk_tier"),
    ]


def test_dead_letter_payload() -> None:
    """Dead letters carry reason, source and the raw record (text or base64)."""
    r = Rejection("decode", "bad", None, None)
    letter = r.to_dead_letter(b"\xff", {"topic": "cost-events", "partition": 0, "offset": 7})
    assert letter["raw"] is None and base64.b64decode(letter["raw_base64"]) == b"\xff"
    assert letter["source"]["offset"] == 7 and letter["reason"] == "decode"
    letter = r.to_dead_letter(b"{}", {"file": "x.jsonl", "line": 3})
    assert letter["raw"] == "{}" and letter["raw_base64"] is None and letter["index"] is None


def test_fast_and_slow_paths_agree() -> None:
    """The model_validate_json fast path yields the same event as decode + validate."""
    raw = orjson.dumps(good(gpu_seconds=0.5, allocated_cost_usd="0.1"))
    (fast,), _ = INGEST.parse_record(raw)
    slow = INGEST.price(INGEST.validate(INGEST.decode(raw)[0]))
    assert fast.event == slow.event and fast.cost_nanos == slow.cost_nanos


def test_fast_path_ts_is_the_events_timestamp() -> None:
    """PricedEvent.ts (computed once for check, pricebook and engine) is event.ts.timestamp()."""
    for ts in ("2026-05-01T11:59:00.123456Z", "2026-05-01T13:59:00.5+02:00", "2026-05-01T11:59:00+00:00"):
        (ev,), _ = parse(good(ts=ts))
        assert ev.ts == ev.event.ts.timestamp() and ev.ts == INGEST.price(ev.event).ts


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(sorted(CostEvent.model_fields) + ["x"])
PLAUSIBLE = st.sampled_from(["2026-05-01T00:00:00Z", "openai", "gpt-4o", "low"])
EVENTISH = st.dictionaries(FIELDS, JSONISH | PLAUSIBLE)


def check_outcome(result: tuple[list[Any], list[Rejection]]) -> None:
    events, rejections = result
    assert all(isinstance(r, Rejection) for r in rejections)
    assert all(isinstance(e.cost_nanos, int) for e in events)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    """Any bytes give events or rejections, never an exception."""
    check_outcome(INGEST.parse_record(raw, now=NOW))


@settings(max_examples=300, deadline=None)
@given(st.one_of(EVENTISH, st.lists(EVENTISH, max_size=3)))
def test_arbitrary_dicts_never_raise(obj: Any) -> None:
    """Arbitrary JSON-ish objects, dumped or handed over as dicts, never raise."""
    try:
        raw = orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        raw = b"{"
    check_outcome(INGEST.parse_record(raw, now=NOW))
    for item in obj if isinstance(obj, list) else [obj]:
        try:
            INGEST.price(INGEST.validate(item, now=NOW))
        except RejectedEvent:
            pass
