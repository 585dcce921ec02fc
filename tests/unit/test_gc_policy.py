"""The garbage-collector thresholds a replay runs with, and that they are given back after."""

from __future__ import annotations

import gc

import pytest

from spendwarden.gc_policy import ENGINE_THRESHOLDS, engine_thresholds
from spendwarden.replay.run import NullSink, replay
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook


def test_a_replay_runs_with_the_engine_thresholds_and_restores_the_previous(ruleset_from_yaml: object) -> None:
    seen: list[tuple[int, int, int]] = []

    def records():  # type: ignore[no-untyped-def]
        seen.append(gc.get_threshold())
        yield from ()

    before = gc.get_threshold()
    assert before != ENGINE_THRESHOLDS
    replay(records(), ruleset_from_yaml("budgets: []"), Ingest(Pricebook.default()), NullSink())
    assert seen == [ENGINE_THRESHOLDS] and gc.get_threshold() == before


def test_the_thresholds_come_back_when_the_block_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), engine_thresholds():
        assert gc.get_threshold() == ENGINE_THRESHOLDS
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
