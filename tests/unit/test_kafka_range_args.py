"""Arguments of `replay kafka://TOPIC --from/--to`: offsets, zoned times, one-line errors."""

from __future__ import annotations

import pytest

from spendwarden.exceptions import ConfigError
from spendwarden.replay.kafka_source import RangeBound, topic_of


def test_bounds_are_offsets_or_zoned_times() -> None:
    assert RangeBound.parse(None, "--from") is None
    assert RangeBound.parse("1200", "--from") == RangeBound(offset=1200)
    assert RangeBound.parse("2026-11-01T00:00Z", "--from") == RangeBound(time_ms=1_793_491_200_000)
    assert RangeBound.parse("2026-11-01T01:00+01:00", "--to") == RangeBound(time_ms=1_793_491_200_000)


@pytest.mark.parametrize(("text", "message"), [
    ("2026-11-01T00:00", "--from: '2026-11-01T00:00' has no time zone"),
    ("yesterday", "--from: 'yesterday' is neither an offset nor an ISO 8601 time"),
    ("-5", "--from: '-5' is neither an offset"),
])
def test_bad_bounds_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RangeBound.parse(text, "--from")


def test_topic_of_url() -> None:
    assert topic_of("kafka://ai.cost-events") == "ai.cost-events"
    for bad in ("kafka://", "kafka://host:9092/topic"):
        with pytest.raises(ConfigError, match="expected kafka://TOPIC"):
            topic_of(bad)
