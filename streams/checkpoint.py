"""Engine state in memory per partition, checkpointed to a Faust table's changelog per commit.

Why: a Faust table write per event produces a changelog record per event (FACTS: 3k
events/s); the engine does ~10 state writes per event. So the engine works on a plain dict
that remembers which keys changed (``DirtyState``), and right before Faust commits source
offsets only those keys are written to the table's changelog (docs/service.md).
A crash therefore loses at most state the next run re-applies, and the engine's position
fences make re-applying exact.

Table keys are ``(partition, *engine_key)`` so each changelog record lands in the partition of
the source records that produced it, and a worker that is assigned partition p recovers
exactly the state of the tenants in p.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import orjson

_MISSING = object()


class DirtyState(dict):  # type: ignore[type-arg]
    """A dict that records which keys were set or deleted since the last ``take_dirty``."""

    __slots__ = ("dirty",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dirty: set[Any] = set()

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self.dirty.add(key)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self.dirty.add(key)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        if key in self:
            self.dirty.add(key)
        if default is _MISSING:
            return dict.pop(self, key)
        return dict.pop(self, key, default)

    def take_dirty(self) -> Iterator[tuple[Any, Any]]:
        """(key, value or None when deleted) for every changed key; clears the dirty set."""
        dirty, self.dirty = self.dirty, set()
        for key in dirty:
            yield key, dict.get(self, key)


# Kinds of keys written after all others in a checkpoint: a unit bucket's update is derived from
# its trace record (streams/unit.py), so a crash part-way through a checkpoint must never leave a
# trace record saved without the buckets its events updated. The service sends them in a second
# round, once every other key of the checkpoint is acknowledged (a batch that fails for good does
# not stop later batches of its partition), so what lands is always a prefix of this order.
WRITE_LAST = frozenset({"utrace"})


def checkpoint_order(items: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """``(key, value)`` changes in the order a checkpoint sends them: ``WRITE_LAST`` kinds last."""
    first: list[tuple[Any, Any]] = []
    last: list[tuple[Any, Any]] = []
    for item in items:
        (last if item[0][0] in WRITE_LAST else first).append(item)
    return first + last if last else first


def encode_key(partition: int, key: tuple[Any, ...]) -> bytes:
    return orjson.dumps([partition, *key])


def decode_key(raw: Any) -> tuple[int, tuple[Any, ...]]:
    """Accepts the raw bytes, or the list/tuple Faust's JSON changelog reader already decoded."""
    items = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, memoryview, str)) else list(raw)
    return int(items[0]), _tupled(items[1:])


def encode_value(value: Any) -> bytes:
    return orjson.dumps(value)


def decode_value(raw: Any) -> Any:
    """Raw bytes or an already decoded JSON value; ``[nanos, position]`` pairs become tuples again."""
    value = orjson.loads(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else raw
    return tuple(value) if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int) else value


def _tupled(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(_tupled(item) if isinstance(item, list) else item for item in items)
