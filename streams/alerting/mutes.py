"""What mutes an alert, cluster-wide: silences and firing alerts that inhibit others, in Redis.

A group is flushed by the one router that owns its partition, but the alert that inhibits it
(a scope's block alert) may have been routed by another. So inhibiting alerts are kept in
one Redis hash (``sw:{alerts}:inhibitors``, field = fingerprint, value = labels and an
``until`` past the alert's period end, after which a resolution lost on the way cannot keep
muting), next to the silences (streams/alerting/silences.py). A router re-reads both once
per tick and keeps the last ones it read while Redis is unreachable.
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Optional

import orjson

from spendwarden.logs import get_logger
from spendwarden.streams.alerting.inhibit import Inhibitor
from spendwarden.streams.alerting.model import epoch_of
from spendwarden.streams.alerting.silences import AsyncSilenceStore, Silence, silenced_by
from spendwarden.streams.alerting.tree import matches_all

log = get_logger("spendwarden.router")
INHIBITORS_KEY = "sw:{alerts}:inhibitors"
SOURCE_GRACE_S = 3600.0  # an inhibiting alert counts this long past its period's end at most


class Mutes:
    """Silences and inhibiting alerts as last read from Redis."""

    def __init__(self, redis: Any, inhibitor: Inhibitor) -> None:
        self.redis = redis
        self.inhibitor = inhibitor
        self.store = AsyncSilenceStore(redis)
        self.silences: list[Silence] = []
        self.sources: list[Mapping[str, str]] = []
        self._version: Optional[int] = None

    def muted(self, labels: Mapping[str, str], now: float) -> Optional[str]:
        """``silence`` or ``inhibition`` when the alert with these labels is muted now, else None."""
        if silenced_by(labels, self.silences, now) is not None:
            return "silence"
        if self.inhibitor.rules and self.inhibitor.muted(labels, self.sources):
            return "inhibition"
        return None

    def is_source(self, labels: Mapping[str, str]) -> bool:
        return any(matches_all(rule.source, labels) for rule in self.inhibitor.rules)

    async def refresh(self, now: Optional[float] = None) -> None:
        """Re-read silences (only when their version moved) and inhibiting alerts."""
        now = time.time() if now is None else now
        try:
            version = await self.store.version()
            if version != self._version:
                self.silences = await self.store.list(now=now)
                self._version = version
            if self.inhibitor.rules:
                found = await self.redis.hgetall(INHIBITORS_KEY)
                sources, stale = [], []
                for field, raw in found.items():
                    entry = orjson.loads(raw)
                    if entry.get("until", 0) > now:
                        sources.append(entry.get("labels", {}))
                    else:
                        stale.append(field)
                self.sources = sources
                if stale:
                    await self.redis.hdel(INHIBITORS_KEY, *stale)
        except Exception as exc:  # noqa: BLE001 - Redis down or a bad entry: keep what we had
            log.warning("could not read silences or inhibiting alerts; using the last known",
                        error=type(exc).__name__)

    async def note_source(self, fingerprint: str, labels: Mapping[str, str], period_end: Optional[str]) -> None:
        """Record a firing alert that can inhibit others (no-op for one that cannot)."""
        if not self.is_source(labels):
            return
        until = _epoch(period_end, time.time()) + SOURCE_GRACE_S
        try:
            await self.redis.hset(INHIBITORS_KEY, fingerprint, orjson.dumps({"labels": dict(labels), "until": until}))
        except Exception as exc:  # noqa: BLE001 - Redis down: inhibition waits, routing does not
            log.warning("could not record an inhibiting alert in Redis", error=type(exc).__name__)

    async def forget_source(self, fingerprint: str) -> None:
        try:
            await self.redis.hdel(INHIBITORS_KEY, fingerprint)
        except Exception as exc:  # noqa: BLE001 - it expires by its `until` anyway
            log.warning("could not drop an inhibiting alert from Redis", error=type(exc).__name__)


def _epoch(iso: Optional[str], default: float) -> float:
    try:
        return epoch_of(str(iso))
    except ValueError:
        return default + 86400.0
