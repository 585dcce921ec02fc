"""Noise variance as a power law, fitted online by least squares in logs.

Both detectors see noise that shrinks with volume (a sum of n calls averages n prices) plus a
part that does not (mix changes). ``log var = c + s * x`` covers both with ``x`` the log of one
over the volume (or of one over expected spend): ``s`` near 1 for count noise, near 0 for mix
noise. In logs a squared Gaussian residual has the same spread whatever its variance
(sd 2.2), so plain least squares weighs quiet and busy points alike, where a fit of squared
residuals would be ruled by the noisiest points; a spike counts only by its logarithm.

``fit = [w, wx, wxx, wy, wxy]``: exponentially weighted sums (decay per point).
"""

from __future__ import annotations

import math

LOG_CHI2_BIAS = 1.2704  # -E[log Z**2] for a standard normal Z: mean log square -> log variance
_SQ_FLOOR = 1e-12  # squared residuals floored here so log(0) stays finite
_MAX_LOG = 50.0


def fit_add(fit: list[float], x: float, sq: float, decay: float) -> None:
    """Fold one squared residual ``sq`` observed at ``x`` into the sums."""
    y = math.log(max(sq, _SQ_FLOOR))
    fit[0] = fit[0] * decay + 1
    fit[1] = fit[1] * decay + x
    fit[2] = fit[2] * decay + x * x
    fit[3] = fit[3] * decay + y
    fit[4] = fit[4] * decay + x * y


def fit_params(fit: list[float], slope_max: float, min_points: float) -> tuple[float, float] | None:
    """(c, s) of ``log var = c + s * x`` with ``s`` kept in [0, slope_max]; None under
    ``min_points`` (decayed) residuals. With no spread in ``x`` the slope is 0."""
    w, wx, wxx, wy, wxy = fit
    if w < min_points:
        return None
    spread = w * wxx - wx * wx
    slope = (w * wxy - wx * wy) / spread if spread > 1e-6 * w * w else 0.0
    slope = min(slope_max, max(0.0, slope))
    return (wy - slope * wx) / w + LOG_CHI2_BIAS, slope


def variance(params: tuple[float, float], x: float) -> float:
    """The fitted variance at ``x``."""
    c, slope = params
    return math.exp(min(_MAX_LOG, c + slope * x))
