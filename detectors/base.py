"""The detector contract: river's verbs plus a JSON state, and the Score every detector returns.

A detector object holds its parameters and the state of **one** series (one scope). The engine
keeps states in its mapping, checkpointed as JSON, so a detector's state must be plain
JSON values of bounded size; ``proto.from_state(table[key])`` gives a detector with the
prototype's parameters and that series' state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, Self, runtime_checkable

from spendwarden.detectors.exceptions import DetectorParameterError

Severity = Literal["none", "low", "medium", "high"]
SEVERITIES: tuple[Severity, ...] = ("none", "low", "medium", "high")
State = dict[str, Any]  # JSON-compatible: str keys, lists, ints, floats, None


@dataclass(frozen=True, slots=True)
class Score:
    """How unusual one observation is, and why.

    ``value`` is signed (robust sigmas; positive = more spend or dearer than expected); a
    high value means anomalous. ``severity`` is "none" while the detector is warming up, and
    the reasons then say so. ``expected`` and ``band`` are None until there is a baseline.
    """

    value: float
    actual: float
    expected: float | None
    band: tuple[float, float] | None
    severity: Severity
    warm: bool
    reasons: tuple[str, ...]

    @property
    def text(self) -> str:
        """The reasons as one line, for an alert's summary."""
        return ", ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a band as a two-element list)."""
        return {
            "value": self.value, "actual": self.actual, "expected": self.expected,
            "band": None if self.band is None else list(self.band), "severity": self.severity,
            "warm": self.warm, "reasons": list(self.reasons),
        }


@runtime_checkable
class Detector(Protocol):
    """River-style online detector of one series; ``t`` is event time in UTC epoch seconds.

    ``score_one`` never changes state; ``learn_one`` of a time at or before the last one learned
    is ignored, so redelivering an observation after a crash does not count it twice.
    """

    kind: ClassVar[str]
    state_bound: ClassVar[int]  # bytes of compact JSON per series, tested

    def learn_one(self, x: Mapping[str, float], t: float) -> None: ...

    def score_one(self, x: Mapping[str, float], t: float) -> Score: ...

    def warm_at(self, t: float) -> bool:
        """False when ``score_one`` at ``t`` would say not warm, whatever ``x``: a cheap check,
        so a series whose rules all require ``warm`` is not scored while it warms up."""
        ...

    def to_state(self) -> State: ...

    def from_state(self, state: State | None) -> Self: ...


def check_thresholds(thresholds: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate (low, medium, high): positive and strictly increasing."""
    try:
        low, medium, high = (float(v) for v in thresholds)
    except (TypeError, ValueError):
        raise DetectorParameterError(
            f"thresholds {thresholds!r} must be three numbers (low, medium, high)") from None
    if not (0 < low < medium < high) or not math.isfinite(high):
        raise DetectorParameterError(
            f"thresholds {thresholds!r} must be finite and 0 < low < medium < high")
    return low, medium, high


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, refused unless finite and > 0 (the message names the parameter)."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DetectorParameterError(f"{name} {value!r} must be a finite number > 0")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    """``value`` as a float, refused unless a number >= 0 (NaN refused; the message names the parameter)."""
    if not isinstance(value, (int, float)) or not value >= 0:
        raise DetectorParameterError(f"{name} {value!r} must be a number >= 0")
    return float(value)


def severity_of(value: float, thresholds: tuple[float, float, float]) -> Severity:
    """The highest severity whose threshold ``value`` reaches (upward deviations only)."""
    low, medium, high = thresholds
    return "high" if value >= high else "medium" if value >= medium else "low" if value >= low else "none"


def fmt(x: float) -> str:
    """Three significant digits without exponent form: 412, 1,234, 0.0123, 0.0000450."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{digits}f}"
