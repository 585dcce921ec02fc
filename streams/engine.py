"""The pure budget engine: events in, effects out. No I/O, no wall clock.

``process(event, position)`` counts a priced event into every budget instance it matches and
re-evaluates only the rules of those instances; ``advance(now)`` moves the clock so periods
end, decisions expire and alerts resolve with no traffic. All state lives in the mapping
handed in (a dict in replay and tests, a table-backed store in the service) under small
tuple keys documented in docs/engine.md.

Exactly once on money: every counter remembers the source position of the last event it
applied and ignores positions it has seen, and producer duplicates (same ``cost_event_id``,
new position) are caught by a per-tenant id set bounded in event time. Positions must grow
per tenant (one tenant's events come from one partition, in order).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import MutableMapping
from operator import attrgetter
from typing import Any

from spendwarden.rules.compiler import CompiledBudget, CompiledRule, RuleSet
from spendwarden.streams import evaluation as ev_
from spendwarden.streams.anomaly import AnomalyFeed
from spendwarden.streams.decisions import decision_fields, make_verdict, strictest
from spendwarden.streams.effects import (
    AlertFiring, AlertResolved, DecisionChanged, Effect, LateSpend, TooLate,
)
from spendwarden.streams.engine_state import EngineStats, Facts, Position, position
from spendwarden.streams.events import Outcome, PricedEvent, epoch_seconds
from spendwarden.streams.forecast import Forecast, Profile, build_profile, project
from spendwarden.streams.history import history_add, history_hours
from spendwarden.streams.money import NANOS_PER_USD, usd_text
from spendwarden.streams.periods import Calendar, Period, iso_utc
from spendwarden.streams.seen import SeenIds
from spendwarden.streams.unit import UnitFeed, UnitView, unit_key, unit_summary
from spendwarden.streams.usage import add_usage

__all__ = ["Engine", "EngineStats", "Position", "position", "rule_floor"]

INFINITY = float("inf")
GLOBAL = "*"  # tenant key of budgets that span tenants
DEFAULT_HORIZON_S = 7 * 86400
_MATCH_CACHE_MAX = 200_000
_OUTCOME_ID = "\x00outcome:"  # outcome ids share the per-tenant id set with cost_event_ids


def _unit_keys(slots: list[Slot]) -> list[str]:
    """The unit-economics names of the instances an event counts into (those whose rules read unit.*)."""
    return [slot.ukey for slot in slots if slot.ukey is not None]


def rule_floor(rule: CompiledRule, limit: int) -> int:
    """Smallest spend (nano-dollars) at which all of a rule's budget-spend guards can hold."""
    floor = 0
    for guard in rule.guards:
        if guard.root != "budget":
            continue
        if guard.name == "used_ratio":
            needed = guard.threshold * limit
        elif guard.name == "spend_usd":
            needed = guard.threshold * NANOS_PER_USD
        else:
            continue
        # Rounded down with room for float error: an early evaluation is harmless, a late one is not.
        floor = max(floor, int(needed * (1 - 1e-12)) - 1)
    return floor


def rule_is_spend_monotone(rule: CompiledRule) -> bool:
    """True when more spend can only turn the rule on, never off: its budget guards are the
    only spend-dependent part (the rest depends on time or static labels)."""
    if "window" in rule.roots:
        return False
    if any(guard.root != "budget" or guard.name not in ("used_ratio", "spend_usd") for guard in rule.guards):
        return False
    return rule.residual is None or rule.residual_time_only


class Slot:
    """One budget instance an event counts into, with everything that depends only on the
    event's dimensions resolved once (cached per dimension values in ``Engine._match``)."""

    __slots__ = ("budget", "inst", "tkey", "limit", "floor", "calendar", "kind", "name", "entry",
                 "has_rules", "needs_window", "detectors", "is_global", "period", "next_period", "next_at",
                 "reserve", "ukey", "minute_rules", "checked_minute")

    def __init__(self, budget: CompiledBudget, inst: tuple[str, ...], tkey: str, limit: int, floor: int,
                 calendar: Calendar) -> None:
        self.budget = budget
        self.inst = inst
        self.tkey = tkey
        self.limit = limit
        self.floor = floor
        self.calendar = calendar
        self.kind = budget.spec.period
        self.name = budget.name
        self.entry = (budget.index, inst)
        self.has_rules = bool(budget.rules)
        self.needs_window = budget.needs_window
        self.detectors = budget.detectors if tkey != GLOBAL else frozenset()  # the ones its rules read
        self.is_global = tkey == GLOBAL
        self.reserve = budget.spec.reservations and tkey != GLOBAL  # gateways reserve against it
        # Its name in the unit-economics buckets when some rule reads unit.* (per tenant only).
        self.ukey = unit_key(budget.name, inst) if budget.reads_unit and tkey != GLOBAL else None
        self.minute_rules = budget.minute_resolution  # evaluated at most once per engine minute
        self.checked_minute = -1
        self.period: Period | None = None  # last period seen: most events fall in it
        # Spend below which no rule of the instance can change its answer in next_period
        # (set after each evaluation; rules are monotone in spend apart from time).
        self.next_period: str | None = None
        self.next_at: float = 0.0


