"""Shifts in how a scope's calls look (issue 6, 2c): model mix, workflow-step mix, cache hits,
failed calls, input and output tokens per model call. Scored per one-minute bucket.

Input: one observation per closed minute per scope, the sums of its calls
(``profile_counts`` builds them from events; the engine keeps the open minute):

- ``calls``, ``model_calls``, ``failed`` (model calls without output), ``hits`` (model calls
  with cached tokens), ``ok`` (model calls with output);
- ``in_log``/``in_log2``: sums of ``log(1 + input_tokens)`` and its square over model calls;
  ``out_log``/``out_log2`` the same of output tokens over calls with output;
- ``model:<name>`` (model calls per model) and ``step:<name>`` (calls per workflow step).

Each feature keeps time-decayed sums: **recent** ones (half-lives ``recent_half_lives_min``, 10
and 60 minutes: a quick view for a sudden shift, a longer one that gathers rare events such as
failed retries on a small scope) and a **baseline** (half-life ``baseline_half_life_h``). A
score compares each recent view, plus the open minute passed to ``score_one``, with the
baseline, and reports each feature's largest shift. A call enters the baseline only as it
leaves the slowest recent view (half of it after 60 minutes, nearly all after four hours), so
an incident does not teach the baseline while it is being scored: three failed retries in a
scope that never had one stay three in nothing, not three in three.

- shares (a model's or a step's share of calls, failed calls and cache hits among model calls)
  by the signed root of the binomial deviance, which is a z-score that stays honest at small
  counts (three calls of a never-seen model out of five is a large one, three failures out of
  five at a 4% rate too). Only the costly direction counts: a model or a step gaining share,
  more failures, fewer cache hits;
- tokens per call by the shift of the recent mean of log tokens, in standard errors of the
  baseline spread: upward only.

Calls of one trace are not independent (a trace's steps follow each other, an agent keeps its
model), so shares vary more than a binomial says. Each family of shares keeps its own
dispersion, the decayed mean of each closed minute's Pearson statistic per degree of freedom
(a quasi-binomial scale, at least 1), and its z-scores are divided by its square root.

Recent sums count a call with weight 1 when it happens and less after, so they are treated as
counts; that understates the evidence a little (the effective number of a decayed sum is
larger), which errs toward quiet. Volume itself is not a feature: growth and surges at the
usual mix score near zero.

Why not river's HalfSpaceTrees: its state is Python objects of ``n_trees * 2**height`` nodes
(tens of KB a scope, not JSON), it needs features scaled to [0, 1] by hand, and its score does
not say *which* feature moved, which an alert must. docs/detectors.md has the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from spendwarden.detectors.base import Score, State, check_positive, check_thresholds, fmt, severity_of
from spendwarden.detectors.exceptions import DetectorParameterError, DetectorStateError

_TAG = "profile-2"
BASE_FIELDS = ("calls", "model_calls", "failed", "hits", "ok", "in_log", "in_log2", "out_log", "out_log2", "refail",
               "traces")
# How far traces go: the depth (calls so far) and age (minutes since the first call) buckets a
# trace reaches, each counted once per trace as it enters it, against the traces started. A
# loop takes its traces to depths and ages the scope's traces rarely reach; counting traces,
# not calls, keeps one long trace from looking like many independent calls. Buckets reached
# by fewer than RARE_SHARE of the baseline's traces are the ones tested.
DEPTHS = ((1, "1"), (3, "2-3"), (7, "4-7"), (15, "8-15"), (31, "16-31"), (63, "32-63"), (None, "64+"))
AGES = ((0, "0m"), (2, "1-2m"), (5, "3-5m"), (15, "6-15m"), (60, "16-60m"), (None, "60m+"))
RARE_SHARE = 0.1
DISPERSION_EVERY = 5  # minutes: the dispersion learns from one closed minute in five
MAX_CATEGORIES = 12  # models and steps kept per scope; more share one "other" slot
NAME_CHARS = 48  # category names are cut to this in the state (bounds its size)
OTHER = "~other"
_PRIOR = 0.1  # pseudo-calls of every category: a never-seen model has share 0.1 / baseline calls
_MIN_VAR = 0.01  # floor of the log-token variance (a scope of identical prompts)


def profile_counts(component: str, model: str | None, step: str | None, input_tokens: int,
                   output_tokens: int, cached_tokens: int, into: dict[str, float], trace_calls: int = 0,
                   refail: bool = False, trace_age_min: int = 0, age_reached: int = -1) -> int:
    """Add one call to a minute's sums (what ``learn_one``/``score_one`` take) and return the
    age bucket its trace has now reached.

    ``trace_calls`` is the call's position in its trace (1 for the first; 0: no trace),
    ``trace_age_min`` the minutes since the trace's first call and ``age_reached`` the age
    bucket the trace had reached before (-1 for none); ``refail`` marks a failed model call
    right after a failed call of its trace (a retry that failed again)."""
    into["calls"] = into.get("calls", 0) + 1
    if trace_calls > 0:
        if trace_calls == 1:
            into["traces"] = into.get("traces", 0) + 1
        if trace_calls in DEPTH_STARTS:  # the trace enters a deeper bucket with this call
            key = "depth:" + DEPTH_STARTS[trace_calls]
            into[key] = into.get(key, 0) + 1
        index = bucket_index(AGES, trace_age_min)
        if index > age_reached:  # and, counted once, an older age
            key = "age:" + AGES[index][1]
            into[key] = into.get(key, 0) + 1
            age_reached = index
    if step:
        key = "step:" + step[:NAME_CHARS]
        into[key] = into.get(key, 0) + 1
    if component != "model_call":
        return age_reached
    into["model_calls"] = into.get("model_calls", 0) + 1
    key = "model:" + (model or "unknown")[:NAME_CHARS]
    into[key] = into.get(key, 0) + 1
    if cached_tokens > 0:
        into["hits"] = into.get("hits", 0) + 1
    log_in = math.log1p(input_tokens)
    into["in_log"] = into.get("in_log", 0.0) + log_in
    into["in_log2"] = into.get("in_log2", 0.0) + log_in * log_in
    if output_tokens <= 0:
        into["failed"] = into.get("failed", 0) + 1
        if refail:
            into["refail"] = into.get("refail", 0) + 1
        return age_reached
    into["ok"] = into.get("ok", 0) + 1
    log_out = math.log1p(output_tokens)
    into["out_log"] = into.get("out_log", 0.0) + log_out
    into["out_log2"] = into.get("out_log2", 0.0) + log_out * log_out
    return age_reached


def bucket_index(edges: tuple[tuple[int | None, str], ...], value: int) -> int:
    """The index of the first bucket whose top (inclusive; None = no top) ``value`` is within."""
    for index, (top, _) in enumerate(edges):
        if top is None or value <= top:
            return index
    raise ValueError("the last bucket has no top")


def bucket(edges: tuple[tuple[int | None, str], ...], value: int) -> str:
    """The name of the bucket ``value`` is in."""
    return edges[bucket_index(edges, value)][1]


# position -> the depth bucket a trace enters with its call at that position
DEPTH_STARTS = {1: "1", **{(top or 0) + 1: DEPTHS[i + 1][1] for i, (top, _) in enumerate(DEPTHS[:-1])}}


def _group(keys: Iterable[str], into: dict[str, set[str]]) -> dict[str, set[str]]:
    """Add the category keys (``family:name``) among ``keys`` to their family's set in ``into``."""
    for key in keys:
        family, colon, _ = key.partition(":")
        if colon:
            into.setdefault(family, set()).add(key)
    return into


