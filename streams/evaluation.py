"""Rule evaluation for one budget instance: figures, guards, CEL context, windows.

Pure functions over numbers the engine hands in. Time variables use the engine clock at
minute resolution, so results that depend only on time are memoised per minute.
"""

from __future__ import annotations

from typing import Any

from spendwarden.rules.compiler import CompiledRule
from spendwarden.streams.money import NANOS_PER_USD
from spendwarden.streams.periods import Calendar, Period

WINDOW_MINUTES = 60


def budget_figures(spend_nanos: int, limit_nanos: int) -> dict[str, float]:
    """The numeric ``budget.*`` figures rules compare against."""
    return {
        "spend_usd": spend_nanos / NANOS_PER_USD,
        "limit_usd": limit_nanos / NANOS_PER_USD,
        "used_ratio": spend_nanos / limit_nanos,
        "remaining_usd": (limit_nanos - spend_nanos) / NANOS_PER_USD,
    }


def window_add(buckets: list[list[int]] | None, minute: int, nanos: int) -> list[list[int]]:
    """Add spend to a ring of one-minute buckets ``[minute, nanos, calls]``, oldest first."""
    if buckets is None:
        buckets = []
    if buckets and buckets[-1][0] == minute:
        last = buckets[-1]
        last[1] += nanos
        last[2] += 1
        return buckets
    if buckets and buckets[-1][0] > minute:
        for bucket in buckets:  # out of order inside the window: find or insert
            if bucket[0] == minute:
                bucket[1] += nanos
                bucket[2] += 1
                return buckets
        if minute > buckets[-1][0] - WINDOW_MINUTES:
            buckets.append([minute, nanos, 1])
            buckets.sort()
        return buckets
    buckets.append([minute, nanos, 1])
    cutoff = minute - WINDOW_MINUTES
    while buckets and buckets[0][0] <= cutoff:
        buckets.pop(0)
    return buckets


def window_figures(buckets: list[list[int]] | None, now_minute: int) -> dict[str, float]:
    """Sliding sums over the last 5 and 60 minutes ending at ``now_minute`` (inclusive)."""
    spend_5m = spend_1h = 0
    calls_5m = calls_1h = 0
    for minute, nanos, calls in buckets or ():
        age = now_minute - minute
        if 0 <= age < WINDOW_MINUTES:
            spend_1h += nanos
            calls_1h += calls
            if age < 5:
                spend_5m += nanos
                calls_5m += calls
    return {
        "spend_usd_5m": spend_5m / NANOS_PER_USD,
        "spend_usd_1h": spend_1h / NANOS_PER_USD,
        "calls_5m": float(calls_5m),
        "calls_1h": float(calls_1h),
    }


def guards_pass(rule: CompiledRule, budget: dict[str, float], window: dict[str, float] | None,
                anomaly: dict[str, float] | None = None, unit: Any = None) -> bool:
    """Whether every numeric guard of the rule holds."""
    for guard in rule.guards:
        if guard.root == "unit":  # `unit.day.outcomes`: a window's figure
            window_name, figure = guard.name.split(".", 1)
            value = 0.0 if unit is None else unit.figure(window_name, figure)  # a unit.UnitView
        else:
            source = budget if guard.root == "budget" else window if guard.root == "window" else anomaly
            # Without figures the value is what CEL would see: 0 (full_context's defaults).
            value = 0.0 if source is None else source[guard.name]
        if not (value > guard.threshold if guard.strict else value >= guard.threshold):  # NaN fails, as in CEL
            return False
    return True


def time_context(calendar: Calendar, now: float, period: Period, tenant_id: str | None, tier: str,
                 scope: dict[str, str]) -> dict[str, Any]:
    """CEL variables that change only with the clock."""
    local = calendar.local(now)
    length = period.end - period.start
    return {
        "local": {
            "hour": local.hour,
            "minute": local.minute,
            "weekday": local.weekday(),
            "day": local.day,
            "month": local.month,
        },
        "period": {
            "elapsed_ratio": min(1.0, max(0.0, (now - period.start) / length)),
            "hours_left": max(0.0, (period.end - now) / 3600.0),
        },
        "tenant": {"id": tenant_id or "", "tier": tier},
        "scope": scope,
    }


def full_context(time_ctx: dict[str, Any], budget: dict[str, float], budget_name: str, period: Period,
                 window: dict[str, float] | None) -> dict[str, Any]:
    """Every CEL variable for one evaluation."""
    context = dict(time_ctx)
    context["budget"] = dict(budget, name=budget_name, period=period.kind, period_id=period.id)
    context["window"] = window or {"spend_usd_5m": 0.0, "spend_usd_1h": 0.0, "calls_5m": 0.0, "calls_1h": 0.0}
    return context


def forecast_context(end_nanos: int, low_nanos: int, high_nanos: int, limit_nanos: int, exhausts_at: float | None,
                     now: float, kind: str) -> dict[str, Any]:
    """``forecast.*`` for a rule: the budget's period end, also under its kind (``forecast.day``)."""
    figures: dict[str, Any] = {
        "end_ratio": end_nanos / limit_nanos if limit_nanos else 0.0,
        "end_usd": end_nanos / NANOS_PER_USD,
        "low_usd": low_nanos / NANOS_PER_USD,
        "high_usd": high_nanos / NANOS_PER_USD,
        # Hours until the limit is reached at the forecast's pace; a large number when not this period.
        "hours_to_exhaustion": 1e9 if exhausts_at is None else max(0.0, (exhausts_at - now) / 3600.0),
    }
    return dict(figures, **{kind: dict(figures)})
