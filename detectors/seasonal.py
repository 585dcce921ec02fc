"""Seasonal baseline of hourly spend: an hour-of-week profile with a robust z-score on log spend.

Input: one observation per closed hour per scope, ``x = {"spend_usd": spend of that hour}``
with ``t`` any time inside the hour (its start, usually). Feed every closed hour, zero-spend
ones included; an hour never fed is missing data, not zero.

Model, in log space (``y = log(spend + floor_usd)``), a robust Holt-Winters (Gelper, Fried &
Croux, 2010): ``y = level + season[slot] + noise``. Each observation is first *cleaned*: its
residual against the prediction is clipped at ``huber_k`` sigmas, so a spike moves the
baseline by a bounded amount. The score is the unclipped residual over a robust sigma.

The sigma follows the noise of a sum of calls, which shrinks as spend (volume) grows: a power
law ``log var = c + p * log(1 / expected)`` fitted online in logs (detectors/_scale.py), so a
busy weekday hour gets a narrow band and a quiet night or weekend hour a wide one (one scale per
hour of day, pooling weekdays with weekends, was twice too wide at office hours). Residuals are
one step ahead and rescaled by the slot's own estimation error (``1 + 1/samples``), so z is
calibrated on what the predictor actually gets wrong.

Why not median/MAD over stored hours: a median per hour-of-week slot needs several weeks of raw
hours per series (3 weeks = 504 values), which the engine's memory budget does not allow
(streams/history.py keeps 8 days for the same reason), and a MAD per slot from 2-4 samples is
noise. The clipped updates keep 168 + 24 offsets; the scale is five sums per profile.
The first two weeks use the hour-of-day profile (no alert by default until 14 days).
Method, parameters and bounds: docs/detectors.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from spendwarden.detectors._clock import HOUR, local_slots
from spendwarden.detectors._scale import fit_add, fit_params, variance
from spendwarden.detectors.base import (
    Score, Severity, State, check_non_negative, check_positive, check_thresholds, fmt, severity_of,
)
from spendwarden.detectors.exceptions import DetectorParameterError, DetectorStateError
from spendwarden.streams.periods import zone

_TAG = "seasonal-1"
_DP = 4  # decimals kept in state (log units): 0.01% of spend, far below any noise; halves the bytes
_Z_CLIP = 4.0  # z clipped to this before averaging for acceptance
_P_MAX = 2.0  # the power law's exponent is kept in [0, 2]


class SeasonalBaseline:
    """Hour-of-week baseline of one scope's hourly spend (hour-of-day while it has < 2 weeks).

    >>> import random
    >>> rng = random.Random(7)
    >>> det = SeasonalBaseline()
    >>> for hour in range(21 * 24):  # three weeks of a daily cycle around 100 USD/h, 10% noise
    ...     usd = 100 * (1.5 if 9 <= hour % 24 < 18 else 0.7) * rng.lognormvariate(0, 0.1)
    ...     det.learn_one({"spend_usd": usd}, hour * 3600)
    >>> score = det.score_one({"spend_usd": 600.0}, 21 * 24 * 3600 + 10 * 3600)
    >>> score.severity, score.warm, score.band[0] < 150 < score.band[1]
    ('high', True, True)
    >>> det.score_one({"spend_usd": 160.0}, 21 * 24 * 3600 + 10 * 3600).severity
    'none'
    """

    kind: ClassVar[str] = "seasonal"
    state_bound: ClassVar[int] = 3072

    def __init__(
        self,
        tz: str = "UTC",
        thresholds: tuple[float, float, float] = (4.0, 6.0, 9.0),
        min_excess_usd: float = 1.0,
        floor_usd: float = 0.01,
        warmup_days: float = 14.0,
        min_days: int = 3,
        week_memory: int = 4,
        day_memory: int = 7,
        scale_memory_days: float = 28.0,
        level_half_life_h: float = 24.0,
        accept_z: float = 2.0,
        accept_half_life_h: float = 12.0,
        huber_k: float = 2.5,
        min_scale: float = 0.05,
    ) -> None:
        self.tz = tz
        zone(tz)  # an unknown zone fails here, naming it, not on the first event
        self.thresholds = check_thresholds(thresholds)
        self.min_excess_usd = check_non_negative("min_excess_usd", min_excess_usd)
        self.floor_usd = check_positive("floor_usd", floor_usd)
        self.warmup_days = check_positive("warmup_days", warmup_days)
        for name, value in (("min_days", min_days), ("week_memory", week_memory), ("day_memory", day_memory)):
            if not isinstance(value, int) or not 1 <= value <= 9:  # one-digit counts keep the state bound
                raise DetectorParameterError(f"{name} {value!r} must be an integer from 1 to 9")
        self.min_days, self.week_memory, self.day_memory = min_days, week_memory, day_memory
        self.scale_memory_days = check_positive("scale_memory_days", scale_memory_days)
        self.level_half_life_h = check_positive("level_half_life_h", level_half_life_h)
        self.accept_z = check_positive("accept_z", accept_z)
        if self.accept_z >= _Z_CLIP:
            raise DetectorParameterError(
                f"accept_z {accept_z!r} must be < {_Z_CLIP:g} (the clipped z it averages)")
        self.accept_half_life_h = check_positive("accept_half_life_h", accept_half_life_h)
        self.huber_k = check_positive("huber_k", huber_k)
        self.min_scale = check_positive("min_scale", min_scale)
        self._alpha = 1 - 0.5 ** (1 / self.level_half_life_h)
        self._accept_alpha = 1 - 0.5 ** (1 / self.accept_half_life_h)
        self._decay = 1 - 1 / (24 * self.scale_memory_days)
        self._s: State | None = None

    # -- the verbs ---------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], t: float) -> None:
        """Fold in the spend of the closed hour containing ``t``; an hour at or before the last
        one learned is ignored (a redelivery)."""
        hour, y = int(t // HOUR), self._log(x)
        s = self._s
        if s is None:
            s = self._s = {"v": _TAG, "n": 0, "h": hour, "L": round(y, _DP), "acc": [0.0, 0, 0.0],
                           "d": [0.0] * 24, "dc": [0] * 24, "w": [0.0] * 168, "wc": [0] * 168,
                           "vd": [0.0] * 5, "vw": [0.0] * 5}
        elif hour <= s["h"]:
            return
        hd, hw = local_slots(self.tz, hour)
        d, dc, w, wc = s["d"], s["dc"], s["w"], s["wc"]
        level = s["L"]
        sigma_d = self._sigma(s["vd"], level + d[hd], dc[hd]) if dc[hd] else None
        sigma_w = self._sigma(s["vw"], level + w[hw], wc[hw]) if wc[hw] >= 2 else None
        # Predictive residuals of both profiles feed their own scales (before any update).
        if dc[hd]:
            self._learn_scale(s["vd"], level + d[hd], dc[hd], y)
        if wc[hw]:
            self._learn_scale(s["vw"], level + w[hw], wc[hw], y)
        if wc[hw] >= 2:  # hour-of-week mode: clean against the week slot and move the level
            resid = y - level - w[hw]
            if sigma_w is not None:
                shift = self._accept(s["acc"], resid, sigma_w)
                level, resid = level + shift, resid - shift
                resid = min(self.huber_k * sigma_w, max(-self.huber_k * sigma_w, resid))
            new_level = round(level + self._alpha * resid, _DP)
            day_value = week_value = level + w[hw] + resid - new_level
            s["L"] = new_level
        else:
            # Until a week slot has two samples the level stays put (an hour-of-day profile would
            # drag it through every weekend) and the week slot learns raw values: cleaning them
            # against the hour-of-day profile would bake its weekday bias into the weekend slots.
            week_value = day_value = y - level
            if sigma_d is not None:
                limit = self.huber_k * sigma_d
                day_value = d[hd] + min(limit, max(-limit, y - level - d[hd]))
        for slots, counts, i, memory, value in ((d, dc, hd, self.day_memory, day_value),
                                                (w, wc, hw, self.week_memory, week_value)):
            c = counts[i]
            slots[i] = round(value if c == 0 else slots[i] + (value - slots[i]) / min(c + 1, memory), _DP)
            counts[i] = min(c + 1, memory)
        s["n"] += 1
        s["h"] = hour

    def expected(self, t: float) -> float | None:
        """The profile's spend (USD/h) for the hour of ``t``, or None before there is one: what
        ``score_one`` would report as expected, without its scoring and reasons (cheap)."""
        s = self._s
        if s is None:
            return None
        hd, hw = local_slots(self.tz, int(t // HOUR))
        if s["wc"][hw] >= 2:
            season = s["w"][hw]
        elif s["dc"][hd] >= self.min_days:
            season = s["d"][hd]
        else:
            return None
        return max(0.0, math.exp(s["L"] + season) - self.floor_usd)

    def warm_at(self, t: float) -> bool:
        return self._s is not None and self._s["n"] >= self.warmup_days * 24

    def score_one(self, x: Mapping[str, float], t: float) -> Score:
        """How unusual this hour's spend is against the profile (state unchanged)."""
        s, usd = self._s, max(0.0, float(x.get("spend_usd", 0.0)))
        days = 0.0 if s is None else s["n"] / 24
        hd, hw = local_slots(self.tz, int(t // HOUR))
        season = sigma = None
        if s is not None and s["wc"][hw] >= 2:
            season = s["w"][hw]
            sigma = self._sigma(s["vw"], s["L"] + season, s["wc"][hw])
            profile = f"hour-of-week profile from {days:.0f} days"
        elif s is not None and s["dc"][hd] >= self.min_days:
            season = s["d"][hd]
            sigma = self._sigma(s["vd"], s["L"] + season, s["dc"][hd])
            profile = f"hour-of-day profile from {days:.1f} days (hour-of-week from 14)"
        if s is None or season is None or sigma is None:
            return Score(0.0, usd, None, None, "none", False, (f"spend {fmt(usd)} USD/h",
                         f"no baseline yet: {days:.1f} days of history, needs {self.min_days}"))
        pred = s["L"] + season
        value = (self._log(x) - pred) / sigma
        floor, band_z = self.floor_usd, self.thresholds[0]
        expected = max(0.0, math.exp(pred) - floor)
        band = (max(0.0, math.exp(pred - band_z * sigma) - floor), math.exp(pred + band_z * sigma) - floor)
        where = "above" if value > 0 else "below"
        reasons = [f"spend {fmt(usd)} USD/h vs expected {fmt(expected)} (band {fmt(band[0])}-{fmt(band[1])})",
                   f"{abs(value):.1f} robust sigmas {where}", profile]
        warm = s["n"] >= self.warmup_days * 24
        severity: Severity = severity_of(value, self.thresholds)
        if not warm:
            reasons.append(f"warming up: {days:.1f} of {self.warmup_days:g} days of history, no alert yet")
            severity = "none"
        elif severity != "none" and usd - expected < self.min_excess_usd:
            reasons.append(f"excess {fmt(usd - expected)} USD/h is under the {self.min_excess_usd:g} "
                           "USD/h minimum")
            severity = "none"
        return Score(value, usd, expected, band, severity, warm, tuple(reasons))

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> State:
        """This series' state as JSON values (a copy); at most ``state_bound`` bytes as compact JSON."""
        s = self._s
        return {} if s is None else {k: list(v) if isinstance(v, list) else v for k, v in s.items()}

    def from_state(self, state: State | None) -> Self:
        """A detector with these parameters and ``state`` (None or {} for a new series)."""
        clone = type(self)(**self.params())
        if state:
            lengths = {"d": 24, "dc": 24, "w": 168, "wc": 168, "vd": 5, "vw": 5, "acc": 3}
            if state.get("v") != _TAG or any(len(state.get(k) or ()) != n for k, n in lengths.items()):
                raise DetectorStateError(f"not a {_TAG} state: {str(state)[:80]}")
            clone._s = {k: list(v) if isinstance(v, list) else v for k, v in state.items()}
        return clone

    def params(self) -> dict[str, Any]:
        """The constructor's arguments (what ``from_state`` copies)."""
        return {k: getattr(self, k) for k in (
            "tz", "thresholds", "min_excess_usd", "floor_usd", "warmup_days", "min_days", "week_memory",
            "day_memory", "scale_memory_days", "level_half_life_h", "accept_z", "accept_half_life_h",
            "huber_k", "min_scale")}

    # -- internals ---------------------------------------------------------------------------

    def _log(self, x: Mapping[str, float]) -> float:
        return math.log(max(0.0, float(x.get("spend_usd", 0.0))) + self.floor_usd)

    def _variance(self, v: list[float], pred: float) -> float | None:
        """Noise variance in log space where the log prediction is ``pred``: the power law
        ``log var = c + p * log(1 / expected)`` (p near 1 for count noise, near 0 for mix noise,
        detectors/_scale.py); None before a day of residuals."""
        params = fit_params(v, _P_MAX, 24)
        return None if params is None else max(self.min_scale ** 2, variance(params, -pred))

    def _sigma(self, v: list[float], pred: float, samples: int) -> float | None:
        """Predictive sigma: the noise sigma times sqrt(1 + 1/samples) for the slot's own error
        (a slot averaged from ``samples`` values)."""
        var = self._variance(v, pred)
        return None if var is None else math.sqrt(var * (1 + 1 / samples))

    def _learn_scale(self, v: list[float], pred: float, samples: int, y: float) -> None:
        """Fold one predictive residual, rescaled to the noise level by the slot's own error,
        into the power-law fit (detectors/_scale.py)."""
        fit_add(v, -pred, (y - pred) ** 2 / (1 + 1 / samples), self._decay)

    def _accept(self, acc: list[Any], resid: float, sigma: float) -> float:
        """A lasting shift becomes the new normal; returns the level change (usually 0).

        ``acc = [m, n, total]``: ``m`` is an exponentially weighted mean (half-life
        ``accept_half_life_h``) of z clipped to +-4, so noise keeps it near 0 (sd ~0.17) and one
        spike adds at most 0.22; an episode starts at the first hour beyond the band and sums
        the (clipped) residuals of every hour until ``|m|`` falls under 0.5. When ``|m|`` reaches
        ``accept_z``, the episode's mean residual moves into the level.
        """
        z = max(-_Z_CLIP, min(_Z_CLIP, resid / sigma))
        m = acc[0] = round(acc[0] + self._accept_alpha * (z - acc[0]), _DP)
        if acc[1] == 0 and abs(z) < self.thresholds[0]:
            return 0.0
        acc[1] += 1
        acc[2] = round(acc[2] + z * sigma, _DP)
        if abs(m) < 0.5:
            acc[1], acc[2] = 0, 0.0
        elif abs(m) >= self.accept_z and m * acc[2] > 0:
            shift: float = acc[2] / acc[1]
            acc[0], acc[1], acc[2] = 0.0, 0, 0.0
            return round(shift, _DP)
        return 0.0
