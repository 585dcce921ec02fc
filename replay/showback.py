"""Showback: a period's spend by business unit, cost center, use case and model, with unit costs.

Pure: priced events and outcomes in, rows out. ``spendwarden report showback`` reads the files
(``spendwarden/cli_showback.py``) and ``docs/showback.md`` shows examples. The definitions are
stated here because every figure must be explainable from the input records:

* **Period.** ``2026-11`` (month), ``2026-11-25`` (day) or ``2026-W48`` (ISO week, Monday to
  Sunday). An event belongs to the period when its ``ts`` falls in the period *in its tenant's
  time zone* (the rules' ``tenants:`` section, default UTC), with the same ``Calendar`` the
  engine's budgets use, so a month here is the month a monthly budget counted.
* **Duplicates.** Copies of one ``(tenant_id, cost_event_id)`` count once, the first read wins,
  as in the engine. Copies are caught near the period's edges too (``EDGE_S``), so a copy stamped
  just outside the period cannot sneak the event in twice. Adjustments (negative costs) count.
* **Spend** is the exact sum of the events' nano-dollar costs; rows never lose a nano-dollar.
* **Join.** An outcome joins the events of its tenant that carry its ``trace_id`` and the events
  of its tenant whose ``business_outcome_id`` is its own id. Outcomes are identified by
  ``(tenant_id, business_outcome_id)``; a repeated id is a duplicate (first read wins). An
  outcome counts in a period when it joins at least one event counted in that period.
* **Joined spend** of a group: spend of the group's events that joined at least one outcome
  (each event once, however many outcomes it joins). **Unjoined spend** is the rest;
  **unjoined share** = unjoined spend / spend (blank when spend is 0).
* **Cost per outcome** = joined spend / number of distinct outcomes joined to the group's events.
* **Cost per resolved case** = spend of the group's events joined to at least one ``resolved``
  outcome / number of distinct ``resolved`` outcomes joined to the group's events.
* Ratios are rounded once, half-even, to a whole nano-dollar. An outcome whose events fall in
  several groups counts once in each of them and once in the total, so outcome counts of groups
  may add up to more than the total's; spend always adds up exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction
from typing import get_args

from spendwarden.streams.events import Outcome, OutcomeKind, PricedEvent, epoch_seconds
from spendwarden.streams.periods import Calendar, zone
from spendwarden.streams.seen import EDGE_S

SHOWBACK_DIMENSIONS: tuple[str, ...] = (
    "business_unit", "cost_center", "use_case_id", "model_or_service", "tenant_id", "environment",
)
DEFAULT_BY: tuple[str, ...] = ("business_unit", "cost_center", "use_case_id", "model_or_service")
OUTCOME_KINDS: tuple[str, ...] = get_args(OutcomeKind)
NONE = "(none)"
PERIOD_HELP = "a month (2026-11), a day (2026-11-25) or an ISO week (2026-W48)"

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_TENANT = SHOWBACK_DIMENSIONS.index("tenant_id")

Key = tuple[str, ...]
# A cell: the six dimension values, then the event's trace_id and business_outcome_id.
CellKey = tuple[tuple[str, ...], str | None, str | None]
OutcomeKey = tuple[str, str]  # (tenant_id, business_outcome_id)


@dataclass(frozen=True)
class ReportPeriod:
    """A calendar period named the way people ask for it; its bounds depend on the time zone."""

    text: str
    kind: str  # "day", "week" (ISO, Monday start) or "month": the engine's period kinds
    first: date  # the local first day, which is also the engine's period id

    @classmethod
    def parse(cls, text: str) -> "ReportPeriod":
        """``2026-11``, ``2026-11-25`` or ``2026-W48``; ValueError naming the accepted forms."""
        value = text.strip()
        try:
            if value[:4].isdigit() and not 1970 <= int(value[:4]) <= 9998:
                raise ValueError("year out of range")  # the period's end must exist too
            if match := _MONTH.match(value):
                return cls(value, "month", date(int(match[1]), int(match[2]), 1))
            if _DAY.match(value):
                return cls(value, "day", date.fromisoformat(value))
            if match := _WEEK.match(value):
                return cls(value, "week", date.fromisocalendar(int(match[1]), int(match[2]), 1))
        except (ValueError, OverflowError):
            pass  # a month 13, a 31 November or a week 54: the same message below
        raise ValueError(f"{text!r} is not a period: use {PERIOD_HELP}")

    def bounds(self, timezone_name: str) -> tuple[float, float]:
        """``[start, end)`` in UTC epoch seconds, by the engine's Calendar in that zone.

        Local noon of the first day is inside the period whatever the DST rules, and the
        Calendar returns the period holding it; its id must be our first day.
        """
        calendar = Calendar(timezone_name, "monday")  # ISO weeks start on Monday
        noon = datetime(self.first.year, self.first.month, self.first.day, 12, tzinfo=zone(timezone_name))
        found = calendar.period(self.kind, noon.timestamp())
        assert found.id == self.first.isoformat(), (found, self)
        return found.start, found.end


@dataclass
class ShowbackStats:
    """What was read and why some of it was not counted (printed on stderr by the CLI)."""

    events: int = 0
    duplicates: int = 0
    outside_period: int = 0
    outcomes: int = 0
    outcome_duplicates: int = 0


@dataclass
class _Cell:
    spend: int = 0
    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class ShowbackRow:
    """One group's figures; money in exact nano-dollars, ratios derived on demand."""

    key: tuple[str, ...]
    spend_nanos: int = 0
    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    joined_nanos: int = 0
    resolved_nanos: int = 0
    outcome_ids: set[OutcomeKey] = field(default_factory=set, repr=False)
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOME_KINDS, 0))

    @property
    def outcomes(self) -> int:
        """Distinct outcomes joined to this group's events."""
        return len(self.outcome_ids)

    @property
    def unjoined_nanos(self) -> int:
        return self.spend_nanos - self.joined_nanos

    @property
    def unjoined_share(self) -> Fraction | None:
        """Unjoined spend / spend; None when spend is 0 (adjustments may make it leave [0, 1])."""
        return Fraction(self.unjoined_nanos, self.spend_nanos) if self.spend_nanos else None

    @property
    def cost_per_outcome_nanos(self) -> int | None:
        return _per(self.joined_nanos, self.outcomes)

    @property
    def cost_per_resolved_nanos(self) -> int | None:
        return _per(self.resolved_nanos, self.by_kind["resolved"])


