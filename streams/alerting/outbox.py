"""Notifications waiting for their receiver: in order, retried with backoff, never dropped silently.

Pure: the router persists each entry (``Pending.to_dict``) and removes it only after a 2xx
(``sent``) or a permanent refusal (``failed``, which goes to the dead-letter topic). A
destination that keeps failing is backed off as a whole: while it is down only its oldest
notification is tried, at the backoff's pace, and when it answers again the queue drains in
order. So a receiver down for an hour gets everything, late, once (or twice with the same
idempotency key, if the router dies between a send and its record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from spendwarden.streams.alerting.model import Notification

# attempt number (0 = first retry) and the receiver's Retry-After -> seconds to wait
Backoff = Callable[[int, Optional[float]], float]


@dataclass(slots=True)
class Pending:
    """One notification for one destination of its receiver (``dest`` is its ``destination_id``)."""

    notification: Notification
    dest: str
    attempts: int = 0
    last_error: str = ""

    @property
    def id(self) -> str:
        return f"{self.notification.idempotency_key}:{self.dest}"

    @property
    def destination(self) -> tuple[str, str]:
        return self.notification.receiver, self.dest

    def to_dict(self) -> dict[str, Any]:
        return {"notification": self.notification.to_dict(), "dest": self.dest, "attempts": self.attempts,
                "last_error": self.last_error}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Pending":
        return cls(Notification.from_dict(data["notification"]), str(data["dest"]), int(data["attempts"]),
                   str(data.get("last_error", "")))


@dataclass(slots=True)
class _Destination:
    failures: int = 0
    next_at: float = 0.0


@dataclass
class Outbox:
    """Pending notifications of the partitions this router owns, per destination in creation order."""

    backoff: Backoff
    entries: dict[str, Pending] = field(default_factory=dict)
    _destinations: dict[tuple[str, str], _Destination] = field(default_factory=dict)

    def add(self, pending: Pending) -> None:
        self.entries[pending.id] = pending

    def load(self, items: Iterable[Pending]) -> None:
        for pending in items:
            self.add(pending)

    def queues(self, now: float) -> list[list[Pending]]:
        """What to try now: per destination not backing off, its entries oldest first.

        The caller sends a queue in order and stops at the first entry that is not sent, so a
        receiver's notifications arrive in order (a group's resolved message never overtakes
        its firing one) and a receiver that is down costs one attempt per backoff step.
        """
        by_destination: dict[tuple[str, str], list[Pending]] = {}
        for pending in self.entries.values():
            by_destination.setdefault(pending.destination, []).append(pending)
        ready = []
        for destination, entries in by_destination.items():
            state = self._destinations.get(destination)
            if state is None or state.next_at <= now:
                ready.append(sorted(entries, key=_order))
        return sorted(ready, key=lambda queue: _order(queue[0]))

    def sent(self, pending: Pending) -> None:
        """A 2xx: the entry is done and its destination healthy again."""
        self.entries.pop(pending.id, None)
        self._destinations.pop(pending.destination, None)

    def failed(self, pending: Pending) -> None:
        """A permanent refusal (4xx other than 429): the caller dead-letters it; the queue moves on."""
        self.entries.pop(pending.id, None)

    def retry(self, pending: Pending, now: float, error: str, retry_after_s: Optional[float] = None) -> float:
        """A 5xx, 429, timeout or refused connection: back the destination off; returns the wait."""
        state = self._destinations.setdefault(pending.destination, _Destination())
        wait = self.backoff(state.failures, retry_after_s)
        state.failures += 1
        state.next_at = now + wait
        pending.attempts += 1
        pending.last_error = error
        return wait

    def drop_partition_entries(self, ids: Iterable[str]) -> None:
        for entry_id in ids:
            self.entries.pop(entry_id, None)

    def __len__(self) -> int:
        return len(self.entries)

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest waiting notification has waited (0 when none): the delivery-lag metric."""
        return max((now - p.notification.created_at for p in self.entries.values()), default=0.0)


def _order(pending: Pending) -> tuple[float, str, int]:
    return pending.notification.created_at, pending.notification.group_key, pending.notification.sequence
