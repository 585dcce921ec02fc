"""unit.* in the engine: outcomes joined to their traces' cost, exact figures from a mixed stream
of real OpenTelemetry SDK spans, gateway events and outcomes; idempotence, order, the wait, the
windows, repeats, pruning, and what the rule loader refuses."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from spendwarden.exceptions import RuleFileError
from spendwarden.replay.showback import ReportPeriod, Showback
from spendwarden.streams.checkpoint import DirtyState, checkpoint_order
from spendwarden.streams.engine import Engine, position
from spendwarden.streams.events import Outcome
from spendwarden.streams.unit import KEEP_HOURS, rejection_z
from test_otlp_spans import INGEST, PRICEBOOK, Recorder, convert

RULES = """
budgets:
  - {name: uc, for_each: [tenant_id, use_case_id], period: day, limit_usd: 1000}
rules:
  - {name: watch, budget: uc, when: "unit.day.outcomes >= 1000.0", severity: low}
"""
SCOPE = {"tenant_id": "acme", "use_case_id": "support"}


def _event(event_id: str, ts: str, cost: str | None = None, trace: str | None = None, **fields: Any) -> dict[str, Any]:
    obj = {"cost_event_id": event_id, "ts": ts, "tenant_id": "acme", "use_case_id": "support",
           "risk_tier": "low", "model_or_service": "gpt-4o", "provider": "openai", **fields}
    if cost is not None:
        obj["allocated_cost_usd"] = cost
    if trace is not None:
        obj["trace_id"] = trace
    return obj


def _outcome(outcome_id: str, ts: str, kind: str, trace: str | None = None) -> dict[str, Any]:
    obj = {"record_type": "outcome", "business_outcome_id": outcome_id, "ts": ts, "tenant_id": "acme",
           "use_case_id": "support", "outcome": kind}
    if trace is not None:
        obj["trace_id"] = trace
    return obj


def _feed(engine: Engine, records: list[dict[str, Any]], start: int = 1) -> list[Any]:
    """Every record at its own position; the effects."""
    effects = []
    for offset, obj in enumerate(records, start=start):
        if obj.get("record_type") == "outcome":
            effects += engine.process_outcome(Outcome.model_validate(obj), position(offset))
        else:
            effects += engine.process(INGEST.price(INGEST.validate(obj)), position(offset))
    return effects


# ------------------------------------------------------------------ a mixed stream, exactly

def _spans() -> tuple[list[dict[str, Any]], Recorder]:
    """Trace A: a chat (gpt-4o 1000 in, 400 of them cached, 200 out: $0.004) and a priced web
    search ($0.005); trace B: a chat (claude-haiku-4 2000 in, 300 out: $0.0028)."""
    rec = Recorder()
    app = rec.tracer(**{"service.name": "support-bot", "spendwarden.tenant_id": "acme",
                        "spendwarden.use_case_id": "support", "spendwarden.risk_tier": "low"})
    with rec.span(app, "agent-a", 0, 5000, **{"gen_ai.operation.name": "invoke_agent"}):
        with rec.span(app, "chat-a", 100, 1600, **{
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 200, "gen_ai.usage.cache_read.input_tokens": 400}):
            pass
        with rec.span(app, "tool-a", 1700, 2200, **{"gen_ai.operation.name": "execute_tool",
                                                    "gen_ai.tool.name": "web-search"}):
            pass
    with rec.span(app, "chat-b", 6000, 7250, **{
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
            "gen_ai.response.model": "claude-haiku-4", "gen_ai.usage.input_tokens": 2000,
            "gen_ai.usage.output_tokens": 300}):
        pass
    by_tenant, rejections = convert(rec, pricebook=PRICEBOOK)
    assert not rejections and list(by_tenant) == ["acme"]
    return by_tenant["acme"], rec


def _mixed_stream() -> list[dict[str, Any]]:
    spans, rec = _spans()
    trace_a, trace_b = rec.trace_id("chat-a"), rec.trace_id("chat-b")
    gateway_copy = _event(rec.span_id("chat-a"), "2026-05-01T12:00:01.600Z", "0.004", trace_a)
    return [
        _outcome("case-b", "2026-05-01T12:00:03Z", "human_rejected", trace_b),  # before its trace's events
        *spans,
        gateway_copy,  # the gateway reports chat-a too: counted once, seen twice
        _event("gw-c", "2026-05-01T12:00:08Z", "0.010", "trace-c", input_tokens=0),
        _outcome("case-a", "2026-05-01T12:00:09Z", "resolved", trace_a),
        _outcome("case-a", "2026-05-01T12:00:09Z", "resolved", trace_a),  # a producer duplicate
        _outcome("case-c", "2026-05-01T12:00:10Z", "accepted", "trace-c"),
        _outcome("case-d", "2026-05-01T12:00:11Z", "resolved", "trace-d"),  # no event: joins nothing
    ]


def test_spans_gateway_events_and_outcomes_give_exact_unit_figures(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    _feed(engine, _mixed_stream())
    day = engine.unit_figures("uc", SCOPE)["day"]
    spend = 4_000_000 + 5_000_000 + 2_800_000 + 10_000_000  # nano-dollars
    assert engine.totals() == {("uc", ("acme", "support"), "2026-05-01"): spend}
    assert day["spend_usd"] == spend / 1e9 and day["calls"] == 4
    assert (day["outcomes"], day["resolved"], day["accepted"], day["human_rejected"]) == (3, 1, 1, 1)
    assert day["cost_per_outcome_usd"] == spend / 3 / 1e9  # every event's trace has an outcome
    assert day["cost_per_resolved_case_usd"] == 9_000_000 / 1 / 1e9  # trace A: chat + search
    assert day["human_rejection_rate"] == day["rejection_rate"] == day["resolution_rate"] == 1 / 3
    assert (day["trace_calls"], day["reported_calls"]) == (3, 2)  # the gateway copy of chat-a is a sighting
    assert day["input_tokens_per_call"] == 3000 / 4 and day["cache_hit_ratio"] == 400 / 3000
    assert day["route_mix"] == {"gpt-4o": round(14 / 21.8, 4), "web-search": round(5 / 21.8, 4),
                                "claude-haiku-4": round(2.8 / 21.8, 4)}
    assert engine.stats.outcomes == 4 and engine.stats.outcome_duplicates == 1 and engine.stats.duplicates == 1


def test_showback_of_the_same_stream_agrees(ruleset_from_yaml: Any) -> None:
    """The report and the live figures define cost per outcome alike (replay/showback.py)."""
    showback = Showback(ReportPeriod.parse("2026-05-01"))
    for obj in _mixed_stream():
        if obj.get("record_type") == "outcome":
            showback.add_outcome(Outcome.model_validate(obj))
        else:
            showback.add_event(INGEST.price(INGEST.validate(obj)))
    total = showback.total()
    assert total.spend_nanos == 21_800_000 and total.outcomes == 3
    assert total.cost_per_outcome_nanos == 7_266_667  # 21.8 M / 3, half-even
    assert total.cost_per_resolved_nanos == 9_000_000


# ------------------------------------------------------------------ exactly once, any order

def test_redelivery_and_a_restart_on_the_same_state_change_nothing(ruleset_from_yaml: Any) -> None:
    rules = ruleset_from_yaml(RULES)
    stream = _mixed_stream()
    engine = Engine(rules)
    _feed(engine, stream)
    once = engine.unit_figures("uc", SCOPE)
    _feed(engine, stream)  # the same positions again
    assert engine.unit_figures("uc", SCOPE) == once
    restarted = Engine(rules, copy.deepcopy(engine.state))
    _feed(restarted, stream[3:])
    assert restarted.unit_figures("uc", SCOPE) == once


@pytest.mark.parametrize("outcome_first", [True, False])
def test_an_outcome_joins_events_before_and_after_it(ruleset_from_yaml: Any, outcome_first: bool) -> None:
    events = [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1"), _event("e2", "2026-05-01T12:05:00Z", "0.10", "t1")]
    outcome = _outcome("o1", "2026-05-01T12:03:00Z", "resolved", "t1")
    engine = Engine(ruleset_from_yaml(RULES))
    _feed(engine, [outcome, *events] if outcome_first else [events[0], outcome, events[1]])
    day = engine.unit_figures("uc", SCOPE)["day"]
    assert (day["outcomes"], day["cost_per_resolved_case_usd"]) == (1, 0.4)


def test_an_outcome_later_than_the_wait_joins_nothing(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES + "unit: {outcome_wait_minutes: 60}\n"))
    _feed(engine, [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1"),
                   _event("e2", "2026-05-01T14:00:00Z", "0.10", "t2")])
    engine.advance(engine.frontier("acme") + 3600)  # an hourly upkeep drops quiet traces
    _feed(engine, [_outcome("o1", "2026-05-01T14:10:00Z", "resolved", "t1")], start=10)
    day = engine.unit_figures("uc", SCOPE)["day"]
    assert day["outcomes"] == 0 and day["cost_per_outcome_usd"] == 0.0
    assert engine._unit.stats["held"] == 1  # held for events of t1 that will not come


def test_the_wait_runs_in_the_tenants_event_time_not_the_clock_of_ticks(ruleset_from_yaml: Any) -> None:
    """A worker catching up on a backlog ticks at wall time, far ahead of the events it reads:
    the traces it has not seen outcomes for yet must stay."""
    engine = Engine(ruleset_from_yaml(RULES + "unit: {outcome_wait_minutes: 60}\n"))
    _feed(engine, [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1")])
    engine.advance(engine.frontier("acme") + 6.5 * 3600)  # a tick hours ahead of the events read
    _feed(engine, [_outcome("o1", "2026-05-01T12:03:00Z", "resolved", "t1")], start=10)
    assert engine.unit_figures("uc", SCOPE, engine.frontier("acme") - 6 * 3600)["day"]["outcomes"] == 1


def test_an_outcome_evaluates_the_rules_it_can_turn_true(ruleset_from_yaml: Any) -> None:
    """The rule's guard (`unit.day.outcomes >= 2.0`) is met by the second outcome, with no event after it."""
    engine = Engine(ruleset_from_yaml(RULES.replace("1000.0", "2.0")))
    assert _feed(engine, [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1"),
                          _event("e2", "2026-05-01T12:01:00Z", "0.30", "t2"),
                          _outcome("o1", "2026-05-01T12:02:00Z", "resolved", "t1")]) == []
    fired = engine.process_outcome(Outcome.model_validate(_outcome("o2", "2026-05-01T12:03:00Z", "accepted", "t2")),
                                   position(9))
    assert [effect.rule for effect in fired] == ["watch"]


