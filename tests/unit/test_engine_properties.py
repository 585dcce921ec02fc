"""Properties of the engine's money: exact totals under reordering, producer duplicates,
redelivery, record splitting, restarts from a checkpoint and partially flushed state.

Expected totals are computed independently: per event ``usd_to_nanos(Decimal)``, grouped by
periods computed here with zoneinfo. Positions are assigned in delivery order, over one stream
or per tenant partition, so they grow per tenant as the engine's contract requires; a
redelivery reuses its position.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendwarden.streams.effects import TooLate
from spendwarden.streams.engine import Engine, position
from spendwarden.streams.money import usd_to_nanos

RULES = """
tenants:
  defaults: {timezone: Europe/Berlin}
  ny: {timezone: America/New_York, week_start: sunday}
  kol: {timezone: Asia/Kolkata}
  lh: {timezone: Australia/Lord_Howe}
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 5}
  - {name: tenant-week, for_each: [tenant_id], period: week, limit_usd: 20}
  - {name: low-month, scope: {risk_tier: low}, for_each: [tenant_id], period: month, limit_usd: 30}
  - {name: model-day, for_each: [model_or_service], period: day, limit_usd: 40}
rules:
  - name: uc-degrade
    budget: uc-day
    when: budget.used_ratio >= 0.8
    decide: {level: L1, only_risk_tiers: [low]}
  - {name: week-late-hours, budget: tenant-week, when: 'budget.used_ratio >= 0.5 && local.hour >= 12'}
  - {name: month-block, budget: low-month, when: budget.used_ratio >= 0.9, decide: {level: block}}
  - {name: model-burst, budget: model-day, when: window.spend_usd_5m > 3}
