"""Silences: a person mutes alerts matching some labels for a while (``spendwarden silence add``).

Kept in Redis so they survive restarts and every router sees the same ones: one hash
``sw:{silences}:all`` (field = silence id, value = JSON) and a counter ``sw:{silences}:version``
bumped on every change, so a router re-reads the hash only when the counter moved. Both keys
share the hash tag, so they live on one Redis Cluster slot. An expired silence is kept for
``KEEP_EXPIRED_S`` (for `silence list --all`) and pruned on a later add.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, Optional

from spendwarden.exceptions import ConfigError
from spendwarden.streams.alerting.tree import Matcher, MatcherError, matches_all

log = logging.getLogger(__name__)

ALL_KEY = "sw:{silences}:all"
VERSION_KEY = "sw:{silences}:version"
KEEP_EXPIRED_S = 5 * 86400.0

State = Literal["active", "pending", "expired"]


class SilenceError(ConfigError):
    """A silence cannot be made or changed; the message says why."""


def _epoch(value: Any) -> float:
    """Epoch seconds of a number or ISO 8601 text (``...Z`` allowed)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError(f"time {value!r} has no time zone")
        return parsed.timestamp()
    raise ValueError(f"not a time: {value!r}")


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes alerts whose labels match all ``matchers`` from ``starts_at`` until ``ends_at`` (epoch s)."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str
    created_by: str
    created_at: float

    def state(self, now: float) -> State:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    @property
    def matchers_text(self) -> str:
        return ",".join(str(m) for m in self.matchers)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": [str(m) for m in self.matchers], "starts_at": self.starts_at,
                "ends_at": self.ends_at, "comment": self.comment, "created_by": self.created_by,
                "created_at": self.created_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Silence":
        """Times as epoch seconds or ISO 8601; ValueError (MatcherError included) if malformed."""
        return cls(id=str(data["id"]), matchers=tuple(Matcher.parse(m) for m in data["matchers"]),
                   starts_at=_epoch(data["starts_at"]), ends_at=_epoch(data["ends_at"]),
                   comment=str(data.get("comment", "")), created_by=str(data.get("created_by", "")),
                   created_at=_epoch(data.get("created_at", data["starts_at"])))


def silenced_by(labels: Mapping[str, str], silences: Iterable[Silence], now: float) -> Optional[Silence]:
    """The active silence matching ``labels`` that ends last (the one to show), or None."""
    best: Optional[Silence] = None
    for silence in silences:
        if silence.active(now) and silence.matches(labels) and (best is None or silence.ends_at > best.ends_at):
            best = silence
    return best


def new_silence(matchers: Sequence[str | Matcher], duration_s: float, comment: str, created_by: str,
                now: float) -> Silence:
    """A silence starting ``now``; SilenceError unless it is narrow enough and says who and why.

    As in Alertmanager, at least one matcher must not match the empty label value: a silence
    of only ``!=`` or ``=~.*`` matchers would mute nearly every alert, including future ones.
    """
    try:
        parsed = tuple(m if isinstance(m, Matcher) else Matcher.parse(m) for m in matchers)
    except MatcherError as exc:
        raise SilenceError(str(exc)) from None
    if not parsed:
        raise SilenceError("a silence needs at least one matcher, e.g. tenant=acme")
    if all(m.matches({}) for m in parsed):
        raise SilenceError(f"matchers {','.join(map(str, parsed))} also match alerts without those labels; "
                           "add one that needs a value, e.g. tenant=acme")
    if not duration_s > 0:
        raise SilenceError("a silence must last more than 0 seconds")
    if not comment.strip():
        raise SilenceError("a silence needs a comment saying why")
    if not created_by.strip():
        raise SilenceError("a silence needs an author")
    return Silence(id=str(uuid.uuid4()), matchers=parsed, starts_at=now, ends_at=now + duration_s,
                   comment=comment, created_by=created_by, created_at=now)


