"""Hourly spend of one budget instance: what burn rates, forecasts and status are computed from.

One key per instance and UTC day, ``("hist", tenant, budget, instance, day)`` with
``day = hour // 24``, holding ``[fence, nanos x 24]``. A day key is the unit that changes, so
a checkpoint rewrites 25 small ints for a busy instance instead of its whole history (one list
for eight days tripled the changelog bytes per commit); hours without spend are shared zeros.
``HISTORY_DAYS`` days are kept: creating a day's key drops the keys that left the window, so
a live instance never holds more (an instance that stops spending keeps its last keys, as it
keeps its old period counters).

History is statistics, not money, but each day key carries its own position fence, so
restarts, duplicates and partial checkpoints leave it exact too (for budgets across tenants
only up to a crash mid-checkpoint: their positions are per tenant, and they pass no fence).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

HISTORY_DAYS = 8
HISTORY_HOURS = HISTORY_DAYS * 24
_PRUNE_SPAN = 32  # days below the window looked at when a new day starts (after a silence)


def history_add(state: MutableMapping[Any, Any], prefix: tuple[Any, ...], ts: float, nanos: int,
                fence: int | None = None) -> None:
    """Add spend at ``ts`` to the instance whose keys start with ``prefix`` (``("hist", tenant,
    budget, instance)``). ``fence`` is the event's source position: a position at or below the
    last one the day applied is skipped; None (budgets across tenants) always adds."""
    hour = int(ts // 3600)
    day = hour // 24
    key = prefix + (day,)
    series = state.get(key)
    if series is None:
        series = [-1] + [0] * 24
        for old in range(day - HISTORY_DAYS - _PRUNE_SPAN, day - HISTORY_DAYS + 1):
            state.pop(prefix + (old,), None)
    elif not isinstance(series, list):
        series = list(series)
    if fence is not None:
        if series[0] >= fence:
            return
        series[0] = fence
    series[1 + hour % 24] += nanos
    state[key] = series


def history_hours(state: MutableMapping[Any, Any], prefix: tuple[Any, ...], now: float) -> dict[int, int]:
    """``{hour: nanos}`` for hours with spend in the window ending at ``now`` (what the forecast
    reads); the day after ``now`` is included for events stamped slightly ahead of it."""
    today = int(now // 86400)
    hours: dict[int, int] = {}
    for day in range(today - HISTORY_DAYS + 1, today + 2):
        series = state.get(prefix + (day,))
        if series:
            first = day * 24
            hours.update((first + i, v) for i, v in enumerate(series[1:]) if v)
    return hours
