"""The router's logic without Kafka or HTTP: route an alert record, keep the groups of owned
partitions, turn due groups into pending deliveries.

Two stages, as the router runs them (streams/alerting/router.py):

1. ``route``: an ``alert_firing`` record is matched against the routing tree; each matched
   route gives one group key, and the alert goes to the group topic keyed by it, so exactly
   one partition (and so one router process) owns each group. A resolution is sent to the
   group keys its firing went to (the caller remembers those per fingerprint, because rules
   may have been edited in between).
2. ``apply`` and ``flush``: the owner updates the group and, when a group is due,
   builds its notification and one ``Pending`` per destination of the receiver.

State changes are reported as ``(partition, key, value or None)`` so the caller can persist
exactly what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from spendwarden.streams.alerting.groups import AlertGroup, Timers
from spendwarden.streams.alerting.model import Alert, Notification, alert_from_firing
from spendwarden.streams.alerting.outbox import Pending

Change = tuple[int, tuple[str, ...], Optional[dict[str, Any]]]
MuteCheck = Callable[[Alert], bool]


@dataclass(frozen=True, slots=True)
class Routed:
    """One alert (or resolution) on its way to one group."""

    group_key: str
    route: str
    receiver: str
    group_labels: dict[str, str]
    timers: Timers
    alert: Alert

    def to_dict(self) -> dict[str, Any]:
        t = self.timers
        return {"group_key": self.group_key, "route": self.route, "receiver": self.receiver,
                "group_labels": self.group_labels, "timers": [t.group_wait_s, t.group_interval_s, t.repeat_interval_s],
                "alert": self.alert.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Routed":
        return cls(data["group_key"], data["route"], data["receiver"], dict(data["group_labels"]),
                   Timers(*data["timers"]), Alert.from_dict(data["alert"]))


def route_firing(record: dict[str, Any], tree: Any, external_url: str) -> list[Routed]:
    """Every group a firing record belongs to (one per matched route)."""
    from spendwarden.streams.alerting.tree import group_key, group_labels

    alert = alert_from_firing(record, generator_url=f"{external_url.rstrip('/')}/alerts/{record['fingerprint']}")
    routed = []
    for route in tree.match(alert.labels):
        routed.append(Routed(group_key(route, alert.labels), route.path, route.receiver,
                             group_labels(route, alert.labels),
                             Timers(route.group_wait_s, route.group_interval_s, route.repeat_interval_s), alert))
    return routed


def merge_routed(earlier: Iterable[Routed], now: Iterable[Routed]) -> list[Routed]:
    """Where a fingerprint has been routed so far: a repeated firing after a routing edit keeps
    the earlier groups too, so each of them later gets the resolution."""
    merged = {r.group_key: r for r in earlier}
    merged.update((r.group_key, r) for r in now)
    return list(merged.values())


def resolution_of(record: dict[str, Any], earlier: Iterable[Routed]) -> list[Routed]:
    """The resolution of a resolved record, for each group its firing went to."""
    out = []
    for routed in earlier:
        alert = Alert.from_dict(routed.alert.to_dict())
        alert.status, alert.ends_at = "resolved", record.get("at")
        out.append(Routed(routed.group_key, routed.route, routed.receiver, routed.group_labels, routed.timers, alert))
    return out


@dataclass
class GroupBook:
    """The groups of the partitions this router owns."""

    groups: dict[int, dict[str, AlertGroup]] = field(default_factory=dict)

    def load(self, partition: int, items: Iterable[dict[str, Any]]) -> None:
        self.groups[partition] = {g.key: g for g in (AlertGroup.from_dict(item) for item in items)}

    def drop(self, partition: int) -> None:
        self.groups.pop(partition, None)

    def apply(self, partition: int, routed: Routed, now: float) -> list[Change]:
        """Add a routed alert to its group (creating the group for a firing alert)."""
        groups = self.groups.setdefault(partition, {})
        group = groups.get(routed.group_key)
        if group is None:
            if routed.alert.status == "resolved":
                return []
            group = groups[routed.group_key] = AlertGroup(routed.group_key, routed.route, routed.receiver,
                                                          dict(routed.group_labels), routed.timers)
        if not group.add(routed.alert, now):
            return []
        return [(partition, ("group", group.key), group.to_dict())]

    def flush(self, now: float, muted: MuteCheck, destinations: Callable[[str], list[str]]
              ) -> tuple[list[tuple[int, Pending]], list[Change], list[Notification]]:
        """Flush every due group: pending deliveries (with their partition), state changes,
        and the notifications made (also those for receivers without destinations)."""
        pending: list[tuple[int, Pending]] = []
        changes: list[Change] = []
        made: list[Notification] = []
        for partition, groups in self.groups.items():
            for key in [k for k, g in groups.items() if g.due(now)]:
                group = groups[key]
                notification = group.flush(now, muted)
                if notification is not None:
                    made.append(notification)
                    for dest in destinations(notification.receiver):
                        entry = Pending(notification, dest)
                        pending.append((partition, entry))
                        changes.append((partition, ("outbox", entry.id), entry.to_dict()))
                if group.empty:
                    del groups[key]
                    changes.append((partition, ("group", key), None))
                else:
                    changes.append((partition, ("group", key), group.to_dict()))
        return pending, changes, made

    def firing(self) -> Iterable[Alert]:
        for groups in self.groups.values():
            for group in groups.values():
                for alert in group.alerts.values():
                    if alert.status == "firing":
                        yield alert

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups.values())
