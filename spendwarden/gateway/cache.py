"""The gateway client's optional local cache of HMGET answers, invalidated by the change channel.

Pub/sub is lossy and a subscription takes effect some time after SSUBSCRIBE is sent, so an
answer is only stored when it cannot have missed an announcement:

* the tenant's subscription was *confirmed* (the server's ``ssubscribe`` reply arrived) before
  the read started, and
* no change message for the tenant and no reconnect of the subscription happened while the read
  was in flight (a per-tenant generation and a global epoch are compared before storing).

A reconnect clears everything: messages sent while the connection was down are gone. Entries
also end after ``ttl_s`` whatever happens. Thread-safe (the sync client's listener is a thread).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional, Union

Raw = Union[bytes, str, None]
Token = tuple[int, int, bool]

CHANNEL_PREFIX = "sw:{"
CHANNEL_SUFFIX = "}:changes"


def channel_tenant(channel: Union[bytes, str, None]) -> Optional[str]:
    """The tenant of ``sw:{<tenant>}:changes``, or None for any other channel."""
    if isinstance(channel, bytes):
        channel = channel.decode("utf-8", "replace")
    if not channel or not channel.startswith(CHANNEL_PREFIX) or not channel.endswith(CHANNEL_SUFFIX):
        return None
    return channel[len(CHANNEL_PREFIX):-len(CHANNEL_SUFFIX)] or None


class DecisionCache:
    """HMGET answers per (tenant, fields), for at most ``ttl_s`` seconds (monotonic clock)."""

    def __init__(self, ttl_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: dict[str, dict[tuple[str, ...], tuple[float, dict[str, Raw]]]] = {}
        self._generation: dict[str, int] = {}
        self._confirmed: set[str] = set()
        self._epoch = 0
        self.invalidations = 0
        self.resets = 0

    def get(self, tenant: str, fields: tuple[str, ...]) -> Optional[dict[str, Raw]]:
        """The cached answer, or None when absent or older than the TTL."""
        entry = self._entries.get(tenant, {}).get(fields)
        if entry is None or entry[0] <= self._monotonic():
            return None
        return entry[1]

    def token(self, tenant: str) -> Token:
        """Taken before a read; :meth:`store` keeps the answer only if it is unchanged after it."""
        with self._lock:
            return self._epoch, self._generation.get(tenant, 0), tenant in self._confirmed

    def store(self, tenant: str, fields: tuple[str, ...], values: Mapping[str, Raw], token: Token) -> bool:
        """Keep an answer read after ``token`` was taken, unless it may have missed a change."""
        with self._lock:
            if not token[2] or token != (self._epoch, self._generation.get(tenant, 0), tenant in self._confirmed):
                return False
            self._entries.setdefault(tenant, {})[fields] = (self._monotonic() + self.ttl_s, dict(values))
            return True

    def drop(self, tenant: str, fields: tuple[str, ...]) -> None:
        with self._lock:
            self._entries.get(tenant, {}).pop(fields, None)

    def confirmed(self, tenant: str) -> None:
        """The server acknowledged the tenant's SSUBSCRIBE: from now on no change goes unseen."""
        with self._lock:
            self._confirmed.add(tenant)

    def unsubscribed(self, tenant: str) -> None:
        with self._lock:
            self._confirmed.discard(tenant)
            self._forget(tenant)

    def invalidate(self, tenant: str) -> None:
        """A change was announced for the tenant: drop every answer about it."""
        with self._lock:
            self._forget(tenant)
            self.invalidations += 1

    def reset(self) -> None:
        """The subscription connection dropped or reconnected: messages may be lost, trust nothing."""
        with self._lock:
            self._entries.clear()
            self._confirmed.clear()
            self._epoch += 1
            self.resets += 1

    def on_message(self, message: Optional[Mapping[str, object]]) -> None:
        """Apply one pub/sub message (as redis-py returns it) to the cache."""
        if not message:
            return
        kind = message.get("type")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        tenant = channel_tenant(message.get("channel"))  # type: ignore[arg-type]
        if tenant is None:
            return
        if kind == "smessage":
            self.invalidate(tenant)
        elif kind == "ssubscribe":
            self.confirmed(tenant)
        elif kind == "sunsubscribe":
            self.unsubscribed(tenant)

    def _forget(self, tenant: str) -> None:
        self._entries.pop(tenant, None)
        self._generation[tenant] = self._generation.get(tenant, 0) + 1