class Engine:
    """Budgets, rules and decisions over a stream of priced cost events."""

    def __init__(self, rules: RuleSet, state: MutableMapping[Any, Any] | None = None, *,
                 dedupe_horizon_s: float = DEFAULT_HORIZON_S, emit_cross_tenant: bool = False,
                 track_reservations: bool = False) -> None:
        self.state: MutableMapping[Any, Any] = {} if state is None else state
        self.horizon = dedupe_horizon_s
        # Stage one of two (the service): budgets spanning tenants are not counted here but
        # emitted as (budget, instance, position, nanos, ts) for a second stage to sum.
        self.emit_cross_tenant = emit_cross_tenant
        self.deltas: list[tuple[str, tuple[str, ...], int, int, float]] = []
        # Budgets gateways reserve against: (tenant, budget, instance) -> (spend, period, slot)
        # changed since the caller last took them, and the cost events counted into them per
        # tenant (their reservations are released when that spend is published). See
        # streams/reservations.py.
        # Only a caller that drains them asks for them (the live worker; replay does not).
        self.track_reservations = track_reservations
        self.reserved: dict[tuple[str, str, tuple[str, ...]], tuple[int, Period, Slot]] = {}
        self.settled: dict[str, list[str]] = {}
        self.stats = EngineStats()
        self.facts = Facts()  # alert evidence, in memory (not money)
        self._tick = 0.0
        self._clock: dict[str, float] = {}
        self.seen = SeenIds(self.state)
        self._unit = UnitFeed(self.state)
        # Instances the clock alone can change, with the engine time to re-check them at.
        self._watch: dict[str, dict[tuple[int, tuple[str, ...]], float]] = {}
        # The same entries as a heap by due time, so a tick touches only what is due; an entry
        # whose due time in _watch has changed since it was pushed is stale and skipped.
        self._due: list[tuple[float, str, int, tuple[str, ...]]] = []
        self._queued: set[tuple[float, str, int, tuple[str, ...]]] = set()  # what _due holds
        self._memo: dict[tuple[str, str, tuple[str, ...]], tuple[float, float, bool]] = {}
        self._pruned_at = 0.0
        self._evidence_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._profiles: dict[tuple[str, int, tuple[str, ...]], Profile] = {}  # forecast profile per instance
        self._forecasts: dict[tuple[str, int, tuple[str, ...]], tuple[int, str, int, Forecast]] = {}
        # (budget index, instance, tenant) whose evaluation a busy minute skipped (_minute_checked)
        self._skipped: dict[tuple[Any, ...], None] = {}
        self._install(rules)
        self._rebuild_indexes()

    # ---------------------------------------------------------------- rules
    def _install(self, rules: RuleSet) -> None:
        self.rules = rules
        self._budgets = rules.budgets
        self._calendars: dict[str, Calendar] = {}
        self._match_cache: dict[tuple[Any, ...], list[Slot]] = {}
        self._slots: dict[tuple[int, str, tuple[str, ...]], Slot] = {}
        self._delta_slots: dict[tuple[str, tuple[str, ...]], Slot] = {}
        dims = {"tenant_id", "use_case_id"}
        for budget in rules.budgets:
            dims.update(budget.spec.for_each)
            dims.update(budget.spec.scope)
        self._floors: dict[tuple[int, int], int] = {}
        self._dims = tuple(sorted(dims))
        self._monotone = frozenset(rule.name for rule in rules.rules if rule_is_spend_monotone(rule))
        self._anomaly = AnomalyFeed(self.state, rules.detector_params, self._calendar)
        self._unit.configure(rules.unit.outcome_wait_minutes * 60.0, rules.unit.repeat_after)
        self._unit_active = any(budget.reads_unit for budget in rules.budgets)
        self._profiles.clear()  # budget indexes may have moved
        self._forecasts.clear()
        self._dim_key = attrgetter(*self._dims)
        self._memo.clear()
        self._skipped.clear()  # budget indexes may have moved; set_rules re-evaluates everything

    def sync_state(self) -> None:
        """Write what lives only in memory between checkpoints (taught detectors) into the state
        mapping: call before checkpointing or copying the state."""
        self._anomaly.flush()

    def set_rules(self, rules: RuleSet) -> list[Effect]:
        """Swap the rule set (hot reload); spend state is kept and re-evaluated against new limits."""
        effects: list[Effect] = []
        names = {rule.name for rule in rules.rules}
        for key in [k for k in list(self.state.keys()) if k[0] == "fire" and k[2] not in names]:
            self._resolve_key(key, "rule removed", effects)
        self._anomaly.flush()  # the new rules get new detector objects, rebuilt from state
        self._install(rules)
        self._rebuild_indexes()
        current: dict[tuple[str, str, tuple[str, ...]], None] = {}
        for key in list(self.state.keys()):
            if key[0] == "spend":
                current[(key[1], key[2], key[3])] = None
        by_name = {budget.name: budget for budget in rules.budgets}
        for tkey, name, inst in current:
            budget = by_name.get(name)
            if budget is not None and budget.rules:
                self._reevaluate(budget, inst, tkey, effects, refresh=True)
        return effects

    # ---------------------------------------------------------------- events
    def process(self, priced: PricedEvent, pos: Position) -> list[Effect]:
        """Count one event (idempotent by ``pos``) and return what changed."""
        event = priced.event
        tenant = event.tenant_id
        ts = priced.ts
        state = self.state
        frontier = self._frontier(tenant)
        if ts < frontier - self.horizon:
            self.stats.too_late += 1
            return [TooLate(tenant, event.cost_event_id, iso_utc(ts), usd_text((priced.cost_nanos)),
                            iso_utc(frontier - self.horizon))]
        previous = self.seen.first_position(tenant, ts, event.cost_event_id, pos)
        if previous is not None and previous != pos:
            self.stats.duplicates += 1
            if self._unit_active:  # who reported the call still counts (a gateway going silent)
                self._unit.observe(tenant, event, ts, pos, 0, _unit_keys(self._match(event)), counted=False)
            return []
        if self._note_time(tenant, ts) and ts > frontier:
            frontier = ts
        self.stats.events += 1

        cost = priced.cost_nanos
        add_usage(state, tenant, event, cost, pos)
        slots = self._match(event)
        if self._unit_active:  # before the rules below read unit.*
            self._unit.observe(tenant, event, ts, pos, cost, _unit_keys(slots), counted=True)
        hour = int(ts // 3600)
        day, hour_slot = divmod(hour, 24)
        hour_slot += 1  # index in a day's history list, after its fence
        effects: list[Effect] = []
        late: list[str] = []
        touched = []
        applied = False
        for slot in slots:
            tkey = slot.tkey
            period = slot.period
            if period is None or not period.start <= ts < period.end:
                period = slot.period = slot.calendar.period(slot.kind, ts)
            if slot.is_global and self.emit_cross_tenant:
                self.deltas.append((slot.name, slot.inst, pos, cost, ts))
                applied = True
                continue
            if not slot.is_global:  # hourly history, behind its own fence (a key may be checkpointed apart)
                hkey = ("hist", tkey, slot.name, slot.inst, day)
                series = state.get(hkey)
                if series.__class__ is list:  # the day's key exists: most events
                    if series[0] < pos:
                        series[0] = pos
                        series[hour_slot] += cost
                        state[hkey] = series
                else:
                    history_add(state, hkey[:4], ts, cost, pos)
                if slot.detectors:  # its hour bucket has its own fence too
                    self._anomaly.observe(tkey, slot.name, slot.inst, ts, pos, cost, event, slot.detectors)
            key = ("spend", tkey, slot.name, slot.inst, period.id)
            current = state.get(key)
            if slot.is_global:
                # Positions only grow per tenant, so a cross-tenant counter fences each tenant apart.
                fences = {} if current is None else current[1]
                if fences.get(tenant, -1) >= pos:
                    continue
                fences[tenant] = pos
                total = cost if current is None else current[0] + cost
                state[key] = (total, fences)
            elif current is None:
                total = cost
                state[key] = (total, pos)
            elif current[1] >= pos:
                continue
            else:
                total = current[0] + cost
                state[key] = (total, pos)
            applied = True
            if slot.reserve:
                rkey = (tkey, slot.name, slot.inst)
                known = self.reserved.get(rkey)
                if known is None or known[1].end <= period.end:  # a late event never hides the current period
                    self.reserved[rkey] = (total, period, slot)
                self.settled.setdefault(tkey, []).append(event.cost_event_id)
            if slot.is_global:
                history_add(state, ("hist", tkey, slot.name, slot.inst), ts, cost)
            if slot.needs_window:
                wkey = ("window", tkey, slot.name, slot.inst)
                state[wkey] = ev_.window_add(state.get(wkey), int(ts // 60), cost)
            if period.end <= (self._clock[GLOBAL] if slot.is_global else frontier):
                late.append(f"{slot.name}/{period.id}")
            elif slot.has_rules and (cost < 0 or total >= (slot.next_at if slot.next_period == period.id
                                                           else slot.floor)):
                if not (slot.minute_rules and self._minute_checked(slot, frontier)):
                    touched.append((slot, period, total))
        if previous is None or applied:
            self.facts.add(tenant, event, cost, self._calendar(tenant).period("day", ts).id)
            if self._evidence_cache:
                self._evidence_cache.clear()
        if late:
            self.stats.late_spend += 1
            effects.append(LateSpend(tenant, event.cost_event_id, iso_utc(ts), late, usd_text((cost))))
        for slot, period, total in touched:
            slot.next_period = period.id
            slot.next_at = self._evaluate(slot.budget, slot.inst, slot.tkey, period, total, slot.limit, effects)
        return effects

    def process_outcome(self, outcome: Outcome, pos: Position, ts: float | None = None) -> list[Effect]:
        """Take one business outcome in (idempotent by ``pos``; a repeated ``business_outcome_id``
        counts once): it joins its trace's cost for ``unit.*``, and the rules of the budget
        instances whose figures it changed are evaluated at once."""
        tenant = outcome.tenant_id
        ts = epoch_seconds(outcome.ts) if ts is None else ts
        frontier = self._frontier(tenant)
        if ts < frontier - self.horizon:
            self.stats.outcome_too_late += 1
            return []
        previous = self.seen.first_position(tenant, ts, _OUTCOME_ID + outcome.business_outcome_id, pos)
        if previous is not None and previous != pos:
            self.stats.outcome_duplicates += 1
            return []
        self._note_time(tenant, ts)
        self.stats.outcomes += 1
        effects: list[Effect] = []
        if self._unit_active:
            # The instances whose figures it changed are evaluated now, like those an event touches.
            for ukey in self._unit.outcome(tenant, outcome, ts, pos):
                name, *inst = ukey.split("\t")
                try:
                    budget = self.rules.budget(name)
                except KeyError:
                    continue  # its budget was removed by a reload
                if not (budget.rules and budget.reads_unit):
                    continue
                slot = self._slots.get((budget.index, tenant, tuple(inst)))
                if slot is not None and slot.minute_rules and self._minute_checked(slot, self._frontier(tenant)):
                    continue
                self._reevaluate(budget, tuple(inst), tenant, effects)
        return effects

    def unit_figures(self, budget: str, instance: dict[str, str], now: float | None = None) -> dict[str, Any]:
        """``unit.*`` of a budget instance as a rule would see it (at the tenant's engine time)."""
        spec = self.rules.budget(budget)
        inst = tuple(instance.get(dim, "none") for dim in spec.spec.for_each)
        tenant = instance["tenant_id"]
        return self._unit.figures(tenant, unit_key(budget, inst), self._frontier(tenant) if now is None else now)

    def apply_delta(self, budget_name: str, inst: tuple[str, ...], source: str, pos: Position, cost: int,
                    ts: float) -> list[Effect]:
        """Stage two: add one stage-one entry to a cross-tenant budget, fenced per source partition.

        Entries of one source arrive in position order (re-sent ones after a stage-one crash
        repeat positions already applied and are skipped), so the sum stays exact.
        """
        effects: list[Effect] = []
        slot = self._delta_slots.get((budget_name, inst))
        if slot is None:
            try:
                budget = self.rules.budget(budget_name)
            except KeyError:
                return effects  # the budget was removed by a reload since the entry was emitted
            limit = self.rules.limit_nanos(budget, None)
            if limit is None or budget.per_tenant:
                return effects
            slot = self._slots.get((budget.index, GLOBAL, inst)) or self._slot(budget, GLOBAL, inst, limit)
            self._delta_slots[(budget_name, inst)] = slot
        if ts > self._clock.get(GLOBAL, 0.0):
            self._clock[GLOBAL] = ts
            self.state[("clock", GLOBAL)] = ts
        period = slot.period
        if period is None or not period.start <= ts < period.end:
            period = slot.period = slot.calendar.period(slot.kind, ts)
        key = ("spend", GLOBAL, budget_name, inst, period.id)
        current = self.state.get(key)
        fences = {} if current is None else current[1]
        if fences.get(source, -1) >= pos:
            return effects
        fences[source] = pos
        total = cost if current is None else current[0] + cost
        self.state[key] = (total, fences)
        history_add(self.state, ("hist", GLOBAL, budget_name, inst), ts, cost)
        if (period.end > self._frontier(GLOBAL) and slot.has_rules
                and (cost < 0 or total >= (slot.next_at if slot.next_period == period.id else slot.floor))):
            slot.next_period = period.id
            slot.next_at = self._evaluate(slot.budget, inst, GLOBAL, period, total, slot.limit, effects)
        return effects

    def advance(self, now: float) -> list[Effect]:
        """Move the clock to ``now`` (epoch seconds): ends periods, lifts decisions, resolves alerts."""
        effects: list[Effect] = []
        if now <= self._tick:
            return effects
        self._tick = now
        by_index = self._budgets
        due_heap = self._due
        while due_heap and due_heap[0][0] <= now:
            item = heapq.heappop(due_heap)
            self._queued.discard(item)
            due, tkey, index, inst = item
            watched = self._watch.get(tkey)
            if watched is not None and watched.get((index, inst)) == due:  # else superseded
                self._reevaluate(by_index[index], inst, tkey, effects)
        if now - self._pruned_at >= 3600:
            horizon = self.horizon
            newest = max(self._clock.values(), default=0.0)
            self.seen.prune(lambda tenant: self._frontier(tenant) - horizon, max(newest, now) - horizon)
            self._unit.prune(newest)  # event time, not ticks
            self._pruned_at = now
        return effects

    # ---------------------------------------------------------------- queries
    def spend_nanos(self, budget: str, instance: dict[str, str], period_id: str) -> int:
        """Counted spend of a budget instance in a period (0 when nothing was counted)."""
        spec = self.rules.budget(budget)
        inst = tuple(instance.get(dim, "none") for dim in spec.spec.for_each)
        tkey = instance.get("tenant_id", GLOBAL) if spec.per_tenant else GLOBAL
        if tkey == GLOBAL and spec.per_tenant:
            tkey = (spec.spec.scope_values("tenant_id") or (GLOBAL,))[0]
        found = self.state.get(("spend", tkey, budget, inst, period_id))
        return found[0] if found else 0

    def totals(self) -> dict[tuple[str, tuple[str, ...], str], int]:
        """Every counter as ``(budget, instance values, period_id) -> nano-dollars``."""
        return {(k[2], k[3], k[4]): v[0] for k, v in self.state.items() if k[0] == "spend"}

    def verdicts(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """The effective verdict per field for a tenant (fields at L0 are absent)."""
        found = {}
        for key, contributions in self.state.items():
            if key[0] == "verdicts" and key[1] == tenant_id:
                best = strictest(contributions)
                if best is not None:
                    found[key[2]] = best
        return found

    def all_verdicts(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(tenant, field, effective verdict) for every field not at L0, in one pass over state."""
        found = []
        for key, contributions in self.state.items():
            if key[0] == "verdicts":
                best = strictest(contributions)
                if best is not None:
                    found.append((key[1], key[2], best))
        return found

    def calendar(self, tenant_id: str) -> Calendar:
        """The tenant's calendar (its zone and week start from the rules)."""
        return self._calendar(tenant_id)

    def frontier(self, tenant_id: str) -> float:
        """Engine time for a tenant: the newest event time or tick seen."""
        return self._frontier(tenant_id)

    # ---------------------------------------------------------------- internals
    def _frontier(self, tkey: str) -> float:
        clock = self._clock.get(tkey, 0.0)
        return clock if clock > self._tick else self._tick

    def _calendar(self, tkey: str) -> Calendar:
        calendar = self._calendars.get(tkey)
        if calendar is None:
            spec = self.rules.default_tenant if tkey == GLOBAL else self.rules.tenant(tkey)
            calendar = Calendar(spec.timezone, spec.week_start)
            self._calendars[tkey] = calendar
        return calendar

    def _match(self, event: Any) -> list[Slot]:
        """Budget instances an event counts into, cached by the event's dimension values."""
        key = self._dim_key(event)
        found = self._match_cache.get(key)
        if found is not None:
            return found
        if len(self._match_cache) >= _MATCH_CACHE_MAX:  # before building: never two Slots for one instance
            self._match_cache.clear()
            self._slots.clear()
            self._delta_slots.clear()
        found = []
        for budget in self._budgets:
            if all(getattr(event, dim) in allowed for dim, allowed in budget.matchers):
                inst = tuple(getattr(event, dim) or "none" for dim in budget.spec.for_each)
                tkey = event.tenant_id if budget.per_tenant else GLOBAL
                # One Slot per instance, shared by every dimension key that reaches it, so
                # what an evaluation learnt (next_at) serves all of them.
                slot = self._slots.get((budget.index, tkey, inst))
                if slot is None:
                    limit = self.rules.limit_nanos(budget, tkey if budget.per_tenant else None)
                    if limit is None:
                        continue
                    slot = self._slot(budget, tkey, inst, limit)
                found.append(slot)
        self._match_cache[key] = found
        return found

    def _note_time(self, tenant: str, ts: float) -> bool:
        """Move the tenant's own newest event time (the frontier may be the tick) and the
        global one; True when the tenant's moved."""
        moved = ts > self._clock.get(tenant, -INFINITY)
        if moved:
            self._clock[tenant] = ts
            self.state[("clock", tenant)] = ts
        if ts > self._clock.get(GLOBAL, 0.0):
            self._clock[GLOBAL] = ts
            self.state[("clock", GLOBAL)] = ts
        return moved

    def _slot(self, budget: CompiledBudget, tkey: str, inst: tuple[str, ...], limit: int) -> Slot:
        slot = Slot(budget, inst, tkey, limit, self._floor(budget, limit), self._calendar(tkey))
        slot.reserve = slot.reserve and self.track_reservations
        self._slots[(budget.index, tkey, inst)] = slot
        return slot

    def _floor(self, budget: CompiledBudget, limit: int) -> int:
        """Spend below which no rule of the budget can be true (its guards fail): skip evaluating.

        0 when some rule has no guard on budget spend. Rounded down, so the exact check that
        follows is never skipped wrongly.
        """
        key = (budget.index, limit)
        floor = self._floors.get(key)
        if floor is None:
            floor = min((rule_floor(rule, limit) for rule in budget.rules), default=0)
            self._floors[key] = floor
        return floor

    def _reevaluate(self, budget: CompiledBudget, inst: tuple[str, ...], tkey: str, effects: list[Effect],
                    refresh: bool = False) -> None:
        if self._skipped:
            self._skipped.pop((budget.index, inst, tkey), None)
        limit = self.rules.limit_nanos(budget, tkey if budget.per_tenant else None)
        if limit is None:
            return
        now = self._frontier(tkey)
        period = self._calendar(tkey).period(budget.spec.period, now)
        found = self.state.get(("spend", tkey, budget.name, inst, period.id))
        self._evaluate(budget, inst, tkey, period, found[0] if found else 0, limit, effects, refresh)

    def _evaluate(self, budget: CompiledBudget, inst: tuple[str, ...], tkey: str, period: Period, spend: int,
                  limit: int, effects: list[Effect], refresh: bool = False) -> float:
        """Re-check the instance's rules; return the spend below which no answer can change."""
        state = self.state
        now = self._frontier(tkey)
        figures = ev_.budget_figures(spend, limit)
        window = None
        if budget.reads_window:
            window = ev_.window_figures(state.get(("window", tkey, budget.name, inst)), int(now // 60))
        anomaly = None
        if budget.needs_detectors and tkey != GLOBAL:  # scored once a minute, shared by the rules
            context = self._anomaly.context((tkey, budget.name, inst), now, budget.detectors, budget.warm_gated)
            anomaly = {f"{name}.score": found["score"] for name, found in context.items()}
        unit = self._unit.view(tkey, unit_key(budget.name, inst), now) if budget.reads_unit else None
        recheck = INFINITY  # engine time at which the clock alone could change an answer
        next_at = INFINITY
        for rule in budget.rules:
            fire_key = ("fire", tkey, rule.name, inst)
            firing = state.get(fire_key)
            if firing is not None and firing["period_id"] != period.id:
                if rule.spans_periods:
                    firing = dict(firing, period_id=period.id)
                    state[fire_key] = firing
                else:
                    self._resolve_key(fire_key, "period ended", effects)
                    firing = None
            passed = ev_.guards_pass(rule, figures, window, anomaly, unit)
            result = passed and self._truth(rule, budget, inst, tkey, period, figures, window, now, spend, limit, unit)
            if firing is not None and rule.keep_firing_s:
                result, held_until = self._hold(rule, fire_key, firing, result, now)
                firing = state.get(fire_key)
                if held_until is not None:
                    recheck = min(recheck, held_until)
            if result and firing is None:
                self._fire(rule, budget, inst, tkey, period, spend, limit, figures, now, effects)
            elif not result and firing is not None:
                self._resolve_key(fire_key, "condition cleared", effects)
            elif firing is not None and refresh:
                self._refresh_verdict(rule, budget, inst, tkey, period, fire_key, firing, effects)
            if result:  # firing: the period end clears it, or the clock if time matters
                recheck = min(recheck, period.end, self._clock_change(rule, tkey, now))
            elif passed and rule.time_dependent:  # waiting for the clock (local.hour, window decay)
                recheck = min(recheck, self._clock_change(rule, tkey, now))
            if rule.name not in self._monotone:
                next_at = 0.0  # more spend can change its answer either way: evaluate every event
            elif not result and not passed:
                floor = rule_floor(rule, limit)
                next_at = min(next_at, floor if floor > spend else 0.0)
        if recheck < INFINITY:
            self._watch_at(tkey, budget.index, inst, recheck)
        else:
            watched = self._watch.get(tkey)
            if watched is not None:
                watched.pop((budget.index, inst), None)
        return next_at

    def _watch_at(self, tkey: str, index: int, inst: tuple[str, ...], due: float) -> None:
        """Re-check the instance when the engine clock reaches ``due``."""
        watched = self._watch.get(tkey)
        if watched is None:
            self._watch[tkey] = watched = {}
        if watched.get((index, inst)) != due:
            watched[(index, inst)] = due
            item = (due, tkey, index, inst)
            if item not in self._queued:  # a due time flipping back must not queue it twice
                self._queued.add(item)
                heapq.heappush(self._due, item)

    def _minute_checked(self, slot: Slot, now: float) -> bool:
        """For a budget whose rules see the world at minute resolution (unit.*, clock): True when
        the instance was evaluated in this engine minute already; then the next minute's tick
        re-checks it instead of every event of the minute (figures of hours and weeks move little
        per event, and a busy use case has hundreds of events a minute)."""
        minute = int(now // 60)
        if slot.checked_minute != minute:
            slot.checked_minute = minute
            return False
        entry = (slot.budget.index, slot.inst)
        self._skipped[entry + (slot.tkey,)] = None
        due = (minute + 1) * 60.0
        watched = self._watch.get(slot.tkey)
        earlier = watched.get(entry) if watched is not None else None
        if earlier is None or not now < earlier < due:  # keep an earlier re-check (a hold ending)
            self._watch_at(slot.tkey, slot.budget.index, slot.inst, due)
        return True

    def catch_up(self) -> list[Effect]:
        """Evaluate the instances whose evaluation a busy minute skipped, at the engine's own
        time: what the next minute's tick would do, for a caller whose input has ended (replay,
        rule tests) and will not tick again."""
        effects: list[Effect] = []
        skipped, self._skipped = self._skipped, {}
        for index, inst, tkey in skipped:
            self._reevaluate(self._budgets[index], inst, tkey, effects)
        return effects

    def _hold(self, rule: CompiledRule, fire_key: tuple[Any, ...], firing: dict[str, Any], result: bool,
              now: float) -> tuple[bool, float | None]:
        """keep_firing_for: a firing rule whose condition turned false stays firing until it has
        been false for the hold; returns (firing?, when the hold ends or None)."""
        cleared = firing.get("clear_since")
        if result:
            if cleared is not None:
                self.state[fire_key] = {k: v for k, v in firing.items() if k != "clear_since"}
            return True, None
        if cleared is None:
            self.state[fire_key] = dict(firing, clear_since=now)
            cleared = now
        if now - cleared < rule.keep_firing_s:
            return True, cleared + rule.keep_firing_s
        return False, None

    def _memo_key(self, rule: CompiledRule, tkey: str, inst: tuple[str, ...]) -> tuple[Any, ...]:
        """How widely a time-only answer is shared: per time zone when it reads only `local.*`
        (tenants of one zone agree), per tenant without `scope.*`, else per instance. The memo's
        validity interval is checked against each caller's own engine time."""
        roots = rule.residual_roots
        if roots <= {"local"}:
            return (rule.name, "zone", self._calendar(tkey).name)
        return (rule.name, tkey, inst if "scope" in roots else ())

    def _clock_change(self, rule: CompiledRule, tkey: str, now: float) -> float:
        """Engine time at which the clock alone could next change the rule's answer."""
        step = rule.clock_step_s
        if step == 0:
            return INFINITY
        minute_start = now // 60 * 60
        if step == 3600:  # the next local hour start (zones may be offset by 30 or 45 minutes)
            calendar = self._calendar(tkey)
            local = calendar.local(minute_start)
            due = minute_start + (60 - local.minute) * 60
            if calendar.local(due - 60).utcoffset() != local.utcoffset():
                return minute_start + 60  # the offset changes first (Pacific/Chatham at :45)
            if "unit" in rule.roots:  # its windows turn at the UTC hour
                due = min(due, (now // 3600 + 1) * 3600)
            return due
        return minute_start + 60

    def _truth(self, rule: CompiledRule, budget: CompiledBudget, inst: tuple[str, ...], tkey: str, period: Period,
               figures: dict[str, float], window: dict[str, float] | None, now: float, spend: int = 0,
               limit: int = 0, unit: UnitView | None = None) -> bool:
        if rule.residual is None:
            return True
        minute = int(now // 60)
        scope = dict(zip(budget.spec.for_each, inst))
        tier = self.rules.tenant(tkey).tier if tkey != GLOBAL else self.rules.default_tenant.tier
        try:
            if rule.residual_time_only:  # same answer until the clock can change it
                memo_key = self._memo_key(rule, tkey, inst)
                memo = self._memo.get(memo_key)
                if memo is not None and memo[0] <= now < memo[1]:
                    return memo[2]
                context = ev_.time_context(self._calendar(tkey), minute * 60.0, period,
                                           None if tkey == GLOBAL else tkey, tier, scope)
                self.stats.cel_evaluations += 1
                result = bool(rule.residual.execute(context))
                self._memo[memo_key] = (minute * 60.0, self._clock_change(rule, tkey, now), result)
                return result
            context = ev_.time_context(self._calendar(tkey), minute * 60.0, period,
                                       None if tkey == GLOBAL else tkey, tier, scope)
            self.stats.cel_evaluations += 1
            full = ev_.full_context(context, figures, budget.name, period, window)
            if "forecast" in rule.roots:
                full["forecast"] = self._forecast(budget, inst, tkey, period, now, spend, limit)
            if "anomaly" in rule.roots:
                full["anomaly"] = self._anomaly.context((tkey, budget.name, inst), now, budget.detectors,
                                                        budget.warm_gated)
            if "unit" in rule.roots:
                view = unit if unit is not None else self._unit.view(tkey, unit_key(budget.name, inst), now)
                full["unit"] = view.context(rule.unit_reads)
            return bool(rule.program.execute(full))
        except Exception:  # noqa: BLE001 - any CEL runtime error means 'not true', counted
            self.stats.rule_errors[rule.name] = self.stats.rule_errors.get(rule.name, 0) + 1
            return False

    def _forecast(self, budget: CompiledBudget, inst: tuple[str, ...], tkey: str, period: Period, now: float,
                  spend: int, limit: int) -> dict[str, Any]:
        """``forecast.*`` for one instance: the profile is built once per local day, the projection
        once per minute (within a minute, spend moves the forecast one for one)."""
        key = (tkey, budget.index, inst)
        minute = int(now // 60)
        memo = self._forecasts.get(key)
        if memo is not None and memo[0] == minute and memo[1] == period.id:
            _, _, seen_spend, fc = memo
            shift = spend - seen_spend
            return ev_.forecast_context(fc.end_nanos + shift, fc.low_nanos + shift, fc.high_nanos + shift, limit,
                                        fc.exhausts_at, now, budget.spec.period)
        history = history_hours(self.state, ("hist", tkey, budget.name, inst), now)
        if len(self._forecasts) >= _MATCH_CACHE_MAX:  # bounded: idle instances rebuild theirs
            self._forecasts.clear()
            self._profiles.clear()
        profile = self._profiles.get(key)
        if profile is None or not profile.day_start <= now < profile.day_end:
            profile = self._profiles[key] = build_profile(history, self._calendar(tkey), now)
        fc = project(profile, history, period, now, spend, limit)
        self._forecasts[key] = (minute, period.id, spend, fc)
        return ev_.forecast_context(fc.end_nanos, fc.low_nanos, fc.high_nanos, limit, fc.exhausts_at, now,
                                    budget.spec.period)

    def _fire(self, rule: CompiledRule, budget: CompiledBudget, inst: tuple[str, ...], tkey: str, period: Period,
              spend: int, limit: int, figures: dict[str, float], now: float, effects: list[Effect]) -> None:
        spec = rule.spec
        scope = dict(zip(budget.spec.for_each, inst))
        for dim in budget.spec.scope:
            values = budget.spec.scope_values(dim)
            scope[dim] = values[0] if values and len(values) == 1 else ",".join(values or ())
        fingerprint = hashlib.sha1(f"{spec.name}|{tkey}|{'/'.join(inst)}|{period.id}".encode()).hexdigest()[:16]
        ratio = figures["used_ratio"]
        summary = spec.summary or f"{budget.name} ({budget.spec.period} {period.id}) at {ratio:.0%} of its limit"
        if "anomaly" in rule.roots:
            found = self._anomaly.reasons((tkey, budget.name, inst))
            summary = "; ".join([summary] + found)
        unit = None
        if "unit" in rule.roots:
            unit = self._unit.figures(tkey, unit_key(budget.name, inst), now)
            summary = f"{summary}; {unit_summary(unit, spec.when)}"
        verdict = None
        fields: list[str] = []
        if spec.decide is not None and rule.decide_tiers:
            reason = f"{summary} (rule {spec.name})"
            verdict = make_verdict(rule, reason, self.rules.version, iso_utc(period.end), iso_utc(now))
            fields = decision_fields(budget, scope, rule.decide_tiers)
        shadow = spec.mode == "shadow"
        self.state[("fire", tkey, spec.name, inst)] = {
            "period_id": period.id, "since": now, "fingerprint": fingerprint,
            "fields": [] if shadow else fields, "budget": budget.name, "scope": scope,
        }
        if verdict is not None and not shadow:
            for name in fields:
                self._contribute(tkey, name, spec.name, verdict, effects)
        elapsed = min(1.0, max(0.0, (now - period.start) / (period.end - period.start)))
        tenant = None if tkey == GLOBAL else tkey
        self.stats.alerts_fired += 1
        effects.append(AlertFiring(
            fingerprint=fingerprint, rule=spec.name, severity=spec.severity, summary=summary,
            tenant_id=tenant, scope=scope, budget=budget.name, period=budget.spec.period, period_id=period.id,
            period_end=iso_utc(period.end), spend_usd=usd_text((spend)), limit_usd=usd_text((limit)),
            used_ratio=round(ratio, 6), expected_usd=usd_text((int(limit * elapsed))),
            **self._evidence(tenant, scope.get("use_case_id"), self._calendar(tkey).period("day", now).id),
            notify=list(spec.notify), runbook=spec.runbook, decision=verdict, shadow=shadow,
            rules_version=self.rules.version, rule_file=rule.file, rule_line=rule.line, at=iso_utc(now),
            labels=dict(spec.labels),
            anomaly=self._anomaly.evidence((tkey, budget.name, inst)) if "anomaly" in rule.roots else None,
            unit=unit,
        ))

    def _evidence(self, tenant: str | None, use_case: str | None, day_id: str) -> dict[str, Any]:
        """Top contributors and sample traces, computed once per scope while facts stand still:
        one event often fires several rules of one scope (the cache is emptied when facts move)."""
        key = (tenant, use_case, day_id)
        found = self._evidence_cache.get(key)
        if found is None:
            found = self._evidence_cache[key] = {
                "contributors": self.facts.contributors(tenant, use_case, day_id),
                "sample_trace_ids": self.facts.trace_ids(tenant, use_case, day_id)}
        return found

    def _resolve_key(self, fire_key: tuple[Any, ...], reason: str, effects: list[Effect]) -> None:
        firing = self.state.pop(fire_key)
        tkey, rule_name = fire_key[1], fire_key[2]
        for name in firing["fields"]:
            self._contribute(tkey, name, rule_name, None, effects)
        effects.append(AlertResolved(
            fingerprint=firing["fingerprint"], rule=rule_name, tenant_id=None if tkey == GLOBAL else tkey,
            scope=firing["scope"], budget=firing["budget"], period_id=firing["period_id"], reason=reason,
            at=iso_utc(self._frontier(tkey)),
        ))

    def _refresh_verdict(self, rule: CompiledRule, budget: CompiledBudget, inst: tuple[str, ...], tkey: str,
                         period: Period, fire_key: tuple[Any, ...], firing: dict[str, Any],
                         effects: list[Effect]) -> None:
        """After a reload, re-issue a firing rule's verdict under the new rule-set version, on the
        fields its (possibly edited) decision now covers, and withdraw it from the others."""
        spec = rule.spec
        fields: list[str] = []
        if spec.decide is not None and rule.decide_tiers and spec.mode != "shadow":
            fields = decision_fields(budget, dict(zip(budget.spec.for_each, inst)), rule.decide_tiers)
        for name in firing["fields"]:
            if name not in fields:
                self._contribute(tkey, name, rule.name, None, effects)
        if fields:
            reason = f"{spec.summary or budget.name + ' over its threshold'} (rule {spec.name})"
            verdict = make_verdict(rule, reason, self.rules.version, iso_utc(period.end), iso_utc(firing["since"]))
            for name in fields:
                self._contribute(tkey, name, rule.name, verdict, effects)
        if fields != firing["fields"]:
            self.state[fire_key] = dict(firing, fields=fields)

    def _contribute(self, tkey: str, name: str, rule_name: str, verdict: dict[str, Any] | None,
                    effects: list[Effect]) -> None:
        key = ("verdicts", tkey, name)
        contributions = dict(self.state.get(key) or {})
        before = strictest(contributions)
        if verdict is None:
            contributions.pop(rule_name, None)
        else:
            contributions[rule_name] = verdict
        after = strictest(contributions)
        if contributions:
            self.state[key] = contributions
        else:
            self.state.pop(key, None)
        if after != before:
            self.stats.decisions_changed += 1
            effects.append(DecisionChanged(tkey, name, after, iso_utc(self._frontier(tkey))))

    def _rebuild_indexes(self) -> None:
        """Derive the in-memory indexes of rules from state (after a restart or a rule swap)."""
        self._watch.clear()
        self._due.clear()
        self._queued.clear()
        index = {budget.name: budget.index for budget in self._budgets}
        # Instances of these may be waiting for the clock (guards hold, `local.hour >= 14` not
        # yet): re-check every one on the first tick, which keeps watching only those that need it.
        timed = {budget.name for budget in self._budgets if any(rule.time_dependent for rule in budget.rules)}
        for key, value in self.state.items():
            kind = key[0]
            if kind == "clock":
                self._clock[key[1]] = max(self._clock.get(key[1], 0.0), value)
            elif kind == "fire" and value["budget"] in index:
                self._watch.setdefault(key[1], {})[(index[value["budget"]], key[3])] = 0.0
            elif kind == "spend" and key[2] in timed:
                self._watch.setdefault(key[1], {})[(index[key[2]], key[3])] = 0.0
        self._due.extend((0.0, tkey, entry[0], entry[1]) for tkey, watched in self._watch.items() for entry in watched)
        self._queued.update(self._due)
        heapq.heapify(self._due)
