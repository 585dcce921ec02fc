"""Hourly spend series (streams/history.py): in-place updates, gaps, pruning, the fence."""

from __future__ import annotations

import orjson

from spendwarden.streams.history import HISTORY_HOURS, history_add, history_hours, history_span

H = 3600.0
BASE = 500_000 * H  # an hour boundary


def test_same_hour_adds_gap_hours_are_zero_and_hours_map_skips_them() -> None:
    series = history_add(None, BASE + 10, 5, fence=1)
    series = history_add(series, BASE + 20, 7, fence=2)
    series = history_add(series, BASE + 3 * H + 1, 11, fence=3)
    assert series == [500_000, 3, 12, 0, 0, 11]
    assert history_hours(series) == {500_000: 12, 500_003: 11}
    assert history_span(series) == (500_000, 500_003)


def test_fence_skips_positions_already_applied() -> None:
    series = history_add(None, BASE, 5, fence=10)
    assert history_add(series, BASE, 5, fence=10) == [500_000, 10, 5]
    assert history_add(series, BASE + H, 5, fence=9) == [500_000, 10, 5]
    assert history_add(series, BASE + H, 5, fence=None)[2:] == [5, 5]  # across tenants: no fence


def test_older_than_the_series_is_dropped_and_length_is_bounded() -> None:
    series = history_add(None, BASE, 1, fence=0)
    for hour in range(1, HISTORY_HOURS + 50):
        series = history_add(series, BASE + hour * H, 1, fence=hour)
    assert len(series) == 2 + HISTORY_HOURS
    first, last = history_span(series)  # type: ignore[misc]
    assert last == 500_000 + HISTORY_HOURS + 49 and last - first + 1 == HISTORY_HOURS
    before = list(series)
    assert history_add(series, BASE, 99, fence=10**6) [2:] == before[2:]  # too old: not counted


def test_an_earlier_hour_within_range_extends_the_series_backwards() -> None:
    series = history_add(None, BASE + 5 * H, 5, fence=1)
    series = history_add(series, BASE + 2 * H, 3, fence=2)
    assert series == [500_002, 2, 3, 0, 0, 5]
    series = history_add(series, BASE + 5 * H - HISTORY_HOURS * H, 1, fence=3)  # just out of range
    assert series[0] == 500_002


def test_a_series_back_from_the_changelog_keeps_working() -> None:
    series = orjson.loads(orjson.dumps(history_add(None, BASE, 5, fence=1)))
    assert history_add(tuple(series), BASE + H, 2, fence=2) == [500_000, 2, 5, 2]
