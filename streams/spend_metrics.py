"""Spend, budget and decision metrics read from the engines' exact state (docs/operations.md).

Why a collector and not counters incremented per event: a per-worker tally resets on a restart
and doubles on a rebalance. Here every scrape reads the state itself:

- ``token_usage_total`` / ``token_cost_total_usd`` / ``spendwarden_cost_credits_total_usd`` are
  the all-time rows of ``streams/usage.py`` **as of the last checkpoint**. A restarted or newly
  assigned worker restores at least that state, so the exported value never goes down: no
  false counter reset (and no ``rate()`` spike) after a ``kill -9``. They trail the live state
  by at most one commit interval.
- Budget and decision gauges read the live state; a gauge may go down.

Cardinality is bounded: at most ``max_tenants`` / ``max_models`` / ``max_services`` distinct
values per label (tenants named in the rules' ``tenants:`` section always get their own), later
ones fold into ``other`` and are counted in ``spendwarden_metrics_label_overflow``. Budget and
decision gauges are left out for folded tenants (a ratio of ``other`` means nothing). No trace,
event or request id is ever a label.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from spendwarden.rules.schema import LEVEL_ORDER
from spendwarden.streams.engine import GLOBAL, Engine
from spendwarden.streams.money import NANOS_PER_USD
from spendwarden.streams.usage import Row, usage_rows

OTHER = "other"


class LabelCap:
    """The first ``limit`` distinct values of a label keep their name; later ones read ``other``.

    Admission is sticky for the life of the process, so a series never moves into ``other``.
    """

    def __init__(self, name: str, limit: int, pinned: Iterable[str] = ()) -> None:
        self.name = name
        self.limit = limit
        self.pinned = frozenset(pinned)
        self.admitted: set[str] = set()
        self.folded: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.admitted or value in self.pinned:
            return value
        if value in self.folded:
            return OTHER
        if len(self.admitted) < self.limit:
            self.admitted.add(value)
            return value
        self.folded.add(value)
        return OTHER


def _untyped(name: str, documentation: str) -> Metric:
    """A monotonic series whose name does not end in ``_total``: prometheus_client would append
    ``_total`` to a counter's name, so it is exposed as untyped (``rate()`` works the same)."""
    return Metric(name, documentation, "unknown")


