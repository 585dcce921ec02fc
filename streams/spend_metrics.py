"""Spend, budget and decision metrics read from the engines' exact state (docs/metrics.md).

Why a collector and not counters incremented per event: a per-worker tally resets on a restart
and doubles on a rebalance. Here every scrape reads the state itself:

- ``token_usage_total`` / ``token_cost_total_usd`` / ``spendwarden_cost_credits_total_usd`` are
  the all-time rows of ``streams/usage.py`` **as of the last checkpoint**. A restarted or newly
  assigned worker restores at least that state, so the exported value never goes down: no
  false counter reset (and no ``rate()`` spike) after a ``kill -9``.
- Budget and decision gauges read the live state; a gauge may go down.

Every spend series carries its ``partition``, and label caps are applied per partition from the
state alone (first appearance, pinned tenants first): a partition's series, its ``other``
buckets included, are the same whichever worker exports them, and move whole on a rebalance.
No trace, event or request id is ever a label.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from spendwarden.rules.schema import LEVEL_ORDER
from spendwarden.streams.engine import GLOBAL, Engine
from spendwarden.streams.money import NANOS_PER_USD
from spendwarden.streams.usage import Row, usage_rows

OTHER = "other"
_OWN_DIMS = ("tenant_id", "use_case_id")  # budget dimensions that have labels of their own


@dataclass(frozen=True)
class Snapshot:
    """What one scrape shows, copied out of the engines on the event loop."""

    rows: dict[int, list[tuple[tuple[str, str, str], Row]]]  # per partition
    budgets: dict[int, list[tuple[str, str, str, str, str, int, int]]]  # tenant, use case, period, budget,
    #                                                               scope, spend, limit
    decisions: dict[int, list[tuple[str, str, str, str, int]]]  # tenant, use case, risk tier, model, level
    pinned: frozenset[str]


def admitted(first_seen: Mapping[str, int], limit: int, pinned: frozenset[str] = frozenset()) -> set[str]:
    """The values that keep their own series: pinned ones, then the ``limit`` seen first.

    Decided from positions in the partition's state, so every worker decides alike, and a value
    once admitted stays admitted (later values only ever come after it).
    """
    found = {value for value in first_seen if value in pinned}
    ranked = sorted((pos, value) for value, pos in first_seen.items() if value not in pinned)
    found.update(value for _, value in ranked[:limit])
    return found


class SpendMetrics:
    """A prometheus_client collector over the worker's engines (register it on the worker's registry)."""

    def __init__(self, engines: Callable[[], Mapping[int, Engine]], *, max_tenants: int = 250,
                 max_models: int = 50, max_services: int = 100, pinned_tenants: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self._engines = engines
        self._clock = clock
        self.max_tenants, self.max_models, self.max_services = max_tenants, max_models, max_services
        self.pinned = frozenset(pinned_tenants)
        self._rows: dict[int, dict[tuple[str, str, str], Row]] = {}
        self._frozen: Snapshot | None = None
        self._owner = threading.current_thread()  # the event loop's: the only one that may read engines

    # ------------------------------------------------------------ fed by the service
    def restored(self, partition: int, items: Iterable[tuple[tuple[Any, ...], Any]]) -> None:
        """A partition's checkpointed state was loaded: its rows are what the changelog holds."""
        self._rows[partition] = dict(usage_rows(items))

    def checkpointed(self, partition: int, items: Iterable[tuple[tuple[Any, ...], Any]]) -> None:
        """Keys of an owned partition reached the changelog (acknowledged): export their new values.
        A partition revoked meanwhile is not brought back (its new owner exports it)."""
        rows = self._rows.get(partition)
        if rows is not None:
            rows.update(usage_rows(items))

    def dropped(self, partition: int) -> None:
        """The partition went to another worker, which exports it from now on."""
        self._rows.pop(partition, None)

    def set_pinned_tenants(self, tenants: Iterable[str]) -> None:
        self.pinned = frozenset(tenants)

    # ------------------------------------------------------------ the collector protocol
    def describe(self) -> list[Metric]:
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        """Render the frozen snapshot (``frozen()``), or a fresh one on the engines' own thread."""
        snap = self._frozen
        if snap is None:
            if threading.current_thread() is not self._owner:
                return  # never read engine state from another thread; this scrape has no spend series
            snap = self.snapshot()
        yield from self.render(snap)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Take the snapshot here (the event loop, which owns the state) so that rendering it can
        run in another thread: /metrics formats hundreds of thousands of lines at full caps."""
        self._frozen = self.snapshot()
        try:
            yield
        finally:
            self._frozen = None

    # ------------------------------------------------------------ reading state
    def snapshot(self) -> Snapshot:
        """Copy what the metrics show out of the engines: cheap, no formatting, no label folding."""
        now = self._clock()
        budgets: dict[int, list[tuple[str, str, str, str, str, int, int]]] = {}
        decisions: dict[int, list[tuple[str, str, str, str, int]]] = {}
        for partition, engine in list(self._engines().items()):
            budgets[partition] = list(_budget_figures(engine, now))
            found = decisions[partition] = []
            for tenant, field_name, verdict in engine.all_verdicts():
                parts = field_name.split(":", 2)
                found.append((tenant, parts[0], parts[1] if len(parts) > 1 else "high",
                              parts[2] if len(parts) > 2 else "*", LEVEL_ORDER.get(verdict.get("level", "L0"), 0)))
        rows = {partition: list(found.items()) for partition, found in list(self._rows.items())}
        return Snapshot(rows, budgets, decisions, self.pinned)

    # ------------------------------------------------------------ rendering (any thread)
    def render(self, snap: Snapshot) -> tuple[Metric, ...]:
        families = _families()
        usage, cost, credits, ratio, spend, limit, level, overflow = families
        folded = {"tenant": 0, "model": 0, "service": 0}
        tenants_of: dict[int, set[str]] = {}
        for partition, rows in snap.rows.items():
            tenants, models, services = self._admit(rows, snap.pinned, folded)
            tenants_of[partition] = tenants
            totals: dict[tuple[str, str, str], list[int]] = {}
            for (tenant, use_case, model), row in rows:
                labels = (tenant if tenant in tenants else OTHER, model if model in models else OTHER,
                          use_case if use_case in services else OTHER)
                sums = totals.get(labels)
                if sums is None:
                    totals[labels] = list(row[2:])
                else:
                    for i, value in enumerate(row[2:]):
                        sums[i] += value
            part = str(partition)
            for (tenant, model, service), (tokens_in, tokens_out, tokens_cached, nanos, credit) in totals.items():
                for token_type, value in (("input", tokens_in), ("output", tokens_out), ("cached", tokens_cached)):
                    usage.samples.append(Sample("token_usage_total", {
                        "tenant": tenant, "model": model, "type": token_type, "service": service,
                        "partition": part}, value))
                labels_of = {"tenant": tenant, "model": model, "service": service, "partition": part}
                cost.samples.append(Sample("token_cost_total_usd", labels_of, nanos / NANOS_PER_USD))
                credits.samples.append(Sample("spendwarden_cost_credits_total_usd", labels_of, credit / NANOS_PER_USD))
        for partition, figures in snap.budgets.items():
            own = tenants_of.get(partition, set())
            for tenant, use_case, period, name, scope, nanos, limit_nanos in figures:
                if tenant != "*" and tenant not in own:
                    continue  # folded into "other" (or nothing counted yet): a ratio of "other" means nothing
                labels_of = {"tenant": tenant, "use_case": use_case, "period": period, "budget": name, "scope": scope}
                spend.samples.append(Sample("spendwarden_budget_spend_usd", labels_of, nanos / NANOS_PER_USD))
                limit.samples.append(Sample("spendwarden_budget_limit_usd", labels_of, limit_nanos / NANOS_PER_USD))
                ratio.samples.append(Sample("spendwarden_budget_used_ratio", labels_of,
                                            nanos / limit_nanos if limit_nanos else 0.0))
        for partition, found in snap.decisions.items():
            own = tenants_of.get(partition, set())
            for tenant, use_case, risk_tier, model, value in found:
                if tenant in own:
                    level.samples.append(Sample("spendwarden_decision_level", {
                        "tenant": tenant, "use_case": use_case, "risk_tier": risk_tier, "model": model}, value))
        for label, count in folded.items():
            overflow.samples.append(Sample("spendwarden_metrics_label_overflow", {"label": label}, count))
        return families

    def _admit(self, rows: list[tuple[tuple[str, str, str], Row]], pinned: frozenset[str],
               folded: dict[str, int]) -> tuple[set[str], set[str], set[str]]:
        """Per partition: the tenants, models and use cases that keep their own series."""
        firsts: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        for (tenant, use_case, model), row in rows:
            for seen, value in zip(firsts, (tenant, model, use_case)):
                known = seen.get(value)
                if known is None or row[1] < known:
                    seen[value] = row[1]
        tenants = admitted(firsts[0], self.max_tenants, pinned)
        models = admitted(firsts[1], self.max_models)
        services = admitted(firsts[2], self.max_services)
        for label, seen, kept in (("tenant", firsts[0], tenants), ("model", firsts[1], models),
                                  ("service", firsts[2], services)):
            folded[label] += len(seen) - len(kept)
        return tenants, models, services


def _untyped(name: str, documentation: str) -> Metric:
    """A monotonic series whose name does not end in ``_total``: prometheus_client would append
    ``_total`` to a counter's name, so it is exposed as untyped (``rate()`` works the same)."""
    return Metric(name, documentation, "unknown")


