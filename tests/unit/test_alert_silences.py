"""Silences, the pure part: which silence mutes an alert when, and what a silence must say."""

from __future__ import annotations

import pytest

from spendwarden.streams.alerting.silences import Silence, SilenceError, decode, new_silence, silenced_by
from spendwarden.streams.alerting.tree import Matcher

T0 = 1_790_000_000.0
ALERT = {"tenant": "acme", "rule": "daily-burn", "severity": "high"}


def silence(*matchers: str, starts: float = T0, ends: float = T0 + 3600, sid: str = "s1") -> Silence:
    return Silence(id=sid, matchers=tuple(Matcher.parse(m) for m in matchers), starts_at=starts, ends_at=ends,
                   comment="INC-1", created_by="ana", created_at=starts)


@pytest.mark.parametrize(("now", "hit"), [
    (T0 - 1, False),        # not yet started
    (T0, True),             # starts_at is inside the window
    (T0 + 1800, True),
    (T0 + 3600, False),     # ends_at is not
    (T0 + 7200, False),     # expired
])
def test_active_window(now: float, hit: bool) -> None:
    found = silenced_by(ALERT, [silence("tenant=acme")], now)
    assert (found is not None) is hit


@pytest.mark.parametrize(("matchers", "hit"), [
    (("tenant=acme", "rule=daily-burn"), True),
    (("tenant=acme", "rule=other"), False),     # all matchers must hold
    (("tenant=~ac.*", "severity!=low"), True),
    (("tenant=~ac",), False),                   # anchored
    (("team=billing",), False),                 # a missing label is ""
])
def test_matching(matchers: tuple[str, ...], hit: bool) -> None:
    assert (silenced_by(ALERT, [silence(*matchers)], T0 + 1) is not None) is hit


def test_the_silence_ending_last_is_reported() -> None:
    short, long = silence("tenant=acme", sid="short"), silence("rule=daily-burn", ends=T0 + 9000, sid="long")
    expired = silence("tenant=acme", starts=T0 - 9000, ends=T0 - 1, sid="old")
    assert silenced_by(ALERT, [short, long, expired], T0 + 1).id == "long"  # type: ignore[union-attr]
    assert silenced_by(ALERT, [expired], T0 + 1) is None


def test_state() -> None:
    s = silence("tenant=acme")
    assert [s.state(t) for t in (T0 - 1, T0, T0 + 3600)] == ["pending", "active", "expired"]


def test_round_trip_and_iso_times() -> None:
    s = silence('tenant="acme corp"', "severity=~high|critical")
    assert Silence.from_dict(s.to_dict()) == s
    data = {**s.to_dict(), "starts_at": "2026-09-21T12:00:00Z", "ends_at": "2026-09-21T14:00:00+00:00"}
    parsed = Silence.from_dict(data)
    assert parsed.ends_at - parsed.starts_at == 7200
    with pytest.raises(ValueError):
        Silence.from_dict({**data, "ends_at": "2026-09-21T14:00:00"})  # no time zone


def test_decode_skips_unreadable_entries() -> None:
    good = silence("tenant=acme")
    import json

    found = decode({"s1": json.dumps(good.to_dict()), "bad": "{not json", "worse": json.dumps({"id": "x"})})
    assert found == [good]


def test_new_silence() -> None:
    s = new_silence(["tenant=acme", "rule=daily-burn"], 7200, "INC-4411", "ana", T0)
    assert (s.starts_at, s.ends_at, s.created_by, s.matchers_text) == (
        T0, T0 + 7200, "ana", 'tenant="acme",rule="daily-burn"')
    assert new_silence(["tenant=acme"], 60, "x", "ana", T0).id != s.id


@pytest.mark.parametrize(("matchers", "duration", "comment", "author", "words"), [
    ([], 60, "why", "ana", "at least one matcher"),
    (["tenant!=acme"], 60, "why", "ana", "also match alerts without"),   # would mute nearly everything
    (["tenant=~.*"], 60, "why", "ana", "also match alerts without"),
    (["tenant=acme"], 0, "why", "ana", "more than 0"),
    (["tenant=acme"], 60, " ", "ana", "comment"),
    (["tenant=acme"], 60, "why", "", "author"),
    (["tenant=~(acme"], 60, "why", "ana", "bad regex"),
])
def test_new_silence_rejects(matchers: list[str], duration: float, comment: str, author: str, words: str) -> None:
    with pytest.raises(SilenceError, match=words):
        new_silence(matchers, duration, comment, author, T0)