def _per(nanos: int, count: int) -> int | None:
    """Exact ratio rounded once, half-even, to a whole nano-dollar; None for no outcomes."""
    return round(Fraction(nanos, count)) if count else None


def _utc(_tenant: str) -> str:
    return "UTC"


class Showback:
    """Counts priced events and outcomes of one period; ``rows(by)`` groups them on demand.

    Events are kept as cells (dimension values, trace id, outcome id) so events and outcomes
    may arrive in any order: the join happens in ``rows``. Memory grows with the number of
    distinct traces and outcome ids of the period, not with the number of events.
    """

    def __init__(self, period: ReportPeriod | None = None, zone_of: Callable[[str], str] = _utc) -> None:
        self.period = period
        self.zone_of = zone_of
        self.stats = ShowbackStats()
        self._bounds: dict[str, tuple[float, float]] = {}
        self._seen: set[tuple[str, str]] = set()
        self._cells: dict[CellKey, _Cell] = {}
        self._outcomes: dict[OutcomeKey, Outcome] = {}

    def bounds(self, tenant_id: str) -> tuple[float, float]:
        """The period in the tenant's zone (all time without a period), computed once per tenant."""
        found = self._bounds.get(tenant_id)
        if found is None:
            everything = (float("-inf"), float("inf"))
            found = self.period.bounds(self.zone_of(tenant_id)) if self.period else everything
            self._bounds[tenant_id] = found
        return found

    def add_event(self, priced: PricedEvent) -> bool:
        """Count the event if it is in the period and not a copy; True when counted."""
        event, ts = priced.event, priced.ts
        start, end = self.bounds(event.tenant_id)
        if not start - EDGE_S <= ts < end + EDGE_S:
            self.stats.outside_period += 1  # too far out to be a copy of a counted event
            return False
        ident = (event.tenant_id, event.cost_event_id)
        if ident in self._seen:
            self.stats.duplicates += 1
            return False
        self._seen.add(ident)
        if not start <= ts < end:
            self.stats.outside_period += 1
            return False
        dims = tuple(getattr(event, name) or NONE for name in SHOWBACK_DIMENSIONS)
        key = (dims, event.trace_id, event.business_outcome_id)
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell()
        cell.spend += priced.cost_nanos
        cell.events += 1
        cell.input_tokens += event.input_tokens
        cell.output_tokens += event.output_tokens
        self.stats.events += 1
        return True

    def add_outcome(self, outcome: Outcome) -> bool:
        """Keep the outcome for the join unless its id was seen for the tenant; True when kept."""
        key = (outcome.tenant_id, outcome.business_outcome_id)
        if key in self._outcomes:
            self.stats.outcome_duplicates += 1
            return False
        self._outcomes[key] = outcome
        self.stats.outcomes += 1
        return True

    def rows(self, by: Sequence[str] = DEFAULT_BY) -> list[ShowbackRow]:
        """One row per group of ``by`` values, largest spend first (ties by the values)."""
        picks = _picks(by)
        groups = self._aggregate(lambda dims: tuple(dims[i] for i in picks))
        return sorted(groups.values(), key=lambda row: (-row.spend_nanos, row.key))

    def total(self) -> ShowbackRow:
        """All counted events as one row (each outcome once)."""
        return self._aggregate(lambda dims: ()).get((), ShowbackRow(()))

    def unjoined_outcomes(self) -> list[Outcome]:
        """Outcomes stamped in the period (tenant's zone) that joined no counted event."""
        joined: set[OutcomeKey] = set()
        for matches in self._joins().values():
            joined.update(matches)
        found = []
        for key, outcome in self._outcomes.items():
            start, end = self.bounds(outcome.tenant_id)
            if key not in joined and start <= epoch_seconds(outcome.ts) < end:
                found.append(outcome)
        return sorted(found, key=lambda o: (o.tenant_id, o.business_outcome_id))

    # ------------------------------------------------------------------ the join
    def _joins(self) -> dict[CellKey, frozenset[OutcomeKey]]:
        """The outcomes each cell's events join (cells that join none are left out)."""
        by_trace: dict[tuple[str, str], list[OutcomeKey]] = {}
        for key, outcome in self._outcomes.items():
            if outcome.trace_id:
                by_trace.setdefault((outcome.tenant_id, outcome.trace_id), []).append(key)
        joins: dict[CellKey, frozenset[OutcomeKey]] = {}
        for cell_key in self._cells:
            dims, trace_id, outcome_id = cell_key
            tenant = dims[_TENANT]
            matches = set(by_trace.get((tenant, trace_id), ())) if trace_id else set()  # "" is no trace
            if outcome_id is not None and (tenant, outcome_id) in self._outcomes:
                matches.add((tenant, outcome_id))
            if matches:
                joins[cell_key] = frozenset(matches)
        return joins

    def _aggregate(self, group_of: Callable[[Key], Key]) -> dict[Key, ShowbackRow]:
        joins = self._joins()
        groups: dict[tuple[str, ...], ShowbackRow] = {}
        for cell_key, cell in self._cells.items():
            group = group_of(cell_key[0])
            row = groups.get(group)
            if row is None:
                row = groups[group] = ShowbackRow(group)
            row.spend_nanos += cell.spend
            row.events += cell.events
            row.input_tokens += cell.input_tokens
            row.output_tokens += cell.output_tokens
            matches = joins.get(cell_key)
            if matches:
                self._join_into(row, cell, matches)
        return groups

    def _join_into(self, row: ShowbackRow, cell: _Cell, matches: Iterable[OutcomeKey]) -> None:
        row.joined_nanos += cell.spend
        resolved = False
        for key in matches:
            kind = self._outcomes[key].outcome
            resolved = resolved or kind == "resolved"
            if key not in row.outcome_ids:
                row.outcome_ids.add(key)
                row.by_kind[kind] += 1
        if resolved:
            row.resolved_nanos += cell.spend


def _picks(by: Sequence[str]) -> list[int]:
    """Indexes of the grouping dimensions; ValueError for an unknown or repeated name."""
    unknown = [name for name in by if name not in SHOWBACK_DIMENSIONS]
    if unknown:
        allowed = ", ".join(SHOWBACK_DIMENSIONS)
        raise ValueError(f"cannot group by {', '.join(unknown)}: choose from {allowed}")
    if len(set(by)) != len(by):
        raise ValueError(f"a dimension is repeated in {','.join(by)}")
    return [SHOWBACK_DIMENSIONS.index(name) for name in by]
