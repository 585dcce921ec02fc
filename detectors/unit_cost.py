"""Drift of unit cost (USD per request, per 1k tokens or per outcome): a recent exponentially
weighted mean of log unit cost against a week-long baseline, in standard errors.

Input: one observation per closed bucket per scope, ``x = {"cost_usd": c, "requests": n,
"tokens": k, "outcomes": o}`` (only ``cost_usd`` and the chosen denominator are read) at ``t`` =
the bucket's end. The method (pooling, noise fit, clipping, the standard error of the
difference) is ``RatioDrift``'s, in detectors/drift.py.
"""

from __future__ import annotations

from typing import ClassVar

from spendwarden.detectors.drift import RatioDrift
from spendwarden.detectors.exceptions import DetectorParameterError

_UNITS = {"requests": (1.0, "USD/request"), "tokens": (1000.0, "USD per 1k tokens"),
          "outcomes": (1.0, "USD/outcome")}


class UnitCostDrift(RatioDrift):
    """Sustained drift of one scope's unit cost; a high score means dearer than its baseline.

    >>> import random
    >>> rng = random.Random(3)
    >>> det = UnitCostDrift(per="requests")
    >>> for hour in range(24 * 24):  # 14 steady days, then +3% a day
    ...     price = 0.01 * 1.03 ** max(0, (hour - 14 * 24) / 24) * rng.lognormvariate(0, 0.05)
    ...     requests = rng.randint(200, 400)
    ...     x = {"cost_usd": price * requests, "requests": requests}
    ...     if hour == 15 * 24:
    ...         print(det.score_one(x, (hour + 1) * 3600).severity)
    ...     det.learn_one(x, (hour + 1) * 3600)
    none
    >>> score = det.score_one(x, (hour + 1) * 3600)
    >>> score.severity, round(score.actual / score.expected - 1, 2)
    ('high', 0.16)
    """

    kind: ClassVar[str] = "unit_cost"
    _tag: ClassVar[str] = "unit-cost-1"
    _noun: ClassVar[str] = "unit cost"
    _numerator: ClassVar[str] = "cost_usd"
    _extra_params: ClassVar[tuple[str, ...]] = ("per",)

    def __init__(
        self,
        per: str = "requests",
        thresholds: tuple[float, float, float] = (4.0, 6.0, 9.0),
        min_change: float = 0.05,
        fast_half_life_h: float = 24.0,
        slow_half_life_h: float = 168.0,
        warmup_h: float = 72.0,
        min_volume: float = 20.0,
        huber_k: float = 3.0,
        min_sigma: float = 0.02,
    ) -> None:
        if per not in _UNITS:
            raise DetectorParameterError(f"per {per!r} must be one of {', '.join(_UNITS)}")
        self.per = per
        self._denominator = per
        self._divisor, self._unit = _UNITS[per]
        super().__init__(thresholds, min_change, fast_half_life_h, slow_half_life_h, warmup_h, min_volume,
                         huber_k, min_sigma)
