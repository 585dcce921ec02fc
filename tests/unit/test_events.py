"""epoch_seconds: the fast UTC timestamp the ingest path uses must equal datetime.timestamp()."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from spendwarden.streams.events import CostEvent, epoch_seconds

OFFSETS = st.sampled_from(["Z", "+00:00", "-00:00", "+05:30", "-08:00", "+14:00"])


def parsed(ts: str) -> datetime:
    raw = f'{{"cost_event_id":"e","ts":"{ts}","tenant_id":"acme"}}'
    return CostEvent.model_validate_json(raw).ts


@settings(max_examples=400, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), OFFSETS)
def test_epoch_seconds_is_timestamp(when: datetime, offset: str) -> None:
    """Bit for bit the float timestamp() gives, for pydantic's UTC, other offsets and timezone.utc."""
    ts = parsed(when.isoformat(timespec="microseconds") + offset)
    assert epoch_seconds(ts) == ts.timestamp()
    utc = when.replace(tzinfo=timezone.utc)
    assert epoch_seconds(utc) == utc.timestamp()
    shifted = when.replace(tzinfo=timezone(timedelta(hours=-3)))
    assert epoch_seconds(shifted) == shifted.timestamp()


def test_epoch_seconds_defers_to_subclasses() -> None:
    """A datetime subclass (pandas.Timestamp has nanoseconds) keeps its own timestamp()."""

    class Nanos(datetime):
        def timestamp(self) -> float:
            return 42.0

    ts = parsed("2026-05-01T12:00:00Z")
    assert epoch_seconds(Nanos(2026, 5, 1, 12, tzinfo=ts.tzinfo)) == 42.0


def test_validated_ts_is_utc() -> None:
    """Events keep their instant; offsets other than zero are converted to UTC."""
    ts = parsed("2026-05-01T14:00:00+02:00")
    assert ts.utcoffset() == timedelta(0) and ts == datetime(2026, 5, 1, 12, tzinfo=timezone.utc)
