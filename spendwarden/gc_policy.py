"""Garbage-collector thresholds for long runs over a large engine state.

The engine keeps its state as many small lists and dicts that live for the whole run (budget
counters, minute buckets, detector states) and makes almost no cyclic garbage. CPython's
default thresholds (700, 10, 10) run a young collection every 700 net allocations and, every
hundred of those, a full one that walks the whole state: in ``bench/detectors.py`` (17,000
scopes with detectors) full collections took 8 of 45 seconds and found nothing to free.
Raising the thresholds keeps cycles collected, just less often; memory is unchanged (the
collections were not freeing any).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# (young, middle, old): a young collection every 10,000 net allocations, a middle one every 10 of
# those, a full one every 10 middle ones (CPython also skips a full one while the objects
# pending promotion are under a quarter of the long-lived ones).
ENGINE_THRESHOLDS = (10_000, 10, 10)


def use_engine_thresholds() -> tuple[int, int, int]:
    """Set ENGINE_THRESHOLDS for the rest of the process (the worker); returns the previous ones."""
    previous = gc.get_threshold()
    gc.set_threshold(*ENGINE_THRESHOLDS)
    return previous


@contextmanager
def engine_thresholds() -> Iterator[None]:
    """ENGINE_THRESHOLDS while the block runs (a replay), the previous thresholds after."""
    previous = use_engine_thresholds()
    try:
        yield
    finally:
        gc.set_threshold(*previous)