def test_unit_rules_are_evaluated_once_a_minute_and_the_tick_catches_up(ruleset_from_yaml: Any) -> None:
    """Budgets whose rules read only unit.* and the clock are evaluated at most once per engine
    minute; a change later in the minute is seen by the next minute's tick, without traffic."""
    rules = ruleset_from_yaml(RULES.replace("1000.0", "2.0"))
    engine, caught_up = Engine(rules), Engine(rules)
    records = [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1"), _event("e2", "2026-05-01T12:00:10Z", "0.30", "t2"),
               _outcome("o1", "2026-05-01T12:00:20Z", "resolved", "t1"),
               _outcome("o2", "2026-05-01T12:00:30Z", "accepted", "t2")]
    assert _feed(engine, records) == [] and _feed(caught_up, records) == []
    assert engine.stats.cel_evaluations == 0  # guards only, once
    assert [e.rule for e in engine.advance(engine.frontier("acme") + 31)] == ["watch"]  # 12:01:01
    # A replay or a rule test whose input ends here has no next tick: catch_up does its work.
    assert [e.rule for e in caught_up.catch_up()] == ["watch"] and caught_up.catch_up() == []


def test_a_replay_ending_in_a_busy_minute_still_fires(ruleset_from_yaml: Any) -> None:
    from spendwarden.replay.run import ListSink, replay

    records = [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1"), _event("e2", "2026-05-01T12:00:10Z", "0.30", "t2"),
               _outcome("o1", "2026-05-01T12:00:20Z", "resolved", "t1"),
               _outcome("o2", "2026-05-01T12:00:30Z", "accepted", "t2")]
    sink = ListSink()
    replay(list(enumerate((orjson.dumps(r) for r in records), 1)), ruleset_from_yaml(RULES.replace("1000.0", "2.0")),
           INGEST, sink)
    assert [e.rule for e in sink.effects if e.kind == "alert_firing"] == ["watch"]