class SpendMetrics:
    """A prometheus_client collector over the worker's engines (register it on the worker's registry)."""

    def __init__(self, engines: Callable[[], Mapping[int, Engine]], *, max_tenants: int = 1000,
                 max_models: int = 200, max_services: int = 500, pinned_tenants: Iterable[str] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self._engines = engines
        self._clock = clock
        self.tenants = LabelCap("tenant", max_tenants, pinned_tenants)
        self.models = LabelCap("model", max_models)
        self.services = LabelCap("service", max_services)
        self._rows: dict[int, dict[tuple[str, str, str], Row]] = {}
        self._frozen: Snapshot | None = None

    # ------------------------------------------------------------ fed by the service
    def restored(self, partition: int, items: Iterable[tuple[tuple[Any, ...], Any]]) -> None:
        """A partition's checkpointed state was loaded: its rows are what the changelog holds."""
        self._rows[partition] = dict(usage_rows(items))

    def checkpointed(self, partition: int, items: Iterable[tuple[tuple[Any, ...], Any]]) -> None:
        """Keys of a partition reached the changelog (acknowledged): export their new values."""
        self._rows.setdefault(partition, {}).update(usage_rows(items))

    def dropped(self, partition: int) -> None:
        """The partition went to another worker, which exports it from now on."""
        self._rows.pop(partition, None)

    def set_pinned_tenants(self, tenants: Iterable[str]) -> None:
        self.tenants.pinned = frozenset(tenants)

    # ------------------------------------------------------------ the collector protocol
    def describe(self) -> list[Metric]:
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        """Render the frozen snapshot (``frozen()``), or a fresh one when called on its own."""
        snap = self._frozen if self._frozen is not None else self.snapshot()
        yield from self._render(snap)

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
        rows = [item for partition_rows in list(self._rows.values()) for item in partition_rows.items()]
        budgets: list[tuple[str, str, str, str, int, int]] = []
        decisions: list[tuple[str, str, str, str, int]] = []
        now = self._clock()
        for engine in list(self._engines().values()):
            budgets.extend(_budget_figures(engine, now))
            for tenant, field_name, verdict in engine.all_verdicts():
                parts = field_name.split(":", 2)
                decisions.append((tenant, parts[0], parts[1] if len(parts) > 1 else "high",
                                  parts[2] if len(parts) > 2 else "*", LEVEL_ORDER.get(verdict.get("level", "L0"), 0)))
        return Snapshot(rows, budgets, decisions)

    # ------------------------------------------------------------ rendering
    def _render(self, snap: Snapshot) -> tuple[Metric, ...]:
        families = _families()
        usage, cost, credits, ratio, spend, limit, level, overflow = families
        totals: dict[tuple[str, str, str], list[int]] = {}
        rows = sorted(snap.rows)  # a tenant's first scrape admits in a stable order, whatever the checkpoint's
        for (tenant, use_case, model), row in rows:
            labels = (self.tenants(tenant), self.models(model), self.services(use_case))
            sums = totals.get(labels)
            if sums is None:
                totals[labels] = list(row[1:])
            else:
                for i, value in enumerate(row[1:]):
                    sums[i] += value
        for (tenant, model, service), (tokens_in, tokens_out, tokens_cached, nanos, credit) in totals.items():
            for token_type, value in (("input", tokens_in), ("output", tokens_out), ("cached", tokens_cached)):
                usage.samples.append(Sample("token_usage_total", {"tenant": tenant, "model": model, "type": token_type,
                                                                  "service": service}, value))
            labels = {"tenant": tenant, "model": model, "service": service}
            cost.samples.append(Sample("token_cost_total_usd", labels, nanos / NANOS_PER_USD))
            if credit:  # most series never see a credit; absent reads as 0 in PromQL with `or`
                credits.samples.append(Sample("spendwarden_cost_credits_total_usd", labels, credit / NANOS_PER_USD))
        for tenant, use_case, period, name, nanos, limit_nanos in snap.budgets:
            if tenant != "*" and self.tenants(tenant) == OTHER:
                continue  # a ratio of "other" means nothing
            labels = {"tenant": tenant, "use_case": use_case, "period": period, "budget": name}
            spend.samples.append(Sample("spendwarden_budget_spend_usd", labels, nanos / NANOS_PER_USD))
            limit.samples.append(Sample("spendwarden_budget_limit_usd", labels, limit_nanos / NANOS_PER_USD))
            ratio.samples.append(Sample("spendwarden_budget_used_ratio", labels,
                                        nanos / limit_nanos if limit_nanos else 0.0))
        for tenant, use_case, risk_tier, model, value in snap.decisions:
            if self.tenants(tenant) != OTHER:
                level.samples.append(Sample("spendwarden_decision_level", {
                    "tenant": tenant, "use_case": use_case, "risk_tier": risk_tier, "model": model}, value))
        for cap in (self.tenants, self.models, self.services):
            overflow.samples.append(Sample("spendwarden_metrics_label_overflow", {"label": cap.name},
                                           len(cap.folded)))
        return families


@dataclass(frozen=True)
class Snapshot:
    """What one scrape shows, copied out of the engines."""

    rows: list[tuple[tuple[str, str, str], Row]]
    budgets: list[tuple[str, str, str, str, int, int]]  # tenant, use case, period, budget, nanos, limit
    decisions: list[tuple[str, str, str, str, int]]  # tenant, use case, risk tier, model, level


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


def _budget_figures(engine: Engine, now: float) -> Iterator[tuple[str, str, str, str, int, int]]:
    """(tenant, use case, period kind, budget, spend, limit) of every instance, current period."""
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
        scope = dict(zip(budget.spec.for_each, inst))
        use_case = scope.get("use_case_id") or _single(budget.spec.scope_values("use_case_id")) or "*"
        yield ("*" if tkey == GLOBAL else tkey, use_case, budget.spec.period, name,
               counter[0] if counter else 0, limit_nanos)


def _single(values: Any) -> str | None:
    """The scope's one value of a dimension (a budget scoped to one use case), else None."""
    if values and len(values) == 1:
        return next(iter(values))
    return None
