"""Small pieces of engine state: source positions, counters, and alert evidence (facts).

Facts are evidence for alerts (top models, workflow steps, use cases, recent trace ids per
tenant, use case and local day); they are not money, so they are not fenced by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spendwarden.streams.money import usd_text

Position = int
_INDEX_BITS = 20  # up to ~1M events in one record


def position(offset: int, index: int = 0) -> Position:
    """A totally ordered source position from (offset or line, index inside the record)."""
    if not 0 <= index < (1 << _INDEX_BITS):
        raise ValueError(f"index {index} out of range for one record (max {(1 << _INDEX_BITS) - 1})")
    return (offset << _INDEX_BITS) | index


def split_position(pos: Position) -> tuple[int, int]:
    """Back to (offset, index)."""
    return pos >> _INDEX_BITS, pos & ((1 << _INDEX_BITS) - 1)


@dataclass
class EngineStats:
    """Counters the service exports as metrics and replay prints in its summary."""

    events: int = 0
    duplicates: int = 0
    late_spend: int = 0
    too_late: int = 0
    cel_evaluations: int = 0
    alerts_fired: int = 0
    decisions_changed: int = 0
    outcomes: int = 0  # distinct outcomes taken in (duplicates and too-late ones not)
    outcome_duplicates: int = 0
    outcome_too_late: int = 0  # outcomes older than the dedupe horizon (not counted)
    rule_errors: dict[str, int] = field(default_factory=dict)


TOP = 3
TRACES = 5


class Facts:
    """Per (tenant, local day, use case): spend by model and workflow step, recent trace ids.

    Kept in memory, not in the state mapping: evidence is not money, is never checkpointed, and
    in the mapping it cost a dirty mark per event in the worker and grew by a key per tenant,
    use case and day forever. Each tenant keeps only its newest local day: alerts read the day of
    the tenant's engine time, which no event of the tenant is ahead of, so an older day is never
    read again (a late event of an older day adds nothing).
    """

    __slots__ = ("days",)

    def __init__(self) -> None:
        # tenant -> {its newest local day id (ISO date, so ids sort by time): use case -> facts}
        self.days: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def add(self, tenant: str, event: Any, cost: int, day_id: str) -> None:
        by_day = self.days.get(tenant)
        if by_day is None:
            by_day = self.days[tenant] = {}
        use_cases = by_day.get(day_id)
        if use_cases is None:
            if by_day and day_id < next(iter(by_day)):
                return  # a late event of an older day: never read
            by_day.clear()
            use_cases = by_day[day_id] = {}
        facts = use_cases.get(event.use_case_id)
        if facts is None:
            facts = use_cases[event.use_case_id] = {"models": {}, "steps": {}, "traces": []}
        models = facts["models"]
        model = event.model_or_service or event.component
        models[model] = models.get(model, 0) + cost
        step = event.workflow_step or "none"
        steps = facts["steps"]
        steps[step] = steps.get(step, 0) + cost
        if event.trace_id:
            traces = facts["traces"]
            if event.trace_id not in traces:
                traces.append(event.trace_id)
                if len(traces) > TRACES:
                    del traces[0]

    def _days(self, tenant: str | None, use_case: str | None, day_id: str) -> list[tuple[str, dict[str, Any]]]:
        if tenant is None:
            return []
        use_cases = self.days.get(tenant, {}).get(day_id, {})
        if use_case:
            facts = use_cases.get(use_case)
            return [] if facts is None else [(use_case, facts)]
        return sorted(use_cases.items())

    def contributors(self, tenant: str | None, use_case: str | None, day_id: str) -> dict[str, list[list[Any]]]:
        """Top models, steps and (tenant-wide) use cases by spend today, as [name, usd] pairs."""
        models: dict[str, int] = {}
        steps: dict[str, int] = {}
        use_cases: dict[str, int] = {}
        for uc, facts in self._days(tenant, use_case, day_id):
            for name, nanos in facts["models"].items():
                models[name] = models.get(name, 0) + nanos
            for name, nanos in facts["steps"].items():
                steps[name] = steps.get(name, 0) + nanos
            use_cases[uc] = sum(facts["models"].values())
        result = {"models": _top(models), "workflow_steps": _top(steps)}
        if use_case is None:
            result["use_cases"] = _top(use_cases)
        return result

    def trace_ids(self, tenant: str | None, use_case: str | None, day_id: str) -> list[str]:
        found: list[str] = []
        for _, facts in self._days(tenant, use_case, day_id):
            found.extend(facts["traces"])
        return found[-TRACES:]


def _top(spend: dict[str, int]) -> list[list[Any]]:
    ranked = sorted(spend.items(), key=lambda item: (-item[1], item[0]))[:TOP]
    return [[name, usd_text(nanos)] for name, nanos in ranked]
