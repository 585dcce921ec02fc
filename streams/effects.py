"""What the engine asks the outside world to do: publish a decision, send or resolve an alert,
report late spend. Plain data with ``to_dict`` for JSONL, Kafka and Redis; no I/O here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union


@dataclass(slots=True)
class DecisionChanged:
    """The effective verdict for one gateway scope changed (``verdict`` None means back to allow)."""

    tenant_id: str
    field: str
    verdict: Optional[dict[str, Any]]
    at: str
    kind: str = "decision"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class AlertFiring:
    """A rule became true for a scope and period; carries the evidence an on-call needs."""

    fingerprint: str
    rule: str
    severity: str
    summary: str
    tenant_id: Optional[str]
    scope: dict[str, str]
    budget: str
    period: str
    period_id: str
    period_end: str
    spend_usd: str
    limit_usd: str
    used_ratio: float
    expected_usd: str
    contributors: dict[str, list[list[Any]]]
    sample_trace_ids: list[str]
    notify: list[str]
    runbook: Optional[str]
    decision: Optional[dict[str, Any]]
    shadow: bool
    rules_version: str
    rule_file: str
    rule_line: Optional[int]
    at: str
    labels: dict[str, str] = field(default_factory=dict)
    # For rules reading anomaly.*: each detector's score as the rule saw it (value, actual,
    # expected, band, severity, warm, reasons): the expected-vs-actual of the detector, where
    # expected_usd is the budget's linear burn.
    anomaly: Optional[dict[str, Any]] = None
    # For rules reading unit.*: the instance's unit economics per window as the rule saw them.
    unit: Optional[dict[str, Any]] = None
    kind: str = "alert_firing"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class AlertResolved:
    """A firing rule's condition cleared (spend fell, the limit rose, or the period ended)."""

    fingerprint: str
    rule: str
    tenant_id: Optional[str]
    scope: dict[str, str]
    budget: str
    period_id: str
    reason: str
    at: str
    kind: str = "alert_resolved"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class LateSpend:
    """Spend counted toward a period that had already ended (reconciliation, not rules)."""

    tenant_id: str
    cost_event_id: str
    ts: str
    period_ids: list[str]
    cost_usd: str
    kind: str = "late_spend"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class TooLate:
    """An event older than the dedupe horizon: not counted, sent to ``spendwarden.late``.

    Counting it could count a duplicate twice (its id may have left the dedupe set), and
    dropping it silently would lose money, so it is reported for reconciliation instead.
    """

    tenant_id: str
    cost_event_id: str
    ts: str
    cost_usd: str
    horizon_start: str
    kind: str = "too_late"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Effect = Union[DecisionChanged, AlertFiring, AlertResolved, LateSpend, TooLate]
