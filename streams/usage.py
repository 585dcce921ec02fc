"""All-time token and cost totals per (tenant, use case, model): the source of the spend metrics.

Why in engine state: ``token_usage_total`` and ``token_cost_total_usd`` must be exact across
restarts and rebalances (docs/operations.md, "Spend metrics"), so they are counted where money
is counted, behind the same source-position fence, and checkpointed with the budgets. A tally
kept by the metrics code would reset on a restart and double on a rebalance.

Rows are ``(position, first position, input, output, cached, cost nanos, credit nanos)``: costs
of negative adjustments go to ``credit`` as a magnitude, so both money columns only ever grow and
can be exported as counters. The first position orders a partition's tenants, models and use
cases by first appearance, which decides (from state alone, so the same on any worker) which of
them get their own series when a label is capped (streams/spend_metrics.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

KIND = "usage"
Row = tuple[int, int, int, int, int, int, int]


def add_usage(state: MutableMapping[Any, Any], tenant: str, event: Any, cost_nanos: int, pos: int) -> None:
    """Count one event's tokens and cost once: a position at or below the row's fence is a replay."""
    key = (KIND, tenant, event.use_case_id, event.model_or_service or event.component)
    row = state.get(key)
    cost, credit = (cost_nanos, 0) if cost_nanos >= 0 else (0, -cost_nanos)
    if row is None:
        state[key] = (pos, pos, event.input_tokens, event.output_tokens, event.cached_tokens, cost, credit)
    elif row[0] < pos:
        state[key] = (pos, row[1], row[2] + event.input_tokens, row[3] + event.output_tokens,
                      row[4] + event.cached_tokens, row[5] + cost, row[6] + credit)


def usage_rows(items: Iterable[tuple[tuple[Any, ...], Any]]) -> Iterator[tuple[tuple[str, str, str], Row]]:
    """``((tenant, use case, model), row)`` for the usage keys among state items (restored rows
    come back from the changelog as lists)."""
    for key, value in items:
        if key[0] == KIND and value is not None:
            yield (key[1], key[2], key[3]), tuple(value)  # type: ignore[misc]