def binomial_z(k: float, n: float, p: float) -> float:
    """Signed root of the binomial deviance of ``k`` in ``n`` at rate ``p`` (a z-score)."""
    if n <= 0:
        return 0.0
    p = min(max(p, 1e-12), 1 - 1e-12)
    q = min(max(k / n, 0.0), 1.0)
    dev = 0.0
    if q > 0:
        dev += k * math.log(q / p)
    if q < 1:
        dev += (n - k) * math.log((1 - q) / (1 - p))
    z = math.sqrt(max(0.0, 2 * dev))
    return z if q >= p else -z


class TokenProfile:
    """Shifts in one scope's call profile per minute; a high score means a costly shift.

    >>> import random
    >>> rng = random.Random(5)
    >>> det = TokenProfile()
    >>> def minute(model):
    ...     x = {}
    ...     for _ in range(20):
    ...         profile_counts("model_call", model(), "answer", int(rng.lognormvariate(7, 0.5)), 300,
    ...                        0, x)
    ...     return x
    >>> for m in range(3 * 1440):  # three days on the usual mix
    ...     det.learn_one(minute(lambda: rng.choice(["gpt-4o", "gpt-4o-mini"])), 60.0 * (m + 1))
    >>> for m in range(m + 1, m + 6):  # five minutes with 30% of calls on a dear model
    ...     x = minute(lambda: "claude-opus-4" if rng.random() < 0.3 else "gpt-4o")
    ...     det.learn_one(x, 60.0 * (m + 1))
    >>> score = det.score_one({}, 60.0 * (m + 1))
    >>> score.severity, score.reasons[0].split(":")[0]
    ('high', 'model claude-opus-4')
    """

    kind: ClassVar[str] = "profile"
    state_bound: ClassVar[int] = 8192

    def __init__(
        self,
        thresholds: tuple[float, float, float] = (5.0, 7.0, 10.0),
        recent_half_lives_min: tuple[float, ...] = (10.0, 60.0),
        baseline_half_life_h: float = 72.0,
        warmup_h: float = 48.0,
        warmup_calls: float = 200.0,
        min_calls: float = 8.0,
        min_share_change: float = 0.05,
        min_token_ratio: float = 1.3,
    ) -> None:
        self.thresholds = check_thresholds(thresholds)
        halves = tuple(recent_half_lives_min) if isinstance(recent_half_lives_min, (list, tuple)) else ()
        if not 1 <= len(halves) <= 3:
            raise DetectorParameterError(
                f"recent_half_lives_min {recent_half_lives_min!r} must be one to three numbers of minutes")
        self.recent_half_lives_min = tuple(check_positive("recent_half_lives_min", h) for h in halves)
        self.baseline_half_life_h = check_positive("baseline_half_life_h", baseline_half_life_h)
        self.warmup_h = check_positive("warmup_h", warmup_h)
        self.warmup_calls = check_positive("warmup_calls", warmup_calls)
        self.min_calls = check_positive("min_calls", min_calls)
        self.min_share_change = check_positive("min_share_change", min_share_change)
        if self.min_share_change >= 1:
            raise DetectorParameterError(f"min_share_change {min_share_change!r} must be < 1")
        self.min_token_ratio = check_positive("min_token_ratio", min_token_ratio)
        if self.min_token_ratio < 1:
            raise DetectorParameterError(f"min_token_ratio {min_token_ratio!r} must be >= 1")
        self._recent_rates = [math.log(2) / (h * 60) for h in self.recent_half_lives_min]
        self._slowest = self.recent_half_lives_min.index(max(self.recent_half_lives_min))
        self._base_rate = math.log(2) / (self.baseline_half_life_h * 3600)
        self._reset()

    def _reset(self) -> None:
        self._t0: float | None = None
        self._t: float | None = None
        self._recent: list[dict[str, float]] = [{} for _ in self._recent_rates]  # one per half-life
        self._base: dict[str, float] = {}
        self._phi: dict[str, list[float]] = {}  # family -> [decayed sum of Pearson/df, decayed weight]
        self._names: dict[str, set[str]] | None = None  # cache of _names_of

    # ------------------------------------------------------------ river verbs
    def learn_one(self, x: Mapping[str, float], t: float) -> None:
        """Fold in one closed minute's sums ending at ``t``; a ``t`` not after the last is ignored."""
        if self._t is not None and t <= self._t:
            return
        if self._t0 is None:
            self._t0 = t
        self._decay(t)
        x = self._folded(x)
        if self._base.get("calls", 0.0) >= 1 and int(t // 60) % DISPERSION_EVERY == 0:
            self._learn_dispersion(x)  # a slow statistic: every few minutes is plenty
        for key, value in x.items():
            if value:
                if key not in self._recent[self._slowest]:
                    self._names = None
                for recent in self._recent:
                    recent[key] = recent.get(key, 0.0) + value
        self._prune()
        self._t = t

    def warm_at(self, t: float) -> bool:
        learned = self._base.get("calls", 0.0)
        return (self._t0 is not None and learned >= 1 and learned >= self.warmup_calls
                and (t - self._t0) / 3600 >= self.warmup_h)

    def score_one(self, x: Mapping[str, float], t: float) -> Score:
        """How the recent calls plus ``x`` (the open minute) differ from the baseline at ``t``."""
        if self._t0 is None or self._base.get("calls", 0.0) < 1:
            return Score(0.0, float(x.get("calls", 0.0)), None, None, "none", False,
                         ("no baseline yet: no calls of this scope learned",))
        hours = (t - self._t0) / 3600
        learned = self._base.get("calls", 0.0)
        warm = hours >= self.warmup_h and learned >= self.warmup_calls
        dt = max(0.0, t - (self._t or t))
        recent_calls = max(r.get("calls", 0.0) * math.exp(-rate * dt) for r, rate in
                           zip(self._recent, self._recent_rates)) + float(x.get("calls", 0.0))
        warming = () if warm else (f"warming up: {hours:.1f} of {self.warmup_h:g} hours and {learned:.0f} of "
                                   f"{self.warmup_calls:g} calls of history, no alert yet",)
        if recent_calls < self.min_calls:  # nothing can be tested: the quiet answer, cheaply
            reasons = (f"too few recent calls to compare ({recent_calls:.1f} of {self.min_calls:g})",)
            return Score(0.0, 0.0, 0.0, None, "none", warm, reasons + warming)
        folded = self._folded(x)
        names_of = self._names_of()
        new = [key for key in folded if key not in self._base and key not in self._recent[self._slowest]]
        if new:
            names_of = {family: set(keys) for family, keys in names_of.items()}
            _group(new, names_of)
        best: dict[str, tuple[float, str, float, float]] = {}  # feature -> its largest shift over the horizons
        for index, half_life in enumerate(self.recent_half_lives_min):
            recent = self._recent_at(t, index)
            for key, value in folded.items():
                recent[key] = recent.get(key, 0.0) + value
            for z, name, text, actual, expected in self._features(recent, names_of):
                if name not in best or z > best[name][0]:
                    best[name] = (z, f"{text} (half-life {half_life:g} min)", actual, expected)
        found = sorted(best.values(), key=lambda f: -f[0])
        value, label, actual, expected = found[0] if found else (0.0, "none", 0.0, 0.0)
        severity = severity_of(value, self.thresholds) if warm else "none"
        reasons = tuple(text for z, text, _, _ in found[:3] if z >= self.thresholds[0]) or (
            f"call profile as usual (largest shift: {label})",)
        return Score(value, actual, expected, None, severity, warm, reasons + warming)

    # ------------------------------------------------------------ features
    def _features(self, recent: dict[str, float],
                  names_of: dict[str, set[str]]) -> list[tuple[float, str, str, float, float]]:
        """(z, feature, reason, actual, expected) of every costly shift with enough recent calls;
        ``names_of`` maps a family (model, step, depth, age) to its category keys."""
        base, out = self._base, []
        calls, model_calls = recent.get("calls", 0.0), recent.get("model_calls", 0.0)
        for family, total, base_total in (("model", model_calls, base.get("model_calls", 0.0)),
                                          ("step", calls, base.get("calls", 0.0))):
            if total < self.min_calls or base_total <= 0:
                continue
            prefix = family + ":"
            names = names_of.get(family, set())
            scale = self._scale(family)
            for key in names:
                k = recent.get(key, 0.0)
                p = (base.get(key, 0.0) + _PRIOR) / (base_total + _PRIOR * (len(names) + 1))
                if k / total - p < self.min_share_change:
                    continue
                z = binomial_z(k, total, p) / scale
                what = "calls" if family == "step" else "model calls"
                out.append((z, key, f"{family} {key[len(prefix):]}: {k / total:.0%} of {what} recently vs "
                               f"{p:.1%} baseline ({z:.1f} sigmas)", k / total, p))
        if model_calls >= self.min_calls and base.get("model_calls", 0.0) > 0:
            bm = base["model_calls"]
            for name, sign, text in (("failed", 1, "failed calls"), ("hits", -1, "cache hits"),
                                     ("refail", 1, "failed retries (a failure right after a failure in its trace)")):
                k = recent.get(name, 0.0)
                p = (base.get(name, 0.0) + _PRIOR) / (bm + 2 * _PRIOR)
                q = k / model_calls
                # failures must at least double and rise by half a point; cache hits must fall by
                # min_share_change
                if (q < 2 * p or q - p < 0.005) if sign > 0 else (p - q < self.min_share_change):
                    continue
                z = sign * binomial_z(k, model_calls, p) / self._scale(name)
                out.append((z, name, f"{text} {q:.0%} of model calls recently vs {p:.1%} baseline ({z:.1f} sigmas)",
                            q, p))
            out.extend(self._tokens(recent, "in", "model_calls", "input tokens per model call"))
        traces, base_traces = recent.get("traces", 0.0), base.get("traces", 0.0)
        if calls >= self.min_calls and traces > 0 and base_traces > 0:
            for family, what in (("depth", "traces reaching {} calls"), ("age", "traces running {}")):
                prefix = family + ":"
                for key in names_of.get(family, ()):  # only buckets the scope's traces rarely reach
                    k = recent.get(key, 0.0)
                    p = (base.get(key, 0.0) + _PRIOR) / (base_traces + 2 * _PRIOR)
                    q = k / max(traces, k)
                    if p >= RARE_SHARE or q < 2 * p:
                        continue
                    z = binomial_z(k, max(traces, k), p)
                    out.append((z, key, f"{what.format(key[len(prefix):])}: {k:.1f} of {traces:.1f} traces "
                                        f"recently vs {p:.2%} baseline ({z:.1f} sigmas)", q, p))
        out.extend(self._tokens(recent, "out", "ok", "output tokens per call"))
        return out

    def _tokens(self, recent: dict[str, float], name: str, count: str,
                text: str) -> list[tuple[float, str, str, float, float]]:
        n, bn = recent.get(count, 0.0), self._base.get(count, 0.0)
        if n < self.min_calls or bn < 2:
            return []
        mean = recent.get(name + "_log", 0.0) / n
        base_mean = self._base.get(name + "_log", 0.0) / bn
        var = max(_MIN_VAR, self._base.get(name + "_log2", 0.0) / bn - base_mean * base_mean)
        ratio = math.exp(mean - base_mean)
        if ratio < self.min_token_ratio:
            return []
        z = (mean - base_mean) / math.sqrt(var / n)
        actual, expected = math.expm1(mean), math.expm1(base_mean)
        return [(z, name, f"{text} x{ratio:.2f} (typical {fmt(actual)} recently vs {fmt(expected)}, {z:.1f} sigmas)",
                 actual, expected)]

    def _scale(self, family: str) -> float:
        total = self._phi.get(family)
        if not total or total[1] < 30:
            return 1.0
        return math.sqrt(max(1.0, total[0] / total[1]))

    def _learn_dispersion(self, x: dict[str, float]) -> None:
        """Each closed minute's Pearson statistic per degree of freedom, per family of shares."""
        base = self._base
        names_of = _group(base, {})  # baseline categories only: a share of 0 has no Pearson term
        for family, n, bn in (("model", x.get("model_calls", 0.0), base.get("model_calls", 0.0)),
                              ("step", x.get("calls", 0.0), base.get("calls", 0.0))):
            if n < 2 or bn < 10:
                continue
            names = names_of.get(family, set())
            if len(names) < 2:
                continue
            stat = 0.0
            for key in names:
                p = base[key] / bn
                stat += (x.get(key, 0.0) - n * p) ** 2 / max(n * p, 1e-9)
            self._add_phi(family, stat / (len(names) - 1))
        n, bn = x.get("model_calls", 0.0), base.get("model_calls", 0.0)
        if n >= 2 and bn >= 10:
            for name in ("failed", "hits", "refail"):
                p = min(max(base.get(name, 0.0) / bn, 1e-3), 1 - 1e-3)
                self._add_phi(name, (x.get(name, 0.0) - n * p) ** 2 / (n * p * (1 - p)))

    def _add_phi(self, family: str, value: float) -> None:
        total = self._phi.setdefault(family, [0.0, 0.0])
        total[0] += min(value, 50.0)  # one wild minute cannot make the scope deaf
        total[1] += 1.0

    # ------------------------------------------------------------ state plumbing
    def _decay(self, t: float) -> None:
        if self._t is None:
            return
        dt = max(0.0, t - self._t)
        if dt == 0:
            return
        fb = math.exp(-self._base_rate * dt)
        recents = self._recent
        # What leaves the slowest recent view enters the baseline, in one pass over the baseline;
        # keys learned since the last decay are not in it yet (they come last, as they arrived).
        slow = recents[self._slowest]
        gone = 1 - math.exp(-self._recent_rates[self._slowest] * dt)
        slow_get = slow.get
        old_base = self._base
        base = self._base = {key: value * fb + slow_get(key, 0.0) * gone for key, value in old_base.items()}
        if not slow.keys() <= old_base.keys():
            for key, value in slow.items():
                if key not in old_base:
                    base[key] = value * gone
        for index, rate in enumerate(self._recent_rates):
            fr = math.exp(-rate * dt)
            recents[index] = {key: value * fr for key, value in recents[index].items()}
        for total in self._phi.values():
            total[0] *= fb
            total[1] *= fb

    def _recent_at(self, t: float, index: int) -> dict[str, float]:
        dt = 0.0 if self._t is None else max(0.0, t - self._t)
        factor = math.exp(-self._recent_rates[index] * dt)
        return {key: value * factor for key, value in self._recent[index].items()}

    def _folded(self, x: Mapping[str, float]) -> dict[str, float]:
        """``x`` with names cut to NAME_CHARS and categories beyond MAX_CATEGORIES per family as
        ``other`` (a scope calling hundreds of models keeps a bounded state)."""
        base, slow = self._base, self._recent[self._slowest]
        counts: dict[str, int] | None = None  # categories per family, counted on the first new name
        out: dict[str, float] = {}
        for key, value in x.items():
            if not (value >= 0 and value != math.inf):  # also refuses NaN
                continue
            value = float(value)
            if key in base or key in slow or key in out:
                out[key] = out.get(key, 0.0) + value
                continue
            family, sep, name = key.partition(":")
            if not sep:
                if key in BASE_FIELDS:
                    out[key] = value
                continue
            key = f"{family}:{name[:NAME_CHARS]}"
            if key in base or key in slow or key in out:
                out[key] = out.get(key, 0.0) + value
                continue
            if counts is None:
                counts = {}
                for known in base.keys() | slow.keys() | out.keys():
                    head, colon, _ = known.partition(":")
                    if colon:
                        counts[head] = counts.get(head, 0) + 1
            if counts.get(family, 0) >= MAX_CATEGORIES:
                key = f"{family}:{OTHER}"
            else:
                counts[family] = counts.get(family, 0) + 1
            out[key] = out.get(key, 0.0) + value
        return out

    def _names_of(self) -> dict[str, set[str]]:
        """Category keys per family (model, step, depth, age) of the baseline and recent views,
        kept until the set of keys changes."""
        if self._names is None:  # dropped whenever a key is added or pruned
            self._names = _group(self._base.keys() | self._recent[self._slowest].keys(), {})
        return self._names

    def _prune(self) -> None:
        """Forget categories faded below a hundredth of a call, in the baseline and every recent view."""
        for key in [k for k, v in self._base.items() if ":" in k and v < 0.01]:
            if all(recent.get(key, 0.0) < 0.01 for recent in self._recent):
                self._names = None
                del self._base[key]
                for recent in self._recent:
                    recent.pop(key, None)

    def params(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "recent_half_lives_min": self.recent_half_lives_min,
                "baseline_half_life_h": self.baseline_half_life_h, "warmup_h": self.warmup_h,
                "warmup_calls": self.warmup_calls,
                "min_calls": self.min_calls, "min_share_change": self.min_share_change,
                "min_token_ratio": self.min_token_ratio}

    def to_state(self) -> State:
        if self._t is None:
            return {}  # a new series (nothing learned yet)
        return {"v": _TAG, "t0": self._t0, "t": self._t, "r": [dict(r) for r in self._recent], "b": dict(self._base),
                "phi": {k: list(v) for k, v in self._phi.items()}}

    def from_state(self, state: State | None) -> Self:
        new = type(self)(**self.params())
        if not state:
            return new
        if not isinstance(state, dict) or state.get("v") != _TAG:
            raise DetectorStateError(f"not a {_TAG} state: {str(state)[:80]}")
        try:
            new._t0 = None if state["t0"] is None else float(state["t0"])
            new._t = None if state["t"] is None else float(state["t"])
            new._recent = [{str(k): float(v) for k, v in r.items()} for r in state["r"]]
            if len(new._recent) != len(new._recent_rates):
                raise DetectorStateError(f"{_TAG} state has {len(new._recent)} recent sums, the parameters "
                                         f"{len(new._recent_rates)}")
            new._base = {str(k): float(v) for k, v in state["b"].items()}
            new._phi = {str(k): [float(a), float(b)] for k, (a, b) in state["phi"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DetectorStateError(f"damaged {_TAG} state: {exc}") from None
        return new
