"""Token creep: tokens per successful model call drifting up over days (a prompt or context
that grows a little every day, a retrieval step that returns ever more chunks).

A slow leak of this kind hides from the unit-cost detector on small scopes: the price of a
call varies with the model mix (a spread of about one in logs), while the tokens of one
use case's calls vary about half as much, so the same drift reaches twice the standard
errors. Failed attempts (no output) are left out: a retry storm is the call profile's to
report. Same method as ``UnitCostDrift`` (detectors/drift.py) with other defaults, found on
the tuning scenarios: 48 h recent against a two-week baseline, and each hour clipped at 1.5
(not 3) of its sigmas, so hours of a sudden prompt bloat (x3, the call profile's to report)
count as a small rise each and their tail cannot fire after the bloat is over, while a creep,
whose hours are each only a little above the recent mean, passes whole.

Input: one observation per closed bucket per scope, ``x = {"tokens": k, "model_calls": n}``
(input plus output tokens of the bucket's successful model calls, and their count) at ``t`` =
the bucket's end.
"""

from __future__ import annotations

from typing import ClassVar

from spendwarden.detectors.drift import RatioDrift


class TokenDrift(RatioDrift):
    """Sustained drift of one scope's tokens per model call; a high score means longer calls.

    >>> import random
    >>> rng = random.Random(5)
    >>> det = TokenDrift()
    >>> for hour in range(24 * 28):  # 14 steady days, then +4% tokens a day
    ...     calls = rng.randint(2, 8)
    ...     grow = 1.04 ** max(0, (hour - 14 * 24) / 24)
    ...     x = {"tokens": sum(1500 * grow * rng.lognormvariate(0, 0.5) for _ in range(calls)),
    ...          "model_calls": calls}
    ...     if hour == 15 * 24:
    ...         print(det.score_one(x, (hour + 1) * 3600).severity)
    ...     det.learn_one(x, (hour + 1) * 3600)
    none
    >>> score = det.score_one(x, (hour + 1) * 3600)
    >>> score.severity, score.value > 5
    ('high', True)
    """

    kind: ClassVar[str] = "tokens"
    _tag: ClassVar[str] = "tokens-1"
    _noun: ClassVar[str] = "tokens per model call"
    _numerator: ClassVar[str] = "tokens"
    _denominator = "model_calls"
    _divisor = 1.0
    _unit = "tokens/call"

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (4.0, 5.0, 7.0),
        min_change: float = 0.05,
        fast_half_life_h: float = 48.0,
        slow_half_life_h: float = 336.0,
        warmup_h: float = 168.0,
        min_volume: float = 20.0,
        huber_k: float = 1.5,
        min_sigma: float = 0.02,
    ) -> None:
        super().__init__(thresholds, min_change, fast_half_life_h, slow_half_life_h, warmup_h, min_volume,
                         huber_k, min_sigma)
