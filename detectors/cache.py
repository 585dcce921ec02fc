"""Cache collapse: a scope's model calls stop hitting the prompt cache, found by a CUSUM of the
log-likelihood ratio of its hits and misses (Page's sequential test).

The call profile tests the share of cache hits over its recent views (10- and 60-minute
half-lives), so it sees a collapse on a busy scope within minutes but holds only about ten
calls of a small one: a collapse there is found late or never. A sequential test keeps every
call of the collapse as evidence, however long it takes to arrive: each miss adds
``log((1 - p1) / (1 - p0))`` (about +0.5 nats at a usual hit rate p0 of 45%), each hit adds
``log(p1 / p0)`` (about -2.3), with p1 = ``drop_to`` x p0 the collapsed rate; the sum, floored
at zero, is the score. Under the usual rate it drifts down by ~0.7 nats a call and stays near
zero; after a collapse it rises by ~0.5 a call, so the default alert at 15 nats needs about 30
calls without a hit, and a returning hit takes 2.3 off at once. The sum is capped at the high
threshold, so however long the collapse lasted, hits coming back resolve it within ~15 calls,
and once the sum falls back under the medium threshold the test restarts from zero.

Input: one observation per closed bucket (minutes in the engine), ``x = {"model_calls": n,
"hits": h}`` (model calls, and those that read cached tokens). The usual rate p0 is a decayed
share (half-life ``baseline_half_life_h``); scopes that rarely hit the cache (p0 under
``min_hit_rate``) are not tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from spendwarden.detectors.base import (
    Score, Severity, State, check_non_negative, check_positive, check_thresholds, severity_of,
)
from spendwarden.detectors.exceptions import DetectorParameterError, DetectorStateError

_TAG = "cache-1"


class CacheCollapse:
    """One scope's cache hits: the usual hit rate and the CUSUM of evidence that it collapsed.

    >>> import random
    >>> rng, det = random.Random(2), CacheCollapse()
    >>> for minute in range(3 * 24 * 60):  # three days, a call every 6 minutes, 45% hits
    ...     if minute % 6 == 0:
    ...         det.learn_one({"model_calls": 1, "hits": rng.random() < 0.45}, minute * 60.0)
    >>> for minute in range(3 * 24 * 60, 3 * 24 * 60 + 240):  # then four hours without a hit
    ...     if minute % 6 == 0:
    ...         det.learn_one({"model_calls": 1, "hits": 0}, minute * 60.0)
    >>> score = det.score_one({}, minute * 60.0)
    >>> score.severity, score.value > 15
    ('medium', True)
    >>> print(score.reasons[0])
    cache hits: 0 of 46 model calls since 23:24 UTC vs 41% usual
    """

    kind: ClassVar[str] = "cache"
    state_bound: ClassVar[int] = 320

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (10.0, 15.0, 25.0),
        drop_to: float = 0.1,
        min_hit_rate: float = 0.15,
        baseline_half_life_h: float = 72.0,
        warmup_h: float = 48.0,
        warmup_calls: float = 100.0,
    ) -> None:
        self.thresholds = check_thresholds(thresholds)
        if not isinstance(drop_to, (int, float)) or not 0 < drop_to < 1:
            raise DetectorParameterError(f"drop_to {drop_to!r} must be a number between 0 and 1")
        self.drop_to = float(drop_to)
        if not isinstance(min_hit_rate, (int, float)) or not 0 < min_hit_rate < 1:
            raise DetectorParameterError(f"min_hit_rate {min_hit_rate!r} must be a number between 0 and 1")
        self.min_hit_rate = float(min_hit_rate)
        self.baseline_half_life_h = check_positive("baseline_half_life_h", baseline_half_life_h)
        self.warmup_h = check_positive("warmup_h", warmup_h)
        self.warmup_calls = check_non_negative("warmup_calls", warmup_calls)
        # state: t0, t (last learned), base [calls, hits] decayed to t, cusum, run [calls, hits,
        # start]: the calls since the CUSUM last left zero (what the reasons count)
        self._s: State | None = None

    # -- the verbs ---------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], t: float) -> None:
        """Fold in one closed bucket ending at ``t``; a time at or before the last one learned is
        ignored (a redelivery)."""
        s = self._s
        if s is None:
            s = self._s = {"v": _TAG, "t0": t, "t": t, "base": [0.0, 0.0], "cusum": 0.0, "run": [0.0, 0.0, t]}
        elif t <= s["t"]:
            return
        calls, hits = _counts(x)
        factor = 0.5 ** ((t - s["t"]) / (self.baseline_half_life_h * 3600))
        base = s["base"] = [s["base"][0] * factor, s["base"][1] * factor]
        s["t"] = t
        if calls <= 0:
            return
        s["cusum"], s["run"] = self._step(s, base, calls, hits, t)
        base[0] += calls
        base[1] += hits

    def warm_at(self, t: float) -> bool:
        s = self._s
        return s is not None and t - s["t0"] >= self.warmup_h * 3600 and s["base"][0] >= self.warmup_calls

    def score_one(self, x: Mapping[str, float], t: float) -> Score:
        """The CUSUM with this bucket included (state unchanged)."""
        s = self._s
        if s is None:
            return Score(0.0, 0.0, None, None, "none", False, ("no baseline yet: no model calls",))
        calls, hits = _counts(x)
        cusum, run = s["cusum"], s["run"]
        if calls > 0:
            cusum, run = self._step(s, s["base"], calls, hits, t)
        p0 = self._usual(s["base"])
        warm = t - s["t0"] >= self.warmup_h * 3600 and s["base"][0] >= self.warmup_calls
        if p0 is None:
            why = ("no baseline yet: too few model calls" if s["base"][0] < self.warmup_calls else
                   f"not tested: the scope hits the cache on under {self.min_hit_rate:.0%} of its calls")
            return Score(0.0, 0.0, None, None, "none", warm, (why,))
        actual = run[1] / run[0] if run[0] > 0 else p0
        since = _clock(run[2])
        reasons: tuple[str, ...] = (
            f"cache hits: {run[1]:g} of {run[0]:g} model calls since {since} vs {p0:.0%} usual",
            f"evidence of a collapse to {self.drop_to * p0:.0%}: {cusum:.1f} nats (CUSUM)",
        ) if cusum > 0 else (f"cache hits as usual ({p0:.0%} of model calls)",)
        severity: Severity = severity_of(cusum, self.thresholds) if warm else "none"
        if not warm:
            reasons += (f"warming up: {self.warmup_h:g} hours and {self.warmup_calls:g} model calls of "
                        "history first, no alert yet",)
        return Score(cusum, actual, p0, None, severity, warm, reasons)

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> State:
        """This series' state as JSON values (a copy); at most ``state_bound`` bytes as compact JSON."""
        s = self._s
        return {} if s is None else {**s, "base": list(s["base"]), "run": list(s["run"])}

    def from_state(self, state: State | None) -> Self:
        """A detector with these parameters and ``state`` (None or {} for a new series)."""
        clone = type(self)(**self.params())
        if state:
            if state.get("v") != _TAG or len(state.get("base") or ()) != 2 or len(state.get("run") or ()) != 3:
                raise DetectorStateError(f"not a {_TAG} state: {str(state)[:80]}")
            clone._s = {**state, "base": list(state["base"]), "run": list(state["run"])}
        return clone

    def params(self) -> dict[str, Any]:
        """The constructor's arguments (what ``from_state`` copies)."""
        return {k: getattr(self, k) for k in (
            "thresholds", "drop_to", "min_hit_rate", "baseline_half_life_h", "warmup_h", "warmup_calls")}

    # -- internals ---------------------------------------------------------------------------

    def _usual(self, base: list[float]) -> float | None:
        """The usual hit rate, or None when the scope is not tested (too little history, too few hits)."""
        if base[0] < self.warmup_calls:
            return None
        p0 = (base[1] + 0.5) / (base[0] + 1)
        return p0 if p0 >= self.min_hit_rate else None

    def _step(self, s: State, base: list[float], calls: float, hits: float,
              t: float) -> tuple[float, list[float]]:
        """The CUSUM and the run after ``calls`` with ``hits`` at ``t``."""
        p0 = self._usual(base)
        if p0 is None:
            return 0.0, [0.0, 0.0, t]
        p1 = p0 * self.drop_to
        cusum = s["cusum"]
        run = list(s["run"]) if cusum > 0 else [0.0, 0.0, t]
        cusum = cusum + hits * math.log(p1 / p0) + (calls - hits) * math.log((1 - p1) / (1 - p0))
        cusum = min(self.thresholds[2], max(0.0, cusum))  # capped: hits coming back resolve it soon
        if cusum <= 0 or s["cusum"] >= self.thresholds[1] > cusum:
            # No evidence left, or an alarm's evidence fell back under the alert level: the
            # collapse is over and the test restarts (what is left of it must not add to a
            # chance run of misses hours later).
            return 0.0, [0.0, 0.0, t]
        return cusum, [run[0] + calls, run[1] + hits, run[2]]


def _counts(x: Mapping[str, float]) -> tuple[float, float]:
    """Model calls and cache hits of an observation (non-finite or negative as zero, hits <= calls)."""
    calls = float(x.get("model_calls", 0.0))
    calls = calls if 0 <= calls < math.inf else 0.0
    hits = float(x.get("hits", 0.0))
    hits = min(calls, hits) if 0 <= hits < math.inf else 0.0
    return calls, hits


def _clock(t: float) -> str:
    """``HH:MM UTC`` of an epoch time (the reasons' "since")."""
    minute = int(t // 60) % 1440
    return f"{minute // 60:02d}:{minute % 60:02d} UTC"
