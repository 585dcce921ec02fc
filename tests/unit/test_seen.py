"""Producer-duplicate state stays in small, bounded keys however busy a tenant is."""

from __future__ import annotations

from spendwarden.streams.checkpoint import DirtyState, encode_key, encode_value
from spendwarden.streams.seen import BUCKET_S, CHUNK_IDS, EDGE_S, SeenIds

KAFKA_MAX_RECORD = 1_000_000  # producer max.request.size default; brokers refuse above ~1 MB
T0 = 1_764_000_000.0 - 1_764_000_000.0 % BUCKET_S


def seen_values(state: dict) -> dict:
    return {key: value for key, value in state.items() if key[0] == "seen"}


def test_a_busy_bucket_is_split_into_chunks_each_under_the_record_limit() -> None:
    state: dict = {}
    seen = SeenIds(state)
    # The largest ids the schema admits, encoded at their longest: 4-byte characters, and
    # control characters that JSON writes as 6-byte escapes.
    ids = [f"{n:06d}" + ("\U0001F4B8" if n % 2 else "\x01") * 194 for n in range(3 * CHUNK_IDS + 5)]
    for n, event_id in enumerate(ids):
        assert seen.first_position("acme", T0 + n % BUCKET_S, event_id, n) is None
    chunks = seen_values(state)
    assert len(chunks) > 3
    assert sum(len(ids) for ids in chunks.values()) == len(ids)
    for key, value in chunks.items():
        assert len(value) <= CHUNK_IDS
        assert len(encode_key(0, key)) + len(encode_value(value)) < KAFKA_MAX_RECORD
    for n, event_id in enumerate(ids):
        assert seen.first_position("acme", T0, event_id, 10**9) == n


def test_ordinary_ids_fill_chunks_of_chunk_ids() -> None:
    state: dict = {}
    seen = SeenIds(state)
    for n in range(3 * CHUNK_IDS + 5):
        seen.first_position("acme", T0, f"{n:08d}-2b7e-4c1a-9f3e-1d2c3b4a5f60", n)
    assert sorted(len(ids) for ids in seen_values(state).values()) == [5, CHUNK_IDS, CHUNK_IDS, CHUNK_IDS]


def test_state_written_before_chunks_still_loads_dedupes_and_prunes() -> None:
    """A checkpoint of the earlier layout, one ("seen", tenant, bucket) key, keeps working."""
    bucket = int(T0 // BUCKET_S)
    state: dict = {("seen", "acme", bucket): {"old-1": 11, "old-2": 12}}
    seen = SeenIds(state)
    assert seen.first_position("acme", T0, "old-2", 99) == 12
    assert seen.first_position("acme", T0, "new-1", 13) is None
    assert state[("seen", "acme", bucket, 0)] == {"new-1": 13}
    assert seen.prune(lambda tenant: T0 + BUCKET_S + EDGE_S, T0 + BUCKET_S + EDGE_S) == 1
    assert seen_values(state) == {}


def test_only_the_open_chunk_changes_so_a_checkpoint_writes_one_key() -> None:
    state = DirtyState()
    seen = SeenIds(state)
    for n in range(2 * CHUNK_IDS + 10):
        seen.first_position("acme", T0, f"id-{n}", n)
    list(state.take_dirty())
    seen.first_position("acme", T0, "one-more", 99_999)
    assert [key for key, _ in state.take_dirty()] == [("seen", "acme", int(T0 // BUCKET_S), 2)]


def test_rebuilt_index_finds_every_id_and_keeps_filling_the_open_chunk() -> None:
    state: dict = {}
    seen = SeenIds(state)
    for n in range(CHUNK_IDS + 3):
        seen.first_position("acme", T0, f"id-{n}", n)
    seen.first_position("beta", T0 + BUCKET_S, "other", 7)
    restored = SeenIds(dict(state))
    for n in range(CHUNK_IDS + 3):
        assert restored.first_position("acme", T0, f"id-{n}", 10**9) == n
    assert restored.first_position("beta", T0 + BUCKET_S, "other", 10**9) == 7
    assert restored.first_position("beta", T0, "other", 8) is None  # another bucket
    assert restored.first_position("acme", T0, "new", 5_000) is None
    assert len(restored.state[("seen", "acme", int(T0 // BUCKET_S), 1)]) == 4


def test_a_full_last_chunk_is_closed_after_a_restart() -> None:
    state: dict = {}
    seen = SeenIds(state)
    for n in range(CHUNK_IDS):
        seen.first_position("acme", T0, f"id-{n}", n)
    restored = SeenIds(state)
    restored.first_position("acme", T0, "next", CHUNK_IDS)
    assert len(state[("seen", "acme", int(T0 // BUCKET_S), 0)]) == CHUNK_IDS
    assert state[("seen", "acme", int(T0 // BUCKET_S), 1)] == {"next": CHUNK_IDS}


def test_prune_drops_buckets_that_ended_before_the_horizon_per_tenant() -> None:
    state: dict = {}
    seen = SeenIds(state)
    for n in range(CHUNK_IDS + 1):
        seen.first_position("acme", T0, f"old-{n}", n)
    seen.first_position("acme", T0 + BUCKET_S, "newer", 1)
    seen.first_position("beta", T0, "kept", 2)
    limits = {"acme": T0 + BUCKET_S + EDGE_S, "beta": T0 + BUCKET_S + EDGE_S - 1}
    assert seen.prune(limits.__getitem__, max(limits.values())) == 1
    assert sorted(key[1:] for key in seen_values(state)) == [
        ("acme", int(T0 // BUCKET_S) + 1, 0), ("beta", int(T0 // BUCKET_S), 0)]
    assert seen.first_position("acme", T0, "old-0", 50) is None  # forgotten: the engine reports it too late


def test_copies_of_one_call_across_a_bucket_edge_are_found_within_the_edge_window() -> None:
    seen = SeenIds({})
    edge = T0 + BUCKET_S
    assert seen.first_position("acme", edge - 0.004, "span-1", 1) is None  # the span ends just before
    assert seen.first_position("acme", edge + 0.002, "span-1", 2) == 1  # the gateway's copy, just after
    assert seen.first_position("acme", edge + 30, "span-2", 3) is None
    assert seen.first_position("acme", edge - 20, "span-2", 4) == 3  # and the other way round
    assert seen.first_position("acme", edge - 100, "span-3", 5) is None
    assert seen.first_position("acme", edge + 100, "span-3", 6) is None  # 200 s apart: two events


def test_a_bucket_outlives_its_end_by_the_edge_window_so_a_late_copy_still_finds_it() -> None:
    seen = SeenIds({})
    edge = T0 + BUCKET_S
    assert seen.first_position("acme", edge - 5, "span-1", 1) is None
    # The horizon has just passed the bucket's end, not its end plus the edge window: kept.
    assert seen.prune(lambda tenant: edge + 10, edge + 10) == 0
    assert seen.first_position("acme", edge + 5, "span-1", 2) == 1
    assert seen.prune(lambda tenant: edge + EDGE_S, edge + EDGE_S) == 1
