"""Budget status of a tenant: spend, limit, burn rates and forecast of every budget instance.

Pure: reads an Engine's state at a given time, so the worker's ``/status`` page, the
``spendwarden status`` command and tests all compute the same figures. Spend is the exact
counter of the current period; burn rates and the forecast come from the instance's hourly
history (``streams/history.py``, ``streams/forecast.py``).
"""

from __future__ import annotations

from typing import Any, Optional

from spendwarden.streams.engine import GLOBAL, Engine
from spendwarden.streams.forecast import forecast
from spendwarden.streams.history import history_hours
from spendwarden.streams.money import usd_text
from spendwarden.streams.periods import iso_utc


def tenant_status(engine: Engine, tenant_id: str, now: float, use_case: Optional[str] = None) -> list[dict[str, Any]]:
    """One entry per budget instance of the tenant that has spent in the history window or the
    current period; with ``use_case``, that use case's instances and the tenant-wide ones."""
    state = engine.state
    instances: dict[tuple[str, tuple[str, ...]], None] = {}
    for key in list(state.keys()):
        if key[0] in ("hist", "spend") and key[1] == tenant_id:
            instances[(key[2], key[3])] = None
    calendar = engine.calendar(tenant_id)
    found = []
    for name, inst in sorted(instances):
        try:
            budget = engine.rules.budget(name)
        except KeyError:
            continue  # removed by a reload; its counters wait for their period to pass
        scope = dict(zip(budget.spec.for_each, inst))
        if use_case is not None and not _covers_use_case(budget.spec, scope, use_case):
            continue
        limit = engine.rules.limit_nanos(budget, tenant_id)
        period = calendar.period(budget.spec.period, now)
        counter = state.get(("spend", tenant_id, name, inst, period.id))
        spend = counter[0] if counter else 0
        predicted = forecast(history_hours(state, ("hist", tenant_id, name, inst), now), period, now, spend, limit,
                             calendar)
        figures = predicted.to_dict()
        found.append({
            "budget": name, "scope": scope, "period": budget.spec.period, "period_id": period.id,
            "period_end": iso_utc(period.end),
            "spend_usd": usd_text(spend), "limit_usd": None if limit is None else usd_text(limit),
            "used_ratio": None if not limit else round(spend / limit, 6),
            "burn_1h_usd_per_hour": figures.pop("burn_1h_usd_per_hour"),
            "burn_24h_usd_per_hour": figures.pop("burn_24h_usd_per_hour"),
            "exhausts_at": figures.pop("exhausts_at"),
            "forecast": figures,
        })
    return found


def _covers_use_case(spec: Any, scope: dict[str, str], use_case: str) -> bool:
    """Whether a budget instance counts the use case: its own, or tenant-wide (unless the budget's
    scope names other use cases)."""
    if "use_case_id" in scope:
        return scope["use_case_id"] == use_case
    allowed = spec.scope_values("use_case_id")
    return allowed is None or use_case in allowed


def status_report(engine: Engine, tenant_id: str, now: float, use_case: Optional[str] = None) -> dict[str, Any]:
    """The ``/status`` answer for one tenant (budgets spanning tenants are not a tenant's status)."""
    if tenant_id == GLOBAL:
        raise ValueError("status is per tenant")
    return {"tenant": tenant_id, "at": iso_utc(now), "rules_version": engine.rules.version,
            "budgets": tenant_status(engine, tenant_id, now, use_case)}
