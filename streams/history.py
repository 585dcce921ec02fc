"""Hourly spend of one budget instance: what burn rates and forecasts are computed from.

Kept as one dense list ``[first_hour, fence, nanos, nanos, ...]`` (hour = ``int(ts // 3600)``, UTC),
at most ``HISTORY_HOURS`` long: a list of small ints is the cheapest shape to update in place
on every event and to write to the changelog (JSON), and hours without spend are shared zeros.
Eight days give an hour-of-day profile over the last seven whole days; an hour-of-week profile
would need more than two weeks per instance, which the memory budget does not allow
(docs/forecast.md).

History is statistics, not money, but it is updated only where the spend counter is and
carries its own position fence, so restarts, duplicates and partial checkpoints leave it exact
too (for budgets across tenants only up to a crash mid-checkpoint: their positions are per
tenant, and one fence per tenant per hour series is not worth its memory).
"""

from __future__ import annotations

from typing import Any

HISTORY_HOURS = 8 * 24
HEADER = 2  # [first_hour, fence, values...]


def history_add(series: Any, ts: float, nanos: int, fence: int | None = None) -> list[int]:
    """Add spend at ``ts``; returns the (possibly new) list. More than HISTORY_HOURS before the
    newest hour: dropped.

    ``fence`` is the event's source position: a position at or below the last one applied is
    skipped, so a key checkpointed ahead of the counter (a crash mid-checkpoint) is not counted
    twice on redelivery. Budgets across tenants pass None (their positions are per tenant).
    """
    hour = int(ts // 3600)
    if not series:
        return [hour, -1 if fence is None else fence, nanos]
    if not isinstance(series, list):
        series = list(series)
    if fence is not None:
        if series[1] >= fence:
            return series
        series[1] = fence
    first = series[0]
    index = hour - first + HEADER
    length = len(series)
    if index < length:
        if index >= HEADER:
            series[index] += nanos
        elif length - index <= HISTORY_HOURS:  # earlier than the series, still within range
            series[HEADER:HEADER] = [nanos] + [0] * (HEADER - index - 1)
            series[0] = hour
        return series
    series.extend([0] * (index - length))
    series.append(nanos)
    excess = len(series) - HEADER - HISTORY_HOURS
    if excess > 0:
        del series[HEADER:excess + HEADER]
        series[0] = first + excess
    return series


def history_hours(series: Any) -> dict[int, int]:
    """The series as ``{hour: nanos}`` for hours with spend (what the forecast reads)."""
    if not series:
        return {}
    first = series[0]
    return {first + i: v for i, v in enumerate(series[HEADER:]) if v}


def history_span(series: Any) -> tuple[int, int] | None:
    """First and last hour the series covers, or None when empty."""
    if not series:
        return None
    return series[0], series[0] + len(series) - HEADER - 1
