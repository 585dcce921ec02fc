"""A dear model's debut: the first calls of a model that a scope has not used for two weeks and
whose calls cost several times the scope's usual model call (a misroute to an expensive model,
an unreviewed model switch).

The call profile finds a misroute too, as a share of calls, but a share needs calls: a use
case with ten model calls an hour takes 30-60 minutes to show two misrouted calls, and one
call to a model never seen is only ~4 sigmas there. The price says more than the share: one
call of a model ten times dearer than the scope's mean call, never used before, is the
misroute's signature. That is a policy test (an allow-list learned from the scope's own
history), not a statistic, and it is stated as such in the reasons.

Input: one observation per closed bucket (minutes, in the engine) per scope, the calls and
cost of each model: ``x = {"model:gpt-4o": 3, "usd:gpt-4o": 0.021, ...}``. The score is the
price ratio of the dearest model that debuted within the last ``active_min`` minutes (two hours by default): its mean
call against the scope's mean model call over the last days, the debut's own calls left out.
A model is known once called; it is new again after ``forget_after_h`` without a call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from spendwarden.detectors.base import (
    Score, Severity, State, check_non_negative, check_positive, check_thresholds, fmt, severity_of,
)
from spendwarden.detectors.exceptions import DetectorStateError

_TAG = "new-model-1"
MAX_MODELS = 12  # models kept per scope; the least recently called one is forgotten first
NAME_CHARS = 48  # model names are cut to this in the state (bounds its size)


def _models_in(x: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """``{model: (calls, usd)}`` of an observation; non-finite or negative values are ignored."""
    out: dict[str, tuple[float, float]] = {}
    for key, calls in x.items():
        if not key.startswith("model:") or not (0 < calls < math.inf):
            continue
        name = key[6:]
        usd = x.get("usd:" + name, 0.0)
        usd = usd if 0 <= usd < math.inf else 0.0
        name = name[:NAME_CHARS]
        before = out.get(name, (0.0, 0.0))
        out[name] = (before[0] + calls, before[1] + usd)
    return out


class NewModel:
    """One scope's models: when each was first called (this time) and last called, and the
    scope's decayed calls and cost per model call.

    >>> det = NewModel()
    >>> for minute in range(4 * 24 * 60):  # four days of one cheap model, a call a minute
    ...     det.learn_one({"model:gpt-4o-mini": 1, "usd:gpt-4o-mini": 0.002}, minute * 60.0)
    >>> score = det.score_one({"model:claude-opus-4": 1, "usd:claude-opus-4": 0.05}, 4 * 86400.0)
    >>> score.severity, round(score.value)
    ('high', 25)
    >>> print(score.reasons[0])
    model claude-opus-4 new to this scope (no call in 14 days): 1 call at 0.0500 USD/call vs 0.00200 usual (25x)
    """

    kind: ClassVar[str] = "new_model"
    state_bound: ClassVar[int] = 2048

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (3.0, 5.0, 10.0),
        forget_after_h: float = 336.0,
        active_min: float = 120.0,
        baseline_half_life_h: float = 72.0,
        warmup_h: float = 48.0,
        warmup_calls: float = 200.0,
    ) -> None:
        self.thresholds = check_thresholds(thresholds)
        self.forget_after_h = check_positive("forget_after_h", forget_after_h)
        self.active_min = check_positive("active_min", active_min)
        self.baseline_half_life_h = check_positive("baseline_half_life_h", baseline_half_life_h)
        self.warmup_h = check_positive("warmup_h", warmup_h)
        self.warmup_calls = check_non_negative("warmup_calls", warmup_calls)
        # state: t0, t (last learned), n (calls ever), base [calls, usd] decayed to t,
        # m {model: [first call of this run, last call, calls, usd, scope warm at first call]}
        self._s: State | None = None

    # -- the verbs ---------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], t: float) -> None:
        """Fold in one closed bucket ending at ``t``; a time at or before the last one learned is
        ignored (a redelivery)."""
        s = self._s
        if s is None:
            s = self._s = {"v": _TAG, "t0": t, "t": t, "n": 0.0, "base": [0.0, 0.0], "m": {}}
        elif t <= s["t"]:
            return
        self._decay(s, t)
        models, forget = s["m"], self.forget_after_h * 3600
        for name, (calls, usd) in _models_in(x).items():
            entry = models.get(name)
            if entry is None or t - entry[1] > forget:
                entry = models[name] = [t, t, 0.0, 0.0, int(self._warm(s, t))]
            entry[1] = t
            entry[2] += calls
            entry[3] += usd
            s["n"] += calls
            if not self._debuting(entry, t):  # a debut's own calls stay out of the usual price
                s["base"][0] += calls
                s["base"][1] += usd
        if len(models) > MAX_MODELS:
            for name in sorted(models, key=lambda m: models[m][1])[:len(models) - MAX_MODELS]:
                del models[name]

    def warm_at(self, t: float) -> bool:
        return self._s is not None and self._warm(self._s, t)

    def score_one(self, x: Mapping[str, float], t: float) -> Score:
        """The dearest recent debut, with this bucket's calls included (state unchanged)."""
        s = self._s
        warm = s is not None and self._warm(s, t)
        base_calls, base_usd = (0.0, 0.0) if s is None else s["base"]
        usual = base_usd / base_calls if base_calls > 0 else 0.0
        models: dict[str, list[Any]] = {} if s is None else s["m"]
        debuts = {name: (e[2], e[3]) for name, e in models.items() if e[4] and self._debuting(e, t)}
        forget = self.forget_after_h * 3600
        for name, (calls, usd) in _models_in(x).items():
            entry = models.get(name)
            if entry is None or t - entry[1] > forget:  # new in this bucket
                if warm:
                    debuts[name] = (calls, usd)
            elif name in debuts:
                debuts[name] = (debuts[name][0] + calls, debuts[name][1] + usd)
        best, value = None, 0.0
        for name, (calls, usd) in debuts.items():
            ratio = (usd / calls) / usual if calls > 0 and usual > 0 else 0.0
            if ratio > value or best is None:
                best, value = name, ratio
        if best is None:
            why = "no model new to this scope" if usual > 0 else "no baseline yet: no model calls"
            return Score(0.0, 0.0, usual or None, None, "none", warm, (why,) + self._warming(s, t))
        calls, usd = debuts[best]
        actual = usd / calls if calls > 0 else 0.0
        reasons = (f"model {best} new to this scope (no call in {self.forget_after_h / 24:g} days): "
                   f"{calls:g} call{'s' if calls != 1 else ''} at {fmt(actual)} USD/call vs {fmt(usual)} usual "
                   f"({value:.0f}x)",) + self._warming(s, t)
        severity: Severity = severity_of(value, self.thresholds) if warm else "none"
        return Score(value, actual, usual or None, None, severity, warm, reasons)

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> State:
        """This series' state as JSON values (a copy); at most ``state_bound`` bytes as compact JSON."""
        s = self._s
        if s is None:
            return {}
        return {**s, "base": list(s["base"]), "m": {k: list(v) for k, v in s["m"].items()}}

    def from_state(self, state: State | None) -> Self:
        """A detector with these parameters and ``state`` (None or {} for a new series)."""
        clone = type(self)(**self.params())
        if state:
            models = state.get("m")
            if (state.get("v") != _TAG or not isinstance(models, dict) or len(state.get("base") or ()) != 2
                    or any(not isinstance(v, list) or len(v) != 5 for v in models.values())):
                raise DetectorStateError(f"not a {_TAG} state: {str(state)[:80]}")
            clone._s = {**state, "base": list(state["base"]), "m": {k: list(v) for k, v in models.items()}}
        return clone

    def params(self) -> dict[str, Any]:
        """The constructor's arguments (what ``from_state`` copies)."""
        return {k: getattr(self, k) for k in (
            "thresholds", "forget_after_h", "active_min", "baseline_half_life_h", "warmup_h", "warmup_calls")}

    # -- internals ---------------------------------------------------------------------------

    def _warm(self, s: State, t: float) -> bool:
        return t - s["t0"] >= self.warmup_h * 3600 and s["n"] >= self.warmup_calls

    def _warming(self, s: State | None, t: float) -> tuple[str, ...]:
        if s is not None and self._warm(s, t):
            return ()
        hours = 0.0 if s is None else (t - s["t0"]) / 3600
        calls = 0.0 if s is None else s["n"]
        return (f"warming up: {hours:.0f} of {self.warmup_h:g} hours and {calls:g} of {self.warmup_calls:g} "
                "calls of history, no alert yet",)

    def _debuting(self, entry: list[Any], t: float) -> bool:
        """A model still in its debut: first called (this run) within the last ``active_min``."""
        return t - entry[0] <= self.active_min * 60

    def _decay(self, s: State, t: float) -> None:
        factor = 0.5 ** ((t - s["t"]) / (self.baseline_half_life_h * 3600))
        s["base"] = [s["base"][0] * factor, s["base"][1] * factor]
        s["t"] = t