def test_a_trace_record_stays_small_whatever_arrives(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    records = [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1")]
    records += [_event(f"s{i}", "2026-05-01T12:00:01Z", "0.01", "t1", workflow_step=f"step-{i}") for i in range(200)]
    records += [_outcome("x" * 190 + str(i), "2026-05-01T12:01:00Z", "rejected", "t1") for i in range(500)]
    records += [_outcome("late-resolution", "2026-05-01T12:02:00Z", "resolved", "t1")]
    _feed(engine, records)
    (record,) = [v for k, v in engine.state.items() if k[0] == "utrace"]
    assert len(orjson.dumps(record)) < 20_000
    day = engine.unit_figures("uc", SCOPE)["day"]
    assert day["outcomes"] == 501 and day["resolved"] == 1  # counted all the same
    assert day["cost_per_resolved_case_usd"] == pytest.approx(2.30)


def test_a_crash_part_way_through_a_checkpoint_loses_nothing(ruleset_from_yaml: Any) -> None:
    """The service writes a checkpoint's changed keys in checkpoint_order; a crash may land any
    prefix of them. Restarting from that state and re-reading the batch gives the same figures."""
    rules = ruleset_from_yaml(RULES + "unit: {repeat_after: 1}\n")
    first = [_event("e1", "2026-05-01T12:00:00Z", "0.30", "t1"), _outcome("o0", "2026-05-01T12:00:30Z", "accepted", "t0")]
    batch = [_event("e2", "2026-05-01T12:01:00Z", "0.20", "t1"), _outcome("o1", "2026-05-01T12:02:00Z", "resolved", "t1"),
             _event("e3", "2026-05-01T12:03:00Z", "0.10", "t1"), _event("e4", "2026-05-01T13:04:00Z", "0.40", "t0"),
             _outcome("o2", "2026-05-01T13:05:00Z", "human_rejected", "t2"),
             _event("e5", "2026-05-01T13:06:00Z", "0.50", "t2")]
    state = DirtyState()
    engine = Engine(rules, state)
    _feed(engine, first)
    engine.sync_state()
    saved = copy.deepcopy(dict(state))
    state.take_dirty()
    _feed(engine, batch, start=len(first) + 1)
    want = engine.unit_figures("uc", SCOPE)
    changes = checkpoint_order(state.take_dirty())
    assert any(key[0] == "utrace" for key, _ in changes) and any(key[0] == "unit" for key, _ in changes)
    for cut in range(len(changes) + 1):
        landed = copy.deepcopy(saved)
        for key, value in changes[:cut]:
            if value is None:
                landed.pop(key, None)
            else:
                landed[key] = copy.deepcopy(value)
        restarted = Engine(rules, DirtyState(landed))
        _feed(restarted, batch, start=len(first) + 1)
        assert restarted.unit_figures("uc", SCOPE) == want, f"a crash after {cut} of {len(changes)} keys"


# ------------------------------------------------------------------ windows, repeats, upkeep

def test_baseline_is_a_per_day_average_of_the_seven_days_before(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    days = [f"2026-05-{d:02d}T10:00:00Z" for d in range(1, 9)]
    _feed(engine, [_event(f"e{i}", ts, "0.70") for i, ts in enumerate(days[:7])]
          + [_event("today", days[7], "2.00")])
    figures = engine.unit_figures("uc", SCOPE)
    assert figures["day"]["spend_usd"] == 2.0
    assert figures["baseline"]["spend_usd"] == pytest.approx(0.7)  # 7 x $0.70 over 7 days
    assert figures["week"]["spend_usd"] == pytest.approx(6 * 0.7 + 2.0)  # May 2-8
    assert figures["prior_week"]["spend_usd"] == pytest.approx(0.7)  # May 1 only


def test_calls_past_repeat_after_in_one_trace_are_repeats(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES + "unit: {repeat_after: 3}\n"))
    loop = [_event(f"s{i}", f"2026-05-01T12:0{i}:00Z", "0.05", "t1", workflow_step="search",
                   component="tool", model_or_service="web-search") for i in range(5)]
    other_step = _event("a", "2026-05-01T12:06:00Z", "0.50", "t1", workflow_step="answer")
    _feed(engine, [*loop, other_step])
    day = engine.unit_figures("uc", SCOPE)["day"]
    assert day["repeat_cost_usd"] == pytest.approx(0.10) and day["repeat_share"] == pytest.approx(0.1 / 0.75)


def test_buckets_older_than_every_window_are_dropped(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES))
    _feed(engine, [_event("old", "2026-05-01T12:00:00Z", "1.00", "t1")])
    assert any(key[0] == "unit" for key in engine.state)
    engine.advance(engine.frontier("acme") + (KEEP_HOURS + 1) * 3600)  # ticks alone prune nothing
    assert any(key[0] == "unit" for key in engine.state)
    later = _event("later", "2026-05-20T12:00:00Z", "1.00", tenant_id="initech")
    _feed(engine, [later], start=2)
    engine.advance(engine.frontier("initech") + 3600)
    assert not any(key[0] in ("unit", "utrace") and key[1] == "acme" for key in engine.state)


def test_a_rule_set_without_unit_keeps_no_unit_state(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml("budgets:\n  - {name: uc, for_each: [tenant_id], period: day, limit_usd: 9}\n"))
    _feed(engine, _mixed_stream())
    assert not any(key[0] in ("unit", "utrace") for key in engine.state)
    assert engine.stats.outcomes == 4  # still taken in (and deduplicated)


def test_the_alert_names_the_figures_it_fired_on(ruleset_from_yaml: Any) -> None:
    engine = Engine(ruleset_from_yaml(RULES.replace("1000.0", "3.0")))
    stream = _mixed_stream()  # all in one minute: evaluated at most once a minute, re-checked by the tick
    assert _feed(engine, stream) == []
    (alert,) = engine.advance(engine.frontier("acme") + 60)
    assert alert.unit is not None and alert.unit["day"]["outcomes"] == 3
    assert "cost per outcome $0.0073 vs $0.0000" in alert.summary and "route mix gpt-4o 64%" in alert.summary
    assert "calls seen in traces 3 vs 0, reported 2 vs 0" in alert.summary


# ------------------------------------------------------------------ what the loader refuses

@pytest.mark.parametrize(("text", "said"), [
    ("budgets:\n  - {name: all, period: day, limit_usd: 9}\nrules:\n  - {name: r, budget: all, when: 'unit.day.calls > 1.0'}\n",
     "unit.* needs a budget per tenant"),
    (RULES.replace("unit.day.outcomes", "unit.day.nope"), "unit.day.nope is not a known field"),
])
def test_the_loader_refuses_unit_rules_it_cannot_run(rules_dir: Any, text: str, said: str) -> None:
    with pytest.raises(RuleFileError, match=said) as caught:
        rules_dir(text)
    assert caught.value.line is not None


@pytest.mark.parametrize(("rejected", "outcomes", "ref", "want"), [
    (5, 27, (40, 999), 2.64),  # normal approximation: 3.8; exact: a 1-in-240 chance
    (12, 30, (21, 210), 4.13),
    (5, 25, (21, 210), 1.26),
    (0, 30, (3, 100), 0.0),  # no rejection is no sign of a rise
    (30, 1000, (50, 1000), -3.25),  # fewer than usual
    (3, 0, (3, 100), 0.0),
    (3, 30, (0, 0), 0.0),
    (1, 2500, (300, 1000), -10.0),  # far fewer than usual: the first term underflows, still negative
    (100, 50000, (2000, 50000), -10.0),
    (100, 200, (5, 1000), 10.0),  # far more: beyond what 1 - tail could say
])
def test_rejection_z_is_the_exact_binomial_chance_as_a_z_score(rejected: int, outcomes: int, ref: tuple[int, int],
                                                                want: float) -> None:
    assert rejection_z(rejected, outcomes, *ref) == pytest.approx(want, abs=0.01)


def test_rejection_z_matches_a_brute_force_binomial_tail() -> None:
    from math import comb
    from statistics import NormalDist

    p0 = (4 + 0.5) / (100 + 1)
    tail = sum(comb(40, i) * p0 ** i * (1 - p0) ** (40 - i) for i in range(7, 41))
    assert rejection_z(7, 40, 4, 100) == pytest.approx(NormalDist().inv_cdf(1 - tail), rel=1e-9)
