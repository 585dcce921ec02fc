"""Which ``cost_event_id``s a tenant has counted, by event time: producer-duplicate detection.

Why this layout: the service checkpoints each changed state key whole, as one changelog
record, and Kafka refuses records over 1 MB. One key per (tenant, 10-minute bucket) grew with
a busy tenant's rate (about 27 events/s at 60 bytes an id filled 1 MB) and was rewritten whole
at every checkpoint. So the ids of a bucket are kept in append-only chunks of at most
``CHUNK_IDS`` ids, one state key each; only the open chunk changes, so a checkpoint writes one
small record per busy bucket whatever the rate. Lookups go through an in-memory index of the
bucket's ids, rebuilt from the chunks after a restart.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

from spendwarden.streams.engine_state import Position

BUCKET_S = 600
# Copies of one id whose event times differ by up to this many seconds are still found (across
# a bucket edge): clock drift between a gateway and the span of the same call.
EDGE_S = 60.0
# A chunk closes at whichever comes first. The byte cap keeps a chunk far under 1 MB whatever
# the ids hold (200 control characters encode to 1,202 bytes); the id cap keeps the record a
# checkpoint rewrites small for ordinary ids (~60 KB at 36 characters).
CHUNK_IDS = 1024
CHUNK_BYTES = 256 * 1024
_ENTRY_OVERHEAD = 24  # quotes, colon, comma and a position of up to 20 digits


def _entry_bytes(event_id: str) -> int:
    return len(orjson.dumps(event_id)) + _ENTRY_OVERHEAD


class _Bucket:
    """The ids of one (tenant, bucket) and which chunk new ids go to."""

    __slots__ = ("ids", "chunk", "chunk_size", "chunk_bytes")

    def __init__(self) -> None:
        self.ids: dict[str, Position] = {}
        self.chunk = 0
        self.chunk_size = 0
        self.chunk_bytes = 0

    def close_if_full(self) -> None:
        if self.chunk_size >= CHUNK_IDS or self.chunk_bytes >= CHUNK_BYTES:
            self.chunk += 1
            self.chunk_size = self.chunk_bytes = 0


class SeenIds:
    """First position of each id per tenant, in state keys ``("seen", tenant, bucket, chunk)``."""

    __slots__ = ("state", "_buckets", "_tenants_by_bucket")

    def __init__(self, state: MutableMapping[Any, Any]) -> None:
        self.state = state
        self._buckets: dict[tuple[str, int], _Bucket] = {}
        self._tenants_by_bucket: dict[int, set[str]] = {}  # so pruning visits only old buckets
        self.rebuild()

    def first_position(self, tenant: str, ts: float, event_id: str, pos: Position) -> Position | None:
        """The position ``event_id`` was first counted at, or None after remembering ``pos``."""
        number = int(ts // BUCKET_S)
        where = (tenant, number)
        bucket = self._buckets.get(where)
        if bucket is None:
            bucket = self._buckets[where] = _Bucket()
            self._tenants_by_bucket.setdefault(number, set()).add(tenant)
        else:
            previous = bucket.ids.get(event_id)
            if previous is not None:
                return previous
        # Two copies of one call may carry slightly different times (a gateway's cost event and
        # the OTel span of the same call, docs/traces.md): near a bucket edge, look next door too.
        into = ts - number * BUCKET_S
        if into < EDGE_S or into > BUCKET_S - EDGE_S:
            neighbour = self._buckets.get((tenant, number - 1 if into < EDGE_S else number + 1))
            if neighbour is not None:
                previous = neighbour.ids.get(event_id)
                if previous is not None:
                    return previous
        bucket.ids[event_id] = pos
        key = ("seen", tenant, where[1], bucket.chunk)
        chunk = self.state.get(key)
        if chunk is None:
            chunk = {}
        chunk[event_id] = pos
        self.state[key] = chunk
        bucket.chunk_size = len(chunk)
        bucket.chunk_bytes += _entry_bytes(event_id)
        bucket.close_if_full()
        return None

    def prune(self, oldest: Callable[[str], float], newest_limit: float) -> int:
        """Forget buckets that end before ``oldest(tenant)`` (event time), which is at most
        ``newest_limit`` for every tenant; returns how many."""
        dropped = 0
        for bucket_no in sorted(self._tenants_by_bucket):
            # A bucket is kept EDGE_S past its end: its ids are still looked up from the next one.
            if (bucket_no + 1) * BUCKET_S + EDGE_S > newest_limit:
                break
            tenants = self._tenants_by_bucket[bucket_no]
            for tenant in [t for t in tenants if (bucket_no + 1) * BUCKET_S + EDGE_S <= oldest(t)]:
                bucket = self._buckets.pop((tenant, bucket_no))
                self.state.pop(("seen", tenant, bucket_no), None)  # layout before chunks
                for chunk in range(bucket.chunk + 1):
                    self.state.pop(("seen", tenant, bucket_no, chunk), None)
                tenants.discard(tenant)
                dropped += 1
            if not tenants:
                del self._tenants_by_bucket[bucket_no]
        return dropped

    def rebuild(self) -> None:
        """Index the chunks found in state (after a restart, a recovery or a rule swap)."""
        self._buckets.clear()
        self._tenants_by_bucket.clear()
        for key, ids in self.state.items():
            if key[0] != "seen":
                continue
            # ("seen", tenant, bucket) is the layout before chunks: its ids are indexed, new
            # ones go to chunks, and pruning deletes it with the bucket.
            tenant, bucket_no = key[1], key[2]
            chunk = key[3] if len(key) > 3 else -1
            bucket = self._buckets.get((tenant, bucket_no))
            if bucket is None:
                bucket = self._buckets[(tenant, bucket_no)] = _Bucket()
                self._tenants_by_bucket.setdefault(bucket_no, set()).add(tenant)
            for event_id, pos in ids.items():
                # The same id in two chunks cannot happen; if it did, the first position wins.
                if event_id not in bucket.ids or pos < bucket.ids[event_id]:
                    bucket.ids[event_id] = pos
            if chunk > bucket.chunk or (chunk == bucket.chunk and len(ids) > bucket.chunk_size):
                bucket.chunk, bucket.chunk_size = chunk, len(ids)
                bucket.chunk_bytes = sum(_entry_bytes(event_id) for event_id in ids)
        for bucket in self._buckets.values():
            bucket.close_if_full()