"""
ZONES = {"ny": "America/New_York", "kol": "Asia/Kolkata", "lh": "Australia/Lord_Howe", "eu": "Europe/Berlin"}
WEEK_START = {"ny": 6}  # sunday; everyone else monday
DEFAULT_ZONE = "Europe/Berlin"

START = datetime(2026, 10, 30, tzinfo=timezone.utc)  # spans Oct→Nov and New York's DST end
SPREAD_MS = 3 * 86400 * 1000
START_MS = int(START.timestamp() * 1000)


def _boundaries() -> list[int]:
    """Local midnights of every zone inside the spread, and the millisecond before each."""
    found = []
    for name in set(ZONES.values()):
        tz = ZoneInfo(name)
        day = (START - timedelta(days=1)).astimezone(tz).date()
        for _ in range(6):
            ms = int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)
            if START_MS <= ms - 1 and ms < START_MS + SPREAD_MS:
                found += [ms - 1, ms]
            day += timedelta(days=1)
    return sorted(found)


BOUNDARIES = _boundaries()

costs = st.one_of(
    st.decimals(min_value=0, max_value=3, places=9, allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal("0.000000037"), Decimal("0.000000001"), Decimal("0.000000499"), Decimal("1.5")]),
)
stamps = st.one_of(st.integers(START_MS, START_MS + SPREAD_MS - 1), st.sampled_from(BOUNDARIES))
event_specs = st.lists(
    st.tuples(st.sampled_from(sorted(ZONES)), stamps, costs, st.sampled_from(["chat", "search", "agent"]),
              st.sampled_from(["low", "medium", "high"]), st.sampled_from(["m-small", "m-large"])),
    min_size=1, max_size=25,
)


@pytest.fixture(scope="module")
def rules(ruleset_from_yaml: Any) -> Any:
    return ruleset_from_yaml(RULES)


def build_events(specs: list[tuple[Any, ...]], make_event: Any) -> list[Any]:
    return [
        make_event(cost, tenant=tenant, ts=ms / 1000, use_case=use_case, risk_tier=risk, model=model,
                   cost_event_id=f"ev-{i}", trace_id=f"tr-{i}")
        for i, (tenant, ms, cost, use_case, risk, model) in enumerate(specs)
    ]


@st.composite
def delivery_plans(draw: Any, tenants: list[str]) -> list[tuple[int, int]]:
    """(event index, position) in delivery order: permuted, duplicated, split, redelivered.

    Offsets run either over one stream or per tenant (one partition each, as in the service);
    either way they grow per tenant, and a record holds one tenant's events when partitioned.
    """
    n = len(tenants)
    seq = list(draw(st.permutations(range(n))))
    for idx, where in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 10**6)), max_size=6)):
        seq.insert(where % (len(seq) + 1), idx)  # producer duplicate: same id, its own new position
    partitioned = draw(st.booleans(), label="partitioned")
    offsets: dict[str, int] = defaultdict(int)
    plan, index, last = [], 0, None
    for idx in seq:
        part = tenants[idx] if partitioned else ""
        if part != last or draw(st.booleans()):  # start a new record (offsets need not be contiguous)
            offsets[part] += draw(st.integers(1, 3))
            index = 0
        else:
            index += 1
        last = part
        plan.append((idx, position(offsets[part], index)))
    for src, dst in draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=6)):
        j = src % len(plan)
        plan.insert(j + 1 + dst % (len(plan) - j), plan[j])  # redelivery: same position, later
    return plan


def tenants_of(events: list[Any]) -> list[str]:
    return [priced.event.tenant_id for priced in events]


def local_period(kind: str, zone: str, week_start: int, ts: float) -> str:
    today = datetime.fromtimestamp(ts, ZoneInfo(zone)).date()
    if kind == "day":
        return today.isoformat()
    if kind == "week":
        return (today - timedelta(days=(today.weekday() - week_start) % 7)).isoformat()
    return today.replace(day=1).isoformat()


def expected_totals(events: list[Any]) -> dict[tuple[str, tuple[str, ...], str], int]:
    """Exact nano-dollar sums of the unique events per (budget, instance, period)."""
    totals: dict[tuple[str, tuple[str, ...], str], int] = defaultdict(int)
    for priced in events:
        e = priced.event
        nanos = usd_to_nanos(e.allocated_cost_usd)
        zone, week_start = ZONES[e.tenant_id], WEEK_START.get(e.tenant_id, 0)
        day = local_period("day", zone, week_start, priced.ts)
        totals[("uc-day", (e.tenant_id, e.use_case_id), day)] += nanos
        totals[("tenant-week", (e.tenant_id,), local_period("week", zone, week_start, priced.ts))] += nanos
        if e.risk_tier == "low":
            totals[("low-month", (e.tenant_id,), local_period("month", zone, week_start, priced.ts))] += nanos
        totals[("model-day", (e.model_or_service,), local_period("day", DEFAULT_ZONE, 0, priced.ts))] += nanos
    return dict(totals)


def history_sums(engine: Engine, per_tenant_only: bool = False) -> dict[tuple[str, tuple[str, ...]], int]:
    """Hourly history summed per (budget, instance): what burn rates and forecasts read."""
    sums: dict[tuple[str, tuple[str, ...]], int] = defaultdict(int)
    for key, series in engine.state.items():
        if key[0] == "hist" and not (per_tenant_only and key[1] == "*"):
            sums[(key[2], key[3])] += sum(series[1:])
    return dict(sums)


def expected_history(events: list[Any], engine: Engine, per_tenant_only: bool = False) -> dict[Any, int]:
    sums: dict[tuple[str, tuple[str, ...]], int] = defaultdict(int)
    for (budget, inst, _), nanos in expected_totals(events).items():
        if not (per_tenant_only and not engine.rules.budget(budget).per_tenant):
            sums[(budget, inst)] += nanos
    return dict(sums)


def deliver(engine: Engine, events: list[Any], plan: list[tuple[int, int]],
            ticks: frozenset[int] = frozenset()) -> list[Any]:
    """Process a plan (advancing to the newest event time after the listed steps); return TooLate effects."""
    too_late, newest = [], 0.0
    for step, (idx, pos) in enumerate(plan):
        too_late += [e for e in engine.process(events[idx], pos) if isinstance(e, TooLate)]
        newest = max(newest, events[idx].ts)
        if step in ticks:
            engine.advance(newest)
    return too_late


def producer_duplicates(events: list[Any], plan: list[tuple[int, int]]) -> int:
    first: dict[str, int] = {}
    count = 0
    for idx, pos in plan:
        seen = first.setdefault(events[idx].event.cost_event_id, pos)
        count += seen != pos
    return count


@settings(max_examples=120, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_totals_exact_under_order_duplication_and_split(
        data: Any, specs: Any, rules: Any, make_event: Any) -> None:
    """Each (budget, instance, period) total is the exact sum of its unique events, whatever the delivery."""
    events = build_events(specs, make_event)
    plan = data.draw(delivery_plans(tenants_of(events)))
    ticks = data.draw(st.frozensets(st.integers(0, len(plan) - 1), max_size=4))
    engine = Engine(rules)
    too_late = deliver(engine, events, plan, ticks)
    assert too_late == []  # 3-day spread inside the 7-day horizon: everything is counted
    expected = expected_totals(events)
    assert engine.totals() == expected
    assert history_sums(engine) == expected_history(events, engine)
    for (budget, inst, period_id), nanos in expected.items():
        dims = rules.budget(budget).spec.for_each
        assert engine.spend_nanos(budget, dict(zip(dims, inst)), period_id) == nanos
    assert engine.stats.duplicates == producer_duplicates(events, plan)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_two_delivery_plans_give_identical_totals(data: Any, specs: Any, rules: Any, make_event: Any) -> None:
    """The same events through two different delivery plans give identical totals()."""
    events = build_events(specs, make_event)
    first, second = Engine(rules), Engine(rules)
    deliver(first, events, data.draw(delivery_plans(tenants_of(events))))
    deliver(second, events, data.draw(delivery_plans(tenants_of(events))))
    assert first.totals() == second.totals()


@settings(max_examples=100, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_restart_from_checkpoint_with_overlap_is_exact(
        data: Any, specs: Any, rules: Any, make_event: Any) -> None:
    """A restart from a state copy at any cut, redelivering from an earlier position, keeps totals exact."""
    events = build_events(specs, make_event)
    plan = data.draw(delivery_plans(tenants_of(events)))
    cut = data.draw(st.integers(0, len(plan)), label="cut")
    resume = data.draw(st.integers(0, cut), label="resume")
    state: dict[Any, Any] = {}
    engine = Engine(rules, state)
    deliver(engine, events, plan[:cut])
    checkpoint = copy.deepcopy(state)
    deliver(engine, events, plan[cut:])  # work after the checkpoint is lost in the crash

    restarted = Engine(rules, checkpoint)
    assert deliver(restarted, events, plan[resume:]) == []
    assert restarted.totals() == expected_totals(events)
    assert history_sums(restarted) == expected_history(events, restarted)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_partial_flush_then_redelivery_is_exact(data: Any, specs: Any, rules: Any, make_event: Any) -> None:
    """With some keys flushed at the latest version and the rest older, per-key fencing keeps totals exact."""
    events = build_events(specs, make_event)
    plan = data.draw(delivery_plans(tenants_of(events)))
    older = data.draw(st.integers(0, len(plan)), label="older")
    latest = data.draw(st.integers(older, len(plan)), label="latest")
    state: dict[Any, Any] = {}
    engine = Engine(rules, state)
    deliver(engine, events, plan[:older])
    old_snapshot = copy.deepcopy(state)
    deliver(engine, events, plan[older:latest])
    new_snapshot = copy.deepcopy(state)

    keys = sorted(set(old_snapshot) | set(new_snapshot), key=repr)
    flushed = data.draw(st.lists(st.booleans(), min_size=len(keys), max_size=len(keys)), label="flushed")
    mixed = {}
    for key, is_new in zip(keys, flushed):
        source = new_snapshot if is_new else old_snapshot
        if key in source:
            mixed[key] = copy.deepcopy(source[key])

    restarted = Engine(rules, mixed)
    assert deliver(restarted, events, plan[older:]) == []
    assert restarted.totals() == expected_totals(events)
    # Cross-tenant series share one hour list across tenants' positions: exact per tenant only.
    assert history_sums(restarted, True) == expected_history(events, restarted, True)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), specs=event_specs)
def test_too_late_accounts_for_everything_not_counted(
        data: Any, specs: Any, rules: Any, make_event: Any) -> None:
    """With a 1-day horizon, totals hold exactly the events whose first delivery was not TooLate."""
    events = build_events(specs, make_event)
    plan = data.draw(delivery_plans(tenants_of(events)))
    ticks = data.draw(st.frozensets(st.integers(0, len(plan) - 1), max_size=4))
    engine = Engine(rules, dedupe_horizon_s=86400)
    first_late: dict[str, bool] = {}
    newest = 0.0
    for step, (idx, pos) in enumerate(plan):
        late = [e for e in engine.process(events[idx], pos) if isinstance(e, TooLate)]
        assert all(e.cost_event_id == events[idx].event.cost_event_id for e in late)
        first_late.setdefault(events[idx].event.cost_event_id, bool(late))
        newest = max(newest, events[idx].ts)
        if step in ticks:
            engine.advance(newest)
    counted = [e for e in events if not first_late[e.event.cost_event_id]]
    assert engine.totals() == expected_totals(counted)
    assert engine.stats.too_late >= sum(first_late.values())
