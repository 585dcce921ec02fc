"""Scenario generator: seeded, ordered, valid traffic; a runaway incident; the packaged demo."""

from __future__ import annotations

import io
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path

import orjson
import pytest

from spendwarden.replay import scenario
from spendwarden.replay.bench_stream import bench_events
from spendwarden.replay.scenario import Incident, demo_incident, demo_tenants, generate
from spendwarden.streams.events import CostEvent

START = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
DEMO = Path(scenario.__file__).parent / "data" / "demo.jsonl"


def _day(seed: int = 7, hours: float = 6, incidents: list[Incident] | None = None) -> list[dict]:
    return list(generate(start=START, hours=hours, tenants=demo_tenants(), seed=seed, incidents=incidents or []))


def test_same_seed_gives_the_same_events_and_another_seed_differs() -> None:
    """A seed reproduces the traffic exactly; a different seed gives different traffic."""
    assert _day(seed=3, hours=2) == _day(seed=3, hours=2)
    assert _day(seed=3, hours=2) != _day(seed=4, hours=2)


def test_events_are_in_timestamp_order_inside_the_window() -> None:
    """Events come out sorted by ts, all within [start, start + hours)."""
    events = _day(hours=3)
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)
    assert stamps[0] >= "2026-11-24T05:00:00.000Z" and stamps[-1] < "2026-11-24T08:00:00.000Z"


def test_every_event_validates_and_has_unique_ids() -> None:
    """Every generated event (incident included) is a valid CostEvent with a unique id."""
    events = _day(hours=24, incidents=[demo_incident()])
    parsed = [CostEvent.model_validate(orjson.loads(orjson.dumps(e))) for e in events]
    assert len({e.cost_event_id for e in parsed}) == len(parsed)
    assert all(e.cached_tokens <= e.input_tokens for e in parsed)
    models = [e for e in parsed if e.component == "model_call"]
    priced = sum(e.allocated_cost_usd is not None for e in models) / len(models)
    assert 0.4 < priced < 0.6
    traces = Counter(e.trace_id for e in parsed if "-loop" not in e.cost_event_id)
    assert max(traces.values()) <= 6


def test_allocated_cost_matches_the_list_prices() -> None:
    """A gateway-priced model call costs (input - cached) x in + cached x cached + output x out."""
    event = next(e for e in _day(hours=1) if e["model_or_service"] == "gpt-4o" and "allocated_cost_usd" in e)
    cost = Decimal(orjson.dumps(event["allocated_cost_usd"]).decode())
    expected = (
        (event["input_tokens"] - event["cached_tokens"]) * Decimal("2.50")
        + event["cached_tokens"] * Decimal("1.25")
        + event["output_tokens"] * Decimal("10.00")
    ) / 1_000_000
    assert cost == expected


def test_runaway_multiplies_the_use_case_in_its_window() -> None:
    """acme/drafting's calls in the incident window are about 12x those of the same window without it."""
    incident = demo_incident()
    end = incident.start + timedelta(minutes=incident.duration_minutes)
    lo, hi = (t.strftime("%Y-%m-%dT%H:%M:%S") for t in (incident.start, end))

    def count(events: list[dict]) -> int:
        return sum(
            e["tenant_id"] == "acme" and e["use_case_id"] == "drafting" and lo <= e["ts"] < hi for e in events
        )

    base, hit = count(_day(hours=24)), count(_day(hours=24, incidents=[incident]))
    assert base > 100
    assert 0.75 * incident.multiplier < hit / base < 1.25 * incident.multiplier
    loops = Counter(e["trace_id"] for e in _day(hours=24, incidents=[incident]) if e["workflow_step"] == "plan"
                    and "-loop" in e["trace_id"])
    assert max(loops.values()) > 500


def test_incident_leaves_normal_traffic_unchanged() -> None:
    """Adding an incident only adds events: the normal ones are identical."""
    normal = _day(hours=24)
    with_incident = [e for e in _day(hours=24, incidents=[demo_incident()]) if "-loop" not in e["cost_event_id"]]
    assert with_incident == normal


def test_demo_file_matches_main(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """replay/data/demo.jsonl is exactly what `python -m spendwarden.replay.scenario --demo` writes."""
    out = tmp_path / "demo.jsonl"
    with out.open("wb") as fh:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(fh))
        assert scenario.main(["--demo"]) == 0
        sys.stdout.flush()
    assert out.read_bytes() == DEMO.read_bytes()
    count = int(capsys.readouterr().err.split()[0])
    assert 15_000 <= count <= 40_000 and DEMO.stat().st_size < 12_000_000


def test_bench_events_yields_n_valid_lines() -> None:
    """bench_events gives exactly n valid JSON events with increasing ts and Zipf-ish tenants."""
    lines = list(bench_events(5000))
    assert len(lines) == 5000
    events = [CostEvent.model_validate_json(line) for line in lines]
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert len({e.cost_event_id for e in events}) == 5000
    assert all(e.allocated_cost_usd is not None for e in events)
    assert all((e.environment == "sandbox") == e.tenant_id.startswith("t09") for e in events)
    tenants = Counter(e.tenant_id for e in events)
    assert tenants.most_common(1)[0][1] > 10 * 5000 / 1000
    assert {e.risk_tier for e in events if e.use_case_id == "uc9"} == {"high"}
    assert list(islice(bench_events(10, seed=2), 3)) == list(bench_events(10, seed=2))[:3]
