"""Drift of a ratio (cost per request, tokens per model call): a recent exponentially weighted
mean of the log ratio against a long baseline, in standard errors. The shared method of
``UnitCostDrift`` (detectors/unit_cost.py) and ``TokenDrift`` (detectors/tokens.py); a subclass
names its numerator, denominator and unit, and its defaults.

Input: one observation per closed bucket per scope (any width; hourly by default, what the
defaults are tuned for) at ``t`` = the bucket's end, holding the numerator and the denominator
(the volume). Buckets whose volume is below ``min_volume`` are pooled until it is reached, so
a quiet scope's point is not one call's value.

Both means are time-decayed (half-lives in hours, so irregular points and gaps are handled)
and weighted by inverse noise variance. That variance is a power law of the point's volume,
``log var = c + p * log(1 / volume)``, fitted in logs (detectors/_scale.py): p near 1 when the
noise is that of averaging n calls, near 0 when it is mix noise. A point's weight ``1 / var`` is
fixed when it arrives and capped at twice the recent average; the sums of ``d * w`` and
``d**2 * w**2 * var`` then give the exact variance of ``fast - slow`` however the fit moves
later, so the score is a drift in standard errors. Each point is cleaned (clipped at
``huber_k`` of its own sigma) before it enters the means: one wild point moves the score by
about one standard error at most (1.85 measured against the ordinary bucket it replaced, at the
busiest hour), so it cannot fire alone; a sustained shift keeps adding and fires.

Volume does not enter the means' level: spend that grows with requests at a steady ratio
scores near zero (growth is not an anomaly). Why not river's ``EWMean``/``EWVar``: in river 0.26
their state is an opaque Rust object (bincode bytes, not JSON), they fade per update rather
than per hour, and carry no weights or weight sums for a standard error; with even hourly
points and no clipping the recent mean matches ``river.stats.EWMean`` to 1e-4 (tested).
docs/detectors.md has the method and parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from spendwarden.detectors._clock import HOUR
from spendwarden.detectors._scale import fit_add, fit_params, variance
from spendwarden.detectors.base import (
    Score, Severity, State, check_non_negative, check_positive, check_thresholds, fmt, severity_of,
)
from spendwarden.detectors.exceptions import DetectorParameterError, DetectorStateError

_MIN_RATIO = 1e-9  # the log of a free or empty bucket stays finite
_SCALE_KNOWN = 12.0  # decayed residuals behind the noise fit before it is used
_WEIGHT_CAP = 2.0  # a point weighs at most twice the recent average: bounds one point's pull
_PRIOR_VAR = 1.0  # per unit of volume until the fit is known: a per-call CV of 1, averaged


class RatioDrift:
    """Sustained upward drift of one scope's ratio ``numerator / denominator``.

    Subclasses set ``kind``, ``_tag`` (the state's version tag), ``_noun`` (what the ratio is,
    for reasons), the keys of ``x`` they read (``_numerator``, ``_denominator``), the unit and
    divisor of the denominator, and their defaults.
    """

    kind: ClassVar[str]
    state_bound: ClassVar[int] = 640
    _tag: ClassVar[str]
    _noun: ClassVar[str]
    _numerator: ClassVar[str]
    _extra_params: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        thresholds: tuple[float, float, float],
        min_change: float,
        fast_half_life_h: float,
        slow_half_life_h: float,
        warmup_h: float,
        min_volume: float,
        huber_k: float,
        min_sigma: float,
    ) -> None:
        self.thresholds = check_thresholds(thresholds)
        self.min_change = check_non_negative("min_change", min_change)
        self.fast_half_life_h = check_positive("fast_half_life_h", fast_half_life_h)
        self.slow_half_life_h = check_positive("slow_half_life_h", slow_half_life_h)
        if self.fast_half_life_h >= self.slow_half_life_h:
            raise DetectorParameterError(
                f"fast_half_life_h {fast_half_life_h!r} must be less than "
                f"slow_half_life_h {slow_half_life_h!r}")
        self.warmup_h = check_positive("warmup_h", warmup_h)
        self.min_volume = check_positive("min_volume", min_volume)
        self.huber_k = check_positive("huber_k", huber_k)
        # A series without noise would clip every point to nothing and never see a step.
        self.min_sigma = check_positive("min_sigma", min_sigma)
        self._s: State | None = None

    # the denominator of ``x`` and what one unit of it is called; set per instance or class
    _denominator: str
    _divisor: float
    _unit: str

    # -- the verbs ---------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], t: float) -> None:
        """Fold in one closed bucket ending at ``t``; a bucket at or before the last one learned
        is ignored (a redelivery)."""
        s = self._s
        if s is not None and t <= s["t"]:
            return
        amount, volume = self._pooled(x)
        if s is None:
            s = self._s = {"v": self._tag, "t0": t, "t": t, "tp": t, "p": [0.0, 0.0], "st": [], "fit": [0.0] * 5}
        s["t"] = t
        if volume < self.min_volume:
            s["p"] = [amount, volume]
            return
        s["p"] = [0.0, 0.0]
        s["st"] = self._advance(s["st"], s["fit"], amount, volume, (t - s["tp"]) / HOUR, learn=True)
        s["tp"] = t

    def warm_at(self, t: float) -> bool:
        s = self._s
        return s is not None and (max(t, s["t"]) - s["t0"]) / HOUR >= self.warmup_h

    def score_one(self, x: Mapping[str, float], t: float) -> Score:
        """The drift as it stands with this bucket included (state unchanged)."""
        s = self._s
        st: list[float] = [] if s is None else s["st"]
        fit: list[float] = [0.0] * 5 if s is None else s["fit"]
        amount, volume = self._pooled(x)
        if volume >= self.min_volume:
            hours = 0.0 if s is None else (t - s["tp"]) / HOUR
            st = self._advance(st, fit, amount, volume, hours, learn=False)
        bucket = f"{fmt(amount / volume)} {self._unit} in this bucket" if volume > 0 else "no volume yet"
        if not st or fit_params(fit, 1.0, _SCALE_KNOWN) is None:
            return Score(0.0, amount / volume if volume > 0 else 0.0, None, None, "none", False,
                         (bucket, "no baseline yet: too few points for a noise scale"))
        f1, f2, mf, s1, s2, ms, cross, _ = st
        se = math.sqrt(max(f2 / (f1 * f1) + s2 / (s1 * s1) - 2 * cross / (f1 * s1), 1e-24))
        value = (mf - ms) / se
        actual, expected = math.exp(mf), math.exp(ms)
        band_z = self.thresholds[0]
        band = (math.exp(ms - band_z * se), math.exp(ms + band_z * se))
        change = actual / expected - 1
        where = "above" if value > 0 else "below"
        reasons = [
            f"{self._noun} {fmt(actual)} {self._unit} recently vs baseline {fmt(expected)} "
            f"(band {fmt(band[0])}-{fmt(band[1])})",
            f"{change:+.1%} drift, {abs(value):.1f} standard errors {where}",
            f"half-lives {self.fast_half_life_h:g} h recent, {self.slow_half_life_h / 24:g} days baseline",
        ]
        age_h = 0.0 if s is None else (max(t, s["t"]) - s["t0"]) / HOUR
        warm = age_h >= self.warmup_h
        severity: Severity = severity_of(value, self.thresholds)
        if not warm:
            reasons.append(f"warming up: {age_h:.0f} of {self.warmup_h:g} hours of history, no alert yet")
            severity = "none"
        elif severity != "none" and change < self.min_change:
            reasons.append(f"change under the {self.min_change:.0%} minimum")
            severity = "none"
        return Score(value, actual, expected, band, severity, warm, tuple(reasons))

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> State:
        """This series' state as JSON values (a copy); at most ``state_bound`` bytes as compact JSON."""
        s = self._s
        return {} if s is None else {k: list(v) if isinstance(v, list) else v for k, v in s.items()}

    def from_state(self, state: State | None) -> Self:
        """A detector with these parameters and ``state`` (None or {} for a new series)."""
        clone = type(self)(**self.params())
        if state:
            if (state.get("v") != self._tag or len(state.get("st") or ()) not in (0, 8)
                    or len(state.get("p") or ()) != 2 or len(state.get("fit") or ()) != 5):
                raise DetectorStateError(f"not a {self._tag} state: {str(state)[:80]}")
            clone._s = {k: list(v) if isinstance(v, list) else v for k, v in state.items()}
        return clone

    def params(self) -> dict[str, Any]:
        """The constructor's arguments (what ``from_state`` copies)."""
        return {k: getattr(self, k) for k in self._extra_params + (
            "thresholds", "min_change", "fast_half_life_h", "slow_half_life_h", "warmup_h",
            "min_volume", "huber_k", "min_sigma")}

    # -- internals ---------------------------------------------------------------------------

    def _pooled(self, x: Mapping[str, float]) -> tuple[float, float]:
        """This bucket's numerator and volume (in the denominator's unit) plus what is pooled so far."""
        amount = max(0.0, float(x.get(self._numerator, 0.0)))
        volume = max(0.0, float(x.get(self._denominator, 0.0))) / self._divisor
        if self._s is not None:
            amount, volume = amount + self._s["p"][0], volume + self._s["p"][1]
        return amount, volume

    def _advance(self, st: list[float], fit: list[float], amount: float, volume: float, hours: float,
                 learn: bool) -> list[float]:
        """The statistics after one point (``volume`` units adding up to ``amount``), ``hours``
        after the previous one: ``[f1, f2, fast mean, s1, s2, slow mean, cross, slow count]``.

        A point weighs ``w = 1 / var`` (its noise variance from the fit, fixed when it arrives),
        capped at ``_WEIGHT_CAP`` times the recent average weight so no single point dominates;
        ``f1``/``s1`` sum ``d * w`` and ``f2``/``s2``/``cross`` sum ``d**2 * w**2 * var``, which is
        the variance of the weighted means whatever the weights. With ``learn`` the point's
        residual also goes into the noise fit (in place)."""
        u = math.log(max(amount / volume, _MIN_RATIO))
        x = -math.log(volume)
        params = fit_params(fit, 1.0, _SCALE_KNOWN)
        var = max(_PRIOR_VAR / volume if params is None else variance(params, x), self.min_sigma ** 2)
        weight = 1 / var
        if not st:
            return [weight, weight, u, weight, weight, u, weight, 1.0]
        f1, f2, mf, s1, s2, ms, cross, count = st
        weight = min(weight, _WEIGHT_CAP * s1 / count)
        resid = u - mf
        if learn:
            fit_add(fit, x, resid * resid, 0.5 ** (hours / self.slow_half_life_h))
        if params is not None:
            limit = self.huber_k * math.sqrt(var)
            resid = min(limit, max(-limit, resid))
        cleaned, spread = mf + resid, weight * weight * var
        df = 0.5 ** (hours / self.fast_half_life_h)
        ds = 0.5 ** (hours / self.slow_half_life_h)
        f1, f2 = df * f1 + weight, df * df * f2 + spread
        s1, s2 = ds * s1 + weight, ds * ds * s2 + spread
        return [f1, f2, mf + weight * (cleaned - mf) / f1, s1, s2, ms + weight * (cleaned - ms) / s1,
                df * ds * cross + spread, ds * count + 1]
