"""replay(): the simulated clock, rejections, counters, the summary table and determinism."""

from __future__ import annotations

import re
from datetime import datetime
from importlib.resources import files
from typing import Any

import orjson

from spendwarden.replay.readers import open_events
from spendwarden.replay.run import ListSink, ReplayResult, replay, summary_table
from spendwarden.rules.compiler import RuleSet
from spendwarden.rules.loader import load_ruleset
from spendwarden.streams.effects import AlertResolved, DecisionChanged
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

RULES = """
tenants:
  acme: {timezone: America/New_York}
budgets:
  - name: uc-daily
    period: day
    for_each: [tenant_id, use_case_id]
    limit_usd: 10
rules:
  - name: daily-cap
    budget: uc-daily
    when: budget.used_ratio >= 1.0
    decide: {level: block, only_risk_tiers: [low]}
"""
NY_MIDNIGHT = "2026-11-25T05:00:00.000Z"  # 2026-11-25 00:00 in America/New_York (EST)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def event(event_id: str, ts: str, cost: str, use_case: str = "cs") -> dict[str, Any]:
    return {"cost_event_id": event_id, "ts": ts, "tenant_id": "acme", "use_case_id": use_case,
            "risk_tier": "low", "allocated_cost_usd": cost}


def as_lines(records: list[Any]) -> list[tuple[int, bytes]]:
    """Records as a JSONL reader yields them: (1-based line, raw bytes)."""
    return [(n, r if isinstance(r, bytes) else orjson.dumps(r)) for n, r in enumerate(records, 1)]


def run(ruleset: RuleSet, records: list[Any], **kwargs: Any) -> tuple[ReplayResult, ListSink]:
    sink = ListSink()
    result = replay(as_lines(records), ruleset, Ingest(Pricebook.default()), sink, **kwargs)
    return result, sink


def lifts(sink: ListSink) -> list[DecisionChanged]:
    return [e for e in sink.effects if isinstance(e, DecisionChanged) and e.verdict is None]


def test_ticks_lift_a_day_block_at_local_midnight_across_a_gap_in_traffic(rules_dir: Any) -> None:
    """The block lifts at the tenant's midnight tick, not when the next event arrives hours later."""
    ruleset = rules_dir(RULES)
    result, sink = run(ruleset, [
        event("e1", "2026-11-24T20:00:00Z", "11"),      # 15:00 in New York: over the $10 day
        event("e2", "2026-11-25T14:00:00Z", "1"),       # nine hours after New York midnight
    ])
    blocks = [e for e in sink.effects if isinstance(e, DecisionChanged) and e.verdict is not None]
    assert [(e.field, e.verdict["level"], e.at) for e in blocks] == [("cs:low", "block", "2026-11-24T20:00:00.000Z")]
    assert blocks[0].verdict["expires_at"] == NY_MIDNIGHT
    assert [(e.tenant_id, e.field, e.at) for e in lifts(sink)] == [("acme", "cs:low", NY_MIDNIGHT)]
    resolved = [e for e in sink.effects if isinstance(e, AlertResolved)]
    assert [(e.rule, e.reason, e.at) for e in resolved] == [("daily-cap", "period ended", NY_MIDNIGHT)]
    assert result.effects == {"decision": 2, "alert_firing": 1, "alert_resolved": 1}


def test_without_ticks_in_the_gap_the_lift_would_wait_for_the_next_event(rules_dir: Any) -> None:
    """With one-day ticks the lift waits for the next event: the ticks in the gap are what lift it on time."""
    ruleset = rules_dir(RULES)
    _, sink = run(ruleset, [
        event("e1", "2026-11-24T20:00:00Z", "11"),
        event("e2", "2026-11-25T14:00:00Z", "1"),
    ], tick_s=86400.0)
    assert [e.at for e in lifts(sink)] == ["2026-11-25T14:00:00.000Z"]  # e2's time, not midnight


def test_advance_to_runs_the_clock_past_the_last_event(rules_dir: Any) -> None:
    """advance_to ticks on after the last event, so the block lifts at midnight with no more traffic."""
    ruleset = rules_dir(RULES)
    records = [event("e1", "2026-11-24T20:00:00Z", "11")]

    _, sink = run(ruleset, records)
    assert lifts(sink) == []  # the clock stops at the last event

    _, sink = run(ruleset, records, advance_to=epoch("2026-11-25T04:59:00Z"))
    assert lifts(sink) == []  # one minute before midnight: still blocked

    _, sink = run(ruleset, records, advance_to=epoch("2026-11-25T06:00:00Z"))
    assert [(e.field, e.at) for e in lifts(sink)] == [("cs:low", NY_MIDNIGHT)]


