"""replay() feeds lines marked ``"record_type": "outcome"`` to Engine.process_outcome in file
order; a bad one is rejected with a reason, never a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from spendwarden.replay.run import ListSink, replay
from spendwarden.rules.loader import load_ruleset
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

RULES = """
tenants:
  acme: {timezone: UTC}
budgets:
  - name: uc
    period: day
    for_each: [tenant_id, use_case_id]
    limit_usd: 1000000
rules:
  - name: outcomes-seen
    budget: uc
    when: unit.day.outcomes >= 2
"""


def rules(tmp_path: Path) -> Any:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load_ruleset(path)


def event(event_id: str, ts: str, trace: str, cost: str = "1.00") -> dict[str, Any]:
    return {"cost_event_id": event_id, "trace_id": trace, "ts": ts, "tenant_id": "acme",
            "use_case_id": "cs", "risk_tier": "low", "allocated_cost_usd": cost}


def outcome(oid: str, ts: str, trace: str, kind: str = "resolved") -> dict[str, Any]:
    return {"record_type": "outcome", "business_outcome_id": oid, "trace_id": trace, "ts": ts,
            "tenant_id": "acme", "use_case_id": "cs", "outcome": kind}


def test_outcome_lines_reach_the_engine_and_join_their_traces(tmp_path: Path) -> None:
    ruleset = rules(tmp_path)
    records = [event("e1", "2026-11-25T10:00:00Z", "t1"), event("e2", "2026-11-25T10:01:00Z", "t1"),
               outcome("o1", "2026-11-25T10:05:00Z", "t1"),
               event("e3", "2026-11-25T10:06:00Z", "t2", "3.00"),
               outcome("o2", "2026-11-25T10:09:00Z", "t2", "human_rejected"),
               event("e4", "2026-11-25T10:30:00Z", "t3")]
    sink = ListSink()
    lines = [(n, orjson.dumps(r)) for n, r in enumerate(records, 1)]
    result = replay(lines, ruleset, Ingest(Pricebook.default()), sink)
    assert result.outcomes == 2 and result.events == 4 and not result.rejected
    figures = result.engine.unit_figures("uc", {"tenant_id": "acme", "use_case_id": "cs"})
    day = figures["day"]
    assert day["outcomes"] == 2 and day["human_rejected"] == 1
    assert abs(day["cost_per_outcome_usd"] - 2.5) < 1e-9  # (1 + 1 + 3) / 2
    assert any(e.kind == "alert_firing" for e in sink.effects)
    assert result.to_dict()["outcomes"] == 2


def test_a_bad_outcome_is_rejected_with_a_reason(tmp_path: Path) -> None:
    ruleset = rules(tmp_path)
    bad = outcome("o1", "2026-11-25T10:05:00Z", "t1", kind="maybe")
    records = [orjson.dumps(event("e1", "2026-11-25T10:00:00Z", "t1")), orjson.dumps(bad),
               b'{"record_type": "outcome", "tenant_id": "acme"}', b'{"record_type": "outcome", oops']
    sink = ListSink()
    result = replay(list(enumerate(records, 1)), ruleset, Ingest(Pricebook.default()), sink)
    assert result.outcomes == 0 and result.events == 1
    assert [where for where, _ in sink.rejections] == [2, 3, 4]
    assert sink.rejections[0][1].reason == "invalid" and sink.rejections[0][1].field == "outcome"
    assert sink.rejections[2][1].reason == "decode"  # not JSON: ingest's own reason


def test_rows_already_decoded_are_read_too(tmp_path: Path) -> None:
    """CSV and Parquet rows arrive as dicts: a marked row is an outcome, the rest cost events."""
    rows = [event("e1", "2026-11-25T10:00:00Z", "t1"), outcome("o1", "2026-11-25T10:05:00Z", "t1"),
            outcome("o2", "2026-11-25T10:06:00Z", "t1", kind="maybe")]
    sink = ListSink()
    result = replay(list(enumerate(rows, 1)), rules(tmp_path), Ingest(Pricebook.default()), sink)
    assert (result.events, result.outcomes) == (1, 1)
    assert [(where, r.reason) for where, r in sink.rejections] == [(3, "invalid")]


def test_an_array_line_of_outcomes_as_the_bridge_writes_it(tmp_path: Path) -> None:
    """`replay kafka://` reads the cost topic, where the outcome bridge writes arrays of outcomes."""
    line = orjson.dumps([outcome("o1", "2026-11-25T10:05:00Z", "t1"), outcome("o2", "2026-11-25T10:06:00Z", "t1")])
    records = [orjson.dumps(event("e1", "2026-11-25T10:00:00Z", "t1")), line, line]
    engine_result = replay(list(enumerate(records, 1)), rules(tmp_path), Ingest(Pricebook.default()), ListSink())
    assert engine_result.outcomes == 4  # taken in; the copies in the third line count once in unit.*