def _families() -> tuple[Metric, ...]:
    return (
        Metric("token_usage", "Tokens counted (exact, as of the last checkpoint)", "counter"),
        _untyped("token_cost_total_usd", "Spend in USD counted (exact, as of the last checkpoint); "
                 "credits of negative adjustments are apart"),
        _untyped("spendwarden_cost_credits_total_usd", "Magnitude of negative adjustment events in USD "
                 "(net spend = token_cost_total_usd - this)"),
        Metric("spendwarden_budget_used_ratio", "Spend over limit in the current period", "gauge"),
        Metric("spendwarden_budget_spend_usd", "Spend in the current period", "gauge"),
        Metric("spendwarden_budget_limit_usd", "Limit of the current period", "gauge"),
        Metric("spendwarden_decision_level", "Decided level per field: 0..6 = L0 L1 L2 L3 L4 throttle block "
               "(fields at L0 are absent)", "gauge"),
        Metric("spendwarden_metrics_label_overflow", "Distinct label values folded into 'other'", "gauge"),
    )


def _budget_figures(engine: Engine, now: float) -> Iterator[tuple[str, str, str, str, str, int, int]]:
    """(tenant, use case, period kind, budget, scope, spend, limit) of every instance, current period.

    ``scope`` names the instance's other dimensions (``model_or_service=gpt-4o``), so two
    instances of one budget never share a label set; ``*`` when there are none.
    """
    state = engine.state
    instances: dict[tuple[str, str, tuple[str, ...]], None] = {}
    for key in list(state.keys()):
        if key[0] == "spend":
            instances[(key[1], key[2], key[3])] = None
    for tkey, name, inst in instances:
        try:
            budget = engine.rules.budget(name)
        except KeyError:
            continue  # removed by a reload; its counters wait for their period to pass
        limit_nanos = engine.rules.limit_nanos(budget, None if tkey == GLOBAL else tkey)
        if limit_nanos is None:
            continue
        period = engine.calendar(tkey).period(budget.spec.period, max(engine.frontier(tkey), now))
        counter = state.get(("spend", tkey, name, inst, period.id))
        dims = dict(zip(budget.spec.for_each, inst))
        use_case = dims.get("use_case_id") or _single(budget.spec.scope_values("use_case_id")) or "*"
        scope = ",".join(f"{dim}={value}" for dim, value in dims.items() if dim not in _OWN_DIMS) or "*"
        yield ("*" if tkey == GLOBAL else tkey, use_case, budget.spec.period, name, scope,
               counter[0] if counter else 0, limit_nanos)


def _single(values: Any) -> str | None:
    """The scope's one value of a dimension (a budget scoped to one use case), else None."""
    if values and len(values) == 1:
        return next(iter(values))
    return None