def test_rejected_records_reach_the_sink_with_their_line(rules_dir: Any) -> None:
    """Undecodable and invalid records go to sink.rejected with their line; the replay goes on."""
    ruleset = rules_dir(RULES)
    missing_tenant = {"cost_event_id": "e9", "ts": "2026-11-24T15:00:00Z", "allocated_cost_usd": "1"}
    result, sink = run(ruleset, [
        event("e1", "2026-11-24T15:00:00Z", "1"),
        event("e2", "2026-11-24T15:01:00Z", "1"),
        b"{not json",
        event("e3", "2026-11-24T15:02:00Z", "1"),
        missing_tenant,
    ])
    assert [(line, r.reason, r.field) for line, r in sink.rejections] == [
        (3, "decode", None), (5, "invalid", "tenant_id")]
    assert "tenant_id" in sink.rejections[1][1].detail
    assert result.rejected == {"decode": 1, "invalid": 1}
    assert (result.records, result.events) == (5, 3)


def test_events_with_effects_counts_events_not_effects_or_ticks(rules_dir: Any) -> None:
    """Only events whose own processing produced effects count; tick effects do not."""
    ruleset = rules_dir(RULES)
    result, _ = run(ruleset, [
        event("e1", "2026-11-24T15:00:00Z", "4"),
        event("e2", "2026-11-24T15:01:00Z", "4"),
        event("e3", "2026-11-24T15:02:00Z", "3"),   # fires: alert + block (2 effects, 1 event)
        event("e4", "2026-11-25T14:00:00Z", "1"),   # after the midnight tick lifted the block
        event("e5", "2026-11-25T14:01:00Z", "12"),  # fires again on the new day
    ])
    assert result.events == 5
    assert result.events_with_effects == 2
    assert result.effects == {"decision": 3, "alert_firing": 2, "alert_resolved": 1}


def test_summary_table_lists_the_largest_counters(rules_dir: Any) -> None:
    """The summary shows counts and the ten largest budget counters, largest first."""
    ruleset = rules_dir(RULES.replace("limit_usd: 10", "limit_usd: 1000"))
    records = [event(f"e{i}", f"2026-11-24T15:{i:02d}:00Z", str(i), use_case=f"uc{i:02d}") for i in range(1, 13)]
    result, _ = run(ruleset, [*records, b"[1]"])
    table = summary_table(result)
    assert re.search(r"^records read\s+13$", table, re.M)
    assert re.search(r"^events counted\s+12$", table, re.M)
    assert re.search(r"^rejected\s+1\s+\{'invalid': 1\}$", table, re.M)
    counters = re.findall(r"^uc-daily\s+acme/(uc\d+)\s+2026-11-24\s+\$([\d.]+)$", table, re.M)
    assert counters == [(f"uc{i:02d}", f"{i}.00") for i in range(12, 2, -1)]


def test_replaying_the_same_file_twice_gives_identical_effects() -> None:
    """Determinism: two replays of the demo day produce the same effects, field for field."""
    data = files("spendwarden.replay") / "data"
    ruleset = load_ruleset(str(data / "demo-rules"))
    runs = []
    for _ in range(2):
        sink = ListSink()
        result = replay(open_events(str(data / "demo.jsonl")), ruleset, Ingest(Pricebook.default()), sink,
                        advance_to=epoch("2026-11-25T06:00:00Z"))
        runs.append(([e.to_dict() for e in sink.effects], result.to_dict(), result.engine.totals()))
    (effects_a, summary_a, totals_a), (effects_b, summary_b, totals_b) = runs
    assert effects_a == effects_b
    assert any(e["kind"] == "alert_firing" for e in effects_a)
    assert {k: v for k, v in summary_a.items() if k not in ("elapsed_s", "events_per_s")} == \
        {k: v for k, v in summary_b.items() if k not in ("elapsed_s", "events_per_s")}
    assert totals_a == totals_b
