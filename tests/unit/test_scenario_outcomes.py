"""Issue 9's generator parts: outcome records, traced copies, quality regressions and silent
gateways; deterministic for a seed, off by default, each incident only in its scope and window."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spendwarden.exceptions import ConfigError
from spendwarden.replay.incidents import Window
from spendwarden.replay.scenario import TenantProfile, generate

START = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
TENANT = TenantProfile("acme", "UTC", 900, [("support_chat", "low", ["classify", "answer"]),
                                          ("drafting", "medium", ["plan", "draft"])], "cc-1", "ops", fail_rate=0.04)


def run(hours: float = 6, **kwargs: Any) -> list[dict[str, Any]]:
    return list(generate(start=START, hours=hours, tenants=[TENANT], seed=5, **kwargs))


def test_off_by_default_and_the_options_leave_the_cost_events_alone() -> None:
    plain = run()
    assert not any("record_type" in e or "origin" in e for e in plain)
    both = run(outcomes=True, traced=[("acme", "drafting")])
    reported = [e for e in both if "record_type" not in e and "origin" not in e]
    assert reported == plain


def test_deterministic_for_a_seed() -> None:
    assert run(outcomes=True, traced=[("acme", "drafting")]) == run(outcomes=True, traced=[("acme", "drafting")])


def test_every_trace_ends_in_one_outcome_after_its_last_call() -> None:
    records = run(outcomes=True)
    outcomes = [r for r in records if r.get("record_type") == "outcome"]
    last: dict[str, str] = {}
    for r in records:
        if "record_type" not in r:
            last[r["trace_id"]] = max(last.get(r["trace_id"], ""), r["ts"])
    assert len(outcomes) == len({o["trace_id"] for o in outcomes}) > 100
    # traces whose outcome falls past the end have none; every outcome joins a trace, after it
    assert all(o["trace_id"] in last and o["ts"] > last[o["trace_id"]] for o in outcomes)
    assert len(outcomes) >= 0.95 * len(last)
    kinds = Counter(o["outcome"] for o in outcomes)
    assert (kinds["resolved"] + kinds["accepted"]) / len(outcomes) > 0.55
    assert kinds["human_rejected"] / len(outcomes) < 0.12
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)


def test_traced_copies_share_the_id_and_only_on_traced_use_cases() -> None:
    records = run(traced=[("acme", "drafting")])
    copies = [r for r in records if r.get("origin") == "trace"]
    originals = {r["cost_event_id"]: r for r in records if "origin" not in r}
    assert copies and all(c["use_case_id"] == "drafting" for c in copies)
    assert all({**originals[c["cost_event_id"]], "origin": "trace"} == c for c in copies)
    assert len(copies) == sum(1 for r in originals.values() if r["use_case_id"] == "drafting")


def window(kind: str, hours: tuple[float, float], use_case: str = "drafting") -> Window:
    return Window(kind=kind, tenant_id="acme", use_case_id=use_case, start=START + timedelta(hours=hours[0]),
                  end=START + timedelta(hours=hours[1]))


def in_window(r: dict[str, Any], w: Window) -> bool:
    ts = datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
    return r["use_case_id"] == w.use_case_id and w.start <= ts < w.end


def test_a_silent_gateway_drops_only_the_reported_copies_of_its_scope_and_window() -> None:
    w = window("gateway-silent", (2, 4))
    normal = run(traced=[("acme", "drafting")])
    silent = run(traced=[("acme", "drafting")], incidents=[w])
    assert [r for r in normal if not in_window(r, w)] == [r for r in silent if not in_window(r, w)]
    inside = [r for r in silent if in_window(r, w)]
    assert inside and all(r["origin"] == "trace" for r in inside)
    assert inside == [r for r in normal if in_window(r, w) and r.get("origin") == "trace"]
    with pytest.raises(ConfigError, match="not traced"):
        run(incidents=[w])


def test_a_quality_regression_cheapens_calls_and_triples_human_rejections_in_its_scope_only() -> None:
    w = window("quality-regression", (0, 24), use_case="support_chat")
    normal = run(hours=24, outcomes=True)
    bad = run(hours=24, outcomes=True, incidents=[w])
    assert [r for r in normal if not in_window(r, w)] == [r for r in bad if not in_window(r, w)]

    def figures(records: list[dict[str, Any]]) -> tuple[float, float]:
        calls = [r for r in records if in_window(r, w) and "record_type" not in r]
        cost = sum(float(r.get("allocated_cost_usd") or 0) for r in calls if "allocated_cost_usd" in r)
        priced = sum(1 for r in calls if "allocated_cost_usd" in r)
        outs = [r for r in records if in_window(r, w) and r.get("record_type") == "outcome"]
        return cost / priced, sum(o["outcome"] == "human_rejected" for o in outs) / len(outs)

    (cost0, rej0), (cost1, rej1) = figures(normal), figures(bad)
    assert 0.6 < cost1 / cost0 < 0.8
    assert 2.0 < rej1 / rej0 < 4.5
    with pytest.raises(ConfigError, match="no outcomes"):
        run(incidents=[w])
