"""Spend of reservable budgets as gateways read it when they reserve a call's cost.

A budget with ``reservations: true`` has its exact spend published to Redis after every batch
(``sw:{tenant}:spend``, one field per budget instance, docs/redis.md "Reservations"), and the
cost events counted into it release their reservations (``sw:{tenant}:reservations``, field =
the call's ``cost_event_id``) in the same atomic script. A gateway's reservation script then
holds a call's expected cost against ``limit − spend − open reservations``, so concurrent
gateways overshoot a budget by at most what calls cost beyond their reservations.

Which budgets cover a call, and their limits, come from the rules (``templates``, published
as ``sw:reservable``): a budget instance nobody has spent in yet has no spend field, and
its first calls must still be held against its limit.

Pure: turns rules and what the engine recorded into values; the publisher writes them.
"""

from __future__ import annotations

from typing import Any

from spendwarden.rules.compiler import CompiledBudget

Fields = dict[str, dict[str, Any]]


def spend_field(budget: CompiledBudget, inst: tuple[str, ...]) -> str:
    """``<use case>|<budget>``, or ``*|<budget>`` for a tenant-wide budget."""
    for_each = budget.spec.for_each
    use_case = inst[for_each.index("use_case_id")] if "use_case_id" in for_each else "*"
    return f"{use_case}|{budget.name}"


def spend_value(budget: CompiledBudget, spend: int, limit: int, period_end: float) -> dict[str, Any]:
    """What the reservation script needs: spend and limit in nano-dollars, the period's end
    (after it the spend counts as 0), and which risk tiers and use cases the budget covers."""
    tiers = budget.spec.scope_values("risk_tier")
    use_cases = budget.spec.scope_values("use_case_id")
    return {"spend": spend, "limit": limit, "end": period_end,
            "tiers": list(tiers) if tiers is not None else None,
            "use_cases": list(use_cases) if use_cases is not None else None}


def take(engine: Any) -> tuple[dict[str, Fields], dict[str, list[str]]]:
    """Drain what the engine recorded since the last call: fields per tenant, settled event ids."""
    fields: dict[str, Fields] = {}
    for (tenant, _name, inst), (spend, period, slot) in engine.reserved.items():
        fields.setdefault(tenant, {})[spend_field(slot.budget, inst)] = spend_value(
            slot.budget, spend, slot.limit, period.end)
    settled = {tenant: list(dict.fromkeys(ids)) for tenant, ids in engine.settled.items()}
    engine.reserved.clear()
    engine.settled.clear()
    return fields, settled


def restore(engine: Any, settled: dict[str, list[str]]) -> None:
    """Give back settled ids whose release failed, so the next publication releases them."""
    for tenant, ids in settled.items():
        engine.settled.setdefault(tenant, []).extend(ids)


def pending_settled(engine: Any) -> dict[str, list[str]]:
    """Settled ids waiting for a publication (after a failed one), drained."""
    settled = {tenant: list(dict.fromkeys(ids)) for tenant, ids in engine.settled.items()}
    engine.settled.clear()
    return settled


def snapshot(engine: Any, tenants: set[str] | None, now: float) -> dict[str, Fields]:
    """Every reservable budget instance's spend in its current period, from the engine state
    (after a partition was recovered: what Redis holds may predate a crash)."""
    reservable = {b.name: b for b in engine.rules.budgets if b.spec.reservations and b.per_tenant}
    fields: dict[str, Fields] = {}
    if not reservable:
        return fields
    for key, value in list(engine.state.items()):
        if key[0] != "spend" or key[2] not in reservable or (tenants is not None and key[1] not in tenants):
            continue
        _, tenant, name, inst, period_id = key
        budget = reservable[name]
        period = engine.calendar(tenant).period(budget.spec.period, now)
        limit = engine.rules.limit_nanos(budget, tenant)
        if period.id != period_id or limit is None:
            continue
        fields.setdefault(tenant, {})[spend_field(budget, inst)] = spend_value(budget, value[0], limit, period.end)
    return fields


def templates(rules: Any) -> dict[str, Any]:
    """The reservable budgets for gateways: which calls each covers and its limit per tenant.

    ``limit`` applies to tenants not listed in ``tenant_limits`` (None: the budget does not
    apply to them, e.g. a ``limit_by_tier`` without their tier)."""
    budgets = []
    for budget in rules.budgets:
        if not (budget.spec.reservations and budget.per_tenant):
            continue
        default = rules.limit_nanos(budget, None)
        listed = {t: rules.limit_nanos(budget, t) for t in rules.tenants}
        tiers, use_cases = budget.spec.scope_values("risk_tier"), budget.spec.scope_values("use_case_id")
        budgets.append({"budget": budget.name, "per_use_case": "use_case_id" in budget.spec.for_each,
                        "tiers": list(tiers) if tiers is not None else None,
                        "use_cases": list(use_cases) if use_cases is not None else None,
                        "limit": default, "tenant_limits": {t: v for t, v in listed.items() if v != default}})
    return {"version": 1, "rules_version": rules.version, "budgets": budgets}
