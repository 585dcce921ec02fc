"""Hourly spend per budget instance (streams/history.py): day keys, the fence, the window."""

from __future__ import annotations

from typing import Any

import orjson

from spendwarden.streams.checkpoint import decode_value, encode_value
from spendwarden.streams.history import HISTORY_DAYS, history_add, history_hours

H = 3600.0
DAY = 20_000  # a UTC day index
BASE = DAY * 86400.0
P = ("hist", "acme", "uc-day", ("acme", "chat"))


def test_hours_of_a_day_share_one_key_and_the_hours_map_skips_empty_ones() -> None:
    state: dict[Any, Any] = {}
    history_add(state, P, BASE + 10, 5, fence=1)
    history_add(state, P, BASE + 20, 7, fence=2)
    history_add(state, P, BASE + 3 * H + 1, 11, fence=3)
    history_add(state, P, BASE + 25 * H, 2, fence=4)
    assert state[P + (DAY,)] == [3, 12, 0, 0, 11] + [0] * 20
    assert history_hours(state, P, BASE + 25 * H) == {DAY * 24: 12, DAY * 24 + 3: 11, DAY * 24 + 25: 2}


def test_fence_skips_positions_already_applied_per_day() -> None:
    state: dict[Any, Any] = {}
    history_add(state, P, BASE, 5, fence=10)
    history_add(state, P, BASE, 5, fence=10)
    history_add(state, P, BASE + H, 5, fence=9)
    assert sum(state[P + (DAY,)][1:]) == 5
    history_add(state, P, BASE + H, 5)  # across tenants: no fence
    assert sum(state[P + (DAY,)][1:]) == 10


def test_a_new_day_drops_the_days_that_left_the_window_and_reads_stop_at_it() -> None:
    state: dict[Any, Any] = {}
    for day in range(0, 3 * HISTORY_DAYS, 2):  # an instance spending every other day
        history_add(state, P, BASE + day * 86400, 1, fence=day)
    days = sorted(key[4] - DAY for key in state)
    last = 3 * HISTORY_DAYS - 2
    assert days == [d for d in range(0, last + 1, 2) if d > last - HISTORY_DAYS]
    hours = history_hours(state, P, BASE + last * 86400 + 60)
    assert len(hours) == len(days)


def test_a_day_back_from_the_changelog_keeps_working() -> None:
    state: dict[Any, Any] = {}
    history_add(state, P, BASE, 5, fence=1)
    state = {key: decode_value(orjson.loads(encode_value(value))) for key, value in state.items()}
    history_add(state, P, BASE + H, 2, fence=2)
    assert state[P + (DAY,)][:3] == [2, 5, 2]
