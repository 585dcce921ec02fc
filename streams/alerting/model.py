"""The data the router passes around: an alert as receivers see it, and one notification.

Pure data, no I/O. An ``Alert`` is built from the worker's ``alert_firing`` /
``alert_resolved`` records (streams/effects.py); its labels are what routes, silences and
inhibition match on, its annotations what a person reads, and ``evidence`` keeps the whole
firing record so a receiver can render contributors, trace ids and the decision taken.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Optional

Status = Literal["firing", "resolved"]

# Labels every alert carries when the record has them; rule labels (team, environment, ...) add to these.
_SCOPE_LABELS = {"use_case_id": "use_case", "workflow_step": "workflow_step", "environment": "environment",
                 "cost_center": "cost_center", "risk_tier": "risk_tier", "model_or_service": "model"}


@dataclass(slots=True)
class Alert:
    """One alert instance: a rule firing for one scope and period (stable ``fingerprint``)."""

    fingerprint: str
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: Optional[str] = None
    generator_url: Optional[str] = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "status": self.status, "labels": self.labels,
                "annotations": self.annotations, "starts_at": self.starts_at, "ends_at": self.ends_at,
                "generator_url": self.generator_url, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Alert":
        return cls(fingerprint=data["fingerprint"], status=data["status"], labels=dict(data["labels"]),
                   annotations=dict(data["annotations"]), starts_at=data["starts_at"],
                   ends_at=data.get("ends_at"), generator_url=data.get("generator_url"),
                   evidence=dict(data.get("evidence") or {}))


def alert_labels(record: dict[str, Any]) -> dict[str, str]:
    """Routing labels of an ``alert_firing`` record: rule, severity, tenant, scope, decision, rule labels.

    ``decision`` is the action the rule took (block, degrade, throttle) or ``none``, so an
    inhibition rule can let a scope's block alert mute its burn alerts.
    """
    labels: dict[str, str] = {"alertname": record["rule"], "rule": record["rule"],
                              "severity": record.get("severity", "medium"), "budget": record.get("budget", ""),
                              "period": record.get("period", "")}
    if record.get("tenant_id"):
        labels["tenant"] = record["tenant_id"]
    for key, value in (record.get("scope") or {}).items():
        name = _SCOPE_LABELS.get(key, key)
        if name != "tenant_id" and value:
            labels[name] = str(value)
    decision = record.get("decision") or {}
    labels["decision"] = decision.get("action") or "none"
    if record.get("notify"):
        labels["notify"] = ",".join(record["notify"])
    if record.get("shadow"):
        labels["shadow"] = "true"
    for key, value in (record.get("labels") or {}).items():
        labels[str(key)] = str(value)
    return {k: v for k, v in labels.items() if v != ""}


def alert_from_firing(record: dict[str, Any], generator_url: Optional[str] = None) -> Alert:
    """The ``Alert`` for an ``alert_firing`` record of the worker; ValueError when ``at`` is no time."""
    _check_time(record["at"])
    annotations = {"summary": record.get("summary", ""),
                   "spend_usd": str(record.get("spend_usd", "")), "limit_usd": str(record.get("limit_usd", "")),
                   "expected_usd": str(record.get("expected_usd", "")),
                   "used_ratio": f"{float(record.get('used_ratio') or 0):.4f}",
                   "period_id": str(record.get("period_id", "")),
                   "rule_file": f"{record.get('rule_file', '')}:{record.get('rule_line') or ''}".rstrip(":")}
    if record.get("runbook"):
        annotations["runbook_url"] = record["runbook"]
    return Alert(fingerprint=record["fingerprint"], status="firing", labels=alert_labels(record),
                 annotations={k: v for k, v in annotations.items() if v}, starts_at=record["at"],
                 generator_url=generator_url, evidence=dict(record))


@dataclass(slots=True)
class Notification:
    """What one receiver is sent for one group at one flush.

    ``idempotency_key`` is the same on every retry and redelivery of this notification (group,
    the group's epoch, receiver and the group's notification sequence number), so a receiver
    that got it twice (a router killed between the send and its record) can tell. The epoch
    (when the group's first alert started) tells a group that ended and formed again from its
    earlier life, whose sequence numbers start over.
    """

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Alert]
    sequence: int
    created_at: float
    epoch: str = ""

    @property
    def status(self) -> Status:
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def idempotency_key(self) -> str:
        raw = f"{self.group_key}|{self.epoch}|{self.receiver}|{self.sequence}".encode()
        return hashlib.sha256(raw).hexdigest()[:32]

    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    def to_dict(self) -> dict[str, Any]:
        return {"receiver": self.receiver, "group_key": self.group_key, "group_labels": self.group_labels,
                "alerts": [a.to_dict() for a in self.alerts], "sequence": self.sequence,
                "created_at": self.created_at, "epoch": self.epoch}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Notification":
        return cls(receiver=data["receiver"], group_key=data["group_key"], group_labels=dict(data["group_labels"]),
                   alerts=[Alert.from_dict(a) for a in data["alerts"]], sequence=int(data["sequence"]),
                   created_at=float(data["created_at"]), epoch=str(data.get("epoch", "")))


def _check_time(value: Any) -> None:
    if not isinstance(value, str):
        raise ValueError(f"at: expected an ISO 8601 time, got {type(value).__name__}")
    epoch_of(value)


def epoch_of(text: str) -> float:
    """Epoch seconds of ISO 8601 text (``...Z`` allowed, no zone means UTC); ValueError otherwise."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    common = dict(maps[0])
    for other in maps[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common
