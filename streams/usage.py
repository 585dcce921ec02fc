"""All-time token and cost totals per (tenant, use case, model): the source of the spend metrics.

Why in engine state: ``token_usage_total`` and ``token_cost_total_usd`` must be exact across
restarts and rebalances (docs/operations.md, "Spend metrics"), so they are counted where money
is counted, behind the same source-position fence, and checkpointed with the budgets. A tally
kept by the metrics code would reset on a restart and double on a rebalance.

Rows are ``(position, input, output, cached, cost nanos, credit nanos)``: costs of negative
adjustments go to ``credit`` as a magnitude, so both money columns only ever grow and can be
exported as counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

KIND = "usage"
Row = tuple[int, int, int, int, int, int]
ZERO: Row = (-1, 0, 0, 0, 0, 0)


def usage_key(tenant: str, use_case: str, model: str) -> tuple[str, str, str, str]:
    return (KIND, tenant, use_case, model)


def add_usage(state: MutableMapping[Any, Any], tenant: str, event: Any, cost_nanos: int, pos: int) -> None:
    """Count one event's tokens and cost once: a position at or below the row's fence is a replay."""
    key = (KIND, tenant, event.use_case_id, event.model_or_service or event.component)
    row = state.get(key)
    if row is None:
        row = ZERO
    elif row[0] >= pos:
        return
    cost, credit = (cost_nanos, 0) if cost_nanos >= 0 else (0, -cost_nanos)
    state[key] = (pos, row[1] + event.input_tokens, row[2] + event.output_tokens, row[3] + event.cached_tokens,
                  row[4] + cost, row[5] + credit)


def usage_rows(items: Iterable[tuple[tuple[Any, ...], Any]]) -> Iterator[tuple[tuple[str, str, str], Row]]:
    """``((tenant, use case, model), row)`` for the usage keys among state items (restored rows
    come back from the changelog as lists)."""
    for key, value in items:
        if key[0] == KIND and value is not None:
            yield (key[1], key[2], key[3]), tuple(value)  # type: ignore[misc]
