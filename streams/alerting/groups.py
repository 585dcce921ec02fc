"""One aggregation group's lifecycle: when to notify, with which alerts, and when to stop.

Pure and clocked from outside (``now`` in epoch seconds), so tests drive it with a fake
clock and the router persists it as JSON. The timing follows Alertmanager:

* a new group waits ``group_wait`` before its first notification, so alerts that fire
  together arrive in one message;
* after that the group is looked at every ``group_interval``; it notifies when an alert
  fired that the last notification did not carry, when an alert the receiver was told about
  resolved, or when ``repeat_interval`` passed with alerts still firing;
* silenced or inhibited alerts are left out (``muted``); if nothing is left, nothing is sent;
* resolved alerts are sent once and then dropped; an empty group ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from spendwarden.streams.alerting.model import Alert, Notification

Muted = Callable[[Alert], bool]


@dataclass(frozen=True, slots=True)
class Timers:
    """A route's group_wait, group_interval and repeat_interval, in seconds."""

    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0


@dataclass(slots=True)
class AlertGroup:
    """Alerts of one route that share the route's ``group_by`` label values."""

    key: str
    route: str
    receiver: str
    group_labels: dict[str, str]
    timers: Timers
    alerts: dict[str, Alert] = field(default_factory=dict)
    next_flush_at: Optional[float] = None
    notified_firing: list[str] = field(default_factory=list)
    notified_at: Optional[float] = None
    sequence: int = 0
    epoch: str = ""  # starts_at of the alert that formed the group (see Notification.idempotency_key)

    # ------------------------------------------------------------------ changes
    def add(self, alert: Alert, now: float) -> bool:
        """Take a firing alert or a resolution; True when the group changed.

        A resolution of an alert the group does not hold is ignored (its firing was never
        routed here, or the group already ended). A repeated firing record keeps the first
        ``starts_at`` but takes the newer evidence.
        """
        known = self.alerts.get(alert.fingerprint)
        if alert.status == "resolved":
            if known is None or known.status == "resolved":
                return False
            known.status, known.ends_at = "resolved", alert.ends_at
            return True
        if known is not None and known.status == "firing":
            alert.starts_at = known.starts_at
        if not self.alerts:
            self.epoch = alert.starts_at
        self.alerts[alert.fingerprint] = alert
        if self.next_flush_at is None:
            self.next_flush_at = now + self.timers.group_wait_s
        return known is None or known.status == "resolved"

    def due(self, now: float) -> bool:
        return self.next_flush_at is not None and now >= self.next_flush_at

    @property
    def empty(self) -> bool:
        return not self.alerts

    # ------------------------------------------------------------------ the flush
    def flush(self, now: float, muted: Muted = lambda alert: False) -> Optional[Notification]:
        """At a due flush: the notification to send (or None), then drop what was resolved."""
        firing = [a for a in self.alerts.values() if a.status == "firing" and not muted(a)]
        told = set(self.notified_firing)
        resolved = [a for a in self.alerts.values() if a.status == "resolved" and a.fingerprint in told]
        firing_ids = sorted(a.fingerprint for a in firing)
        new_firing = any(fp not in told for fp in firing_ids)
        repeat = bool(firing) and self.notified_at is not None and now - self.notified_at >= self.timers.repeat_interval_s
        notification: Optional[Notification] = None
        if new_firing or resolved or repeat:
            self.sequence += 1
            alerts = sorted(firing, key=_order) + sorted(resolved, key=_order)
            notification = Notification(receiver=self.receiver, group_key=self.key, group_labels=dict(self.group_labels),
                                        alerts=[Alert.from_dict(a.to_dict()) for a in alerts],
                                        sequence=self.sequence, created_at=now, epoch=self.epoch)
            self.notified_firing = firing_ids
            self.notified_at = now
        for fingerprint in [fp for fp, a in self.alerts.items() if a.status == "resolved"]:
            del self.alerts[fingerprint]
            if fingerprint in self.notified_firing:
                self.notified_firing.remove(fingerprint)
        self.next_flush_at = None if self.empty else now + self.timers.group_interval_s
        return notification

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "route": self.route, "receiver": self.receiver, "group_labels": self.group_labels,
                "timers": [self.timers.group_wait_s, self.timers.group_interval_s, self.timers.repeat_interval_s],
                "alerts": [a.to_dict() for a in self.alerts.values()], "next_flush_at": self.next_flush_at,
                "notified_firing": self.notified_firing, "notified_at": self.notified_at, "sequence": self.sequence,
                "epoch": self.epoch}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AlertGroup":
        alerts = [Alert.from_dict(a) for a in data["alerts"]]
        return cls(key=data["key"], route=data["route"], receiver=data["receiver"],
                   group_labels=dict(data["group_labels"]), timers=Timers(*data["timers"]),
                   alerts={a.fingerprint: a for a in alerts}, next_flush_at=data["next_flush_at"],
                   notified_firing=list(data["notified_firing"]), notified_at=data["notified_at"],
                   sequence=int(data["sequence"]), epoch=str(data.get("epoch", "")))


def _order(alert: Alert) -> tuple[str, str]:
    return alert.starts_at, alert.fingerprint