def decode(entries: Mapping[Any, Any]) -> list[Silence]:
    """Silences of the hash's fields; an unreadable entry is logged and skipped. Sorted by end."""
    out: list[Silence] = []
    for field_name, raw in entries.items():
        try:
            out.append(Silence.from_dict(json.loads(raw)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable silence %r in %s: %s", field_name, ALL_KEY, exc)
    return sorted(out, key=lambda s: (s.ends_at, s.id))


def _stale(silences: Iterable[Silence], now: float) -> list[str]:
    return [s.id for s in silences if s.ends_at < now - KEEP_EXPIRED_S]


def _expired(silence: Optional[Silence], silence_id: str, now: float) -> Silence:
    if silence is None:
        raise SilenceError(f"no silence with id {silence_id} (see `spendwarden silence list --all`)")
    state = silence.state(now)
    if state == "expired":
        raise SilenceError(f"silence {silence_id} has already expired")
    return replace(silence, ends_at=now, starts_at=now if state == "pending" else silence.starts_at)


def _one(silence_id: str, raw: Any) -> Optional[Silence]:
    found = decode({silence_id: raw}) if raw is not None else []
    return found[0] if found else None


def _encode(silence: Silence) -> str:
    return json.dumps(silence.to_dict(), sort_keys=True)


def _shown(silences: list[Silence], include_expired: bool, now: float) -> list[Silence]:
    return silences if include_expired else [s for s in silences if s.state(now) != "expired"]


class SilenceStore:
    """Silences in Redis through a blocking client (the CLI)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def add(self, matchers: Sequence[str | Matcher], duration_s: float, comment: str, created_by: str,
            now: Optional[float] = None) -> Silence:
        now = time.time() if now is None else now
        silence = new_silence(matchers, duration_s, comment, created_by, now)
        stale = _stale(self.list(include_expired=True, now=now), now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(ALL_KEY, silence.id, _encode(silence))
        if stale:
            pipe.hdel(ALL_KEY, *stale)
        pipe.incr(VERSION_KEY)
        pipe.execute()
        return silence

    def get(self, silence_id: str) -> Optional[Silence]:
        return _one(silence_id, self.client.hget(ALL_KEY, silence_id))

    def list(self, include_expired: bool = False, now: Optional[float] = None) -> list[Silence]:
        """Active and pending silences (all kept ones with ``include_expired``), by end time."""
        return _shown(decode(self.client.hgetall(ALL_KEY)), include_expired, time.time() if now is None else now)

    def expire(self, silence_id: str, now: Optional[float] = None) -> Silence:
        """End a silence now (it stays listed with --all); SilenceError if unknown or already over."""
        silence = _expired(self.get(silence_id), silence_id, time.time() if now is None else now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(ALL_KEY, silence.id, _encode(silence))
        pipe.incr(VERSION_KEY)
        pipe.execute()
        return silence

    def version(self) -> int:
        """Bumped on every change: re-read the silences only when it moved."""
        return int(self.client.get(VERSION_KEY) or 0)


class AsyncSilenceStore:
    """The same on an asyncio client (the router)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def add(self, matchers: Sequence[str | Matcher], duration_s: float, comment: str, created_by: str,
                  now: Optional[float] = None) -> Silence:
        now = time.time() if now is None else now
        silence = new_silence(matchers, duration_s, comment, created_by, now)
        stale = _stale(await self.list(include_expired=True, now=now), now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(ALL_KEY, silence.id, _encode(silence))
        if stale:
            pipe.hdel(ALL_KEY, *stale)
        pipe.incr(VERSION_KEY)
        await pipe.execute()
        return silence

    async def get(self, silence_id: str) -> Optional[Silence]:
        return _one(silence_id, await self.client.hget(ALL_KEY, silence_id))

    async def list(self, include_expired: bool = False, now: Optional[float] = None) -> list[Silence]:
        return _shown(decode(await self.client.hgetall(ALL_KEY)), include_expired,
                      time.time() if now is None else now)

    async def expire(self, silence_id: str, now: Optional[float] = None) -> Silence:
        silence = _expired(await self.get(silence_id), silence_id, time.time() if now is None else now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(ALL_KEY, silence.id, _encode(silence))
        pipe.incr(VERSION_KEY)
        await pipe.execute()
        return silence

    async def version(self) -> int:
        return int(await self.client.get(VERSION_KEY) or 0)
