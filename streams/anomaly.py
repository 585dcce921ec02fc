"""Detectors inside the engine: fed with closed hours, scored on the last 60 minutes.

Only budget instances whose rules read ``anomaly.*`` get detectors. Each keeps a bucket of the
current hour (spend, calls, successful model calls and their tokens; behind a position fence
like the counters); when an event of a later hour arrives, the closed hour teaches the seasonal
spend baseline (and every idle hour since, as zero spend) and the unit-cost and token drift
detectors. Rules score the sliding last 60 minutes (the
budget's ``window`` buckets), so a loop or a misroute shows within minutes, not at the hour's end.

Detector state lives in the engine's mapping (``("det", tenant, budget, instance)``) as JSON and
is checkpointed like everything else; the live objects are a cache rebuilt from it. A taught
detector is only marked: ``flush`` writes the states of the marked ones, once per checkpoint
(``Engine.sync_state``) instead of once per closed minute, and before the cache drops them.
Statistics, not money: a crash between a bucket's checkpoint and its detector's may skip
teaching one hour.
"""

from __future__ import annotations

import zlib
from collections.abc import MutableMapping
from typing import Any, Callable

from spendwarden.detectors import (
    RULE_DETECTORS, CacheCollapse, DetectorStateError, NewModel, Score, SeasonalBaseline, TokenDrift, TokenProfile,
    UnitCostDrift,
)
from spendwarden.detectors.profile import NAME_CHARS, profile_counts
from spendwarden.streams.events import CostEvent
from spendwarden.streams.money import NANOS_PER_USD
from spendwarden.streams.periods import Calendar

HOUR = 3600.0
RESCORE_GROWTH = 1.1  # scored again inside a minute when the window's spend grew by a tenth ...
RESCORE_CALLS = 1.5  # ... or the open minute's calls by half (plus two)
CACHE_MAX = 20_000  # live detector objects (~8 KB each) and scores kept in memory
# Traces per scope whose calls and last outcome are counted, the most recently active ones: a
# scope with more traces open at once than this loses count of its least recently active ones.
TRACES_KEPT = 256
# ... and only while active: a trace without a call for this many minutes is forgotten (a later
# call of it counts as a new trace). Without it a quiet scope kept its last 256 traces for good:
# ~50 KB of bucket per scope, rewritten into the changelog with every event of the scope.
TRACE_IDLE_MIN = 120
ALL_DETECTORS = frozenset(RULE_DETECTORS)
HOURLY_ORDER = ("spend", "unit_cost", "tokens")  # fed from the hour bucket, in _detectors' order
HOURLY = frozenset(HOURLY_ORDER)
# Fed from the minute bucket, each with its state key.
MINUTELY: dict[str, str] = {"profile": "detp", "new_model": "detn", "cache": "detc"}
MINUTE_NAMES = frozenset(MINUTELY)
MinuteDetector = TokenProfile | NewModel | CacheCollapse
MAX_IDLE_HOURS = 14 * 24  # zero hours taught after a long silence (older ones would be forgotten anyway)
Key = tuple[str, str, tuple[str, ...]]
# The score of a detector not scored because it warms up and every rule reading it requires warm.
NOT_SCORED_COLD = Score(0.0, 0.0, None, None, "none", False,
                        ("warming up: not scored until warm (the rules reading it require warm)",))
WINDOW_READERS = frozenset({"spend", "unit_cost"})  # scored on the last 60 minutes' spend and calls


class AnomalyFeed:
    """Detectors of every watched budget instance of one engine."""

    def __init__(self, state: MutableMapping[Any, Any], params: dict[str, dict[str, Any]],
                 calendar: Callable[[str], Calendar]) -> None:
        self.state = state
        self.calendar = calendar
        self._spend_params = dict(params.get("spend", {}))
        self._unit = UnitCostDrift(**params.get("unit_cost", {}))
        self._tokens = TokenDrift(**params.get("tokens", {}))
        self._minute_protos: dict[str, MinuteDetector] = {
            name: RULE_DETECTORS[name](**params.get(name, {})) for name in MINUTELY}  # type: ignore[misc]
        self._minute_live: dict[Key, dict[str, MinuteDetector]] = {}  # per instance, by detector name
        self._seasonal: dict[str, SeasonalBaseline] = {}  # prototype per time zone
        self._live: dict[Key, tuple[SeasonalBaseline, UnitCostDrift, TokenDrift]] = {}
        # per instance: (minute, context, scores, window spend, open-minute calls) of the last scoring
        self._scores: dict[Key, tuple[int, dict[str, Any], dict[str, Score], int, float]] = {}
        # names -> (context, scores) when every one of them is cold and gated: one shared answer
        self._all_cold: dict[frozenset[str], tuple[dict[str, Any], dict[str, Score]]] = {}
        self._gate_plans: dict[tuple[frozenset[str], frozenset[str]], tuple[Any, tuple[str, ...]]] = {}
        # Instances whose live hourly / minute detectors were taught since the last flush; they
        # are always in the live caches (evicting flushes first).
        self._taught: set[Key] = set()
        self._taught_minutes: set[Key] = set()
        self.errors = 0  # detector states that could not be read (reset to a new series)

    # ------------------------------------------------------------ learning
    def observe(self, tkey: str, budget: str, inst: tuple[str, ...], ts: float, pos: int, nanos: int,
                event: CostEvent, names: frozenset[str] = ALL_DETECTORS) -> None:
        """Count one event into the instance's current hour and minute; a later one closes the
        bucket. Only the detectors in ``names`` (those the budget's rules read) learn."""
        if names & MINUTE_NAMES:
            self._observe_minute((tkey, budget, inst), ts, pos, nanos, event, names)
        if not names & HOURLY:
            return
        # ("abkt", ...) = [hour, fence, nanos, events, successful model calls, their tokens]
        bkey = ("abkt", tkey, budget, inst)
        hour = int(ts // HOUR)
        answered = event.component == "model_call" and event.output_tokens > 0  # a failed attempt has none
        tokens = event.input_tokens + event.output_tokens if answered else 0
        bucket = self.state.get(bkey)
        if bucket is None:
            self.state[bkey] = [hour, pos, nanos, 1, int(answered), tokens]
            return
        if bucket[1] >= pos:
            return  # already counted (redelivery)
        if hour > bucket[0]:
            self._teach((tkey, budget, inst), bucket, hour, names)
            bucket = [hour, pos, nanos, 1, int(answered), tokens]
        else:
            bucket = list(bucket) if len(bucket) == 6 else list(bucket) + [0, 0]  # a 4-field bucket of an older version
            bucket[1] = pos
            if hour == bucket[0]:
                bucket[2] += nanos
                bucket[3] += 1  # an event of an hour already taught only moves the fence
                bucket[4] += answered
                bucket[5] += tokens
        self.state[bkey] = bucket

    def _observe_minute(self, key: Key, ts: float, pos: int, nanos: int, event: CostEvent,
                        names: frozenset[str]) -> None:
        """The open minute ``("pbkt", ...)`` = [minute, fence, sums, traces, USD per model]; the first
        event of a later minute teaches the closed one to the call profile and the new-model
        detector (idle minutes teach nothing: decay needs no data)."""
        bkey = ("pbkt",) + key
        minute = int(ts // 60)
        bucket = self.state.get(bkey)
        if bucket is not None and bucket[1] >= pos:
            return  # already counted (redelivery)
        if bucket is None:
            bucket = [minute, pos, {}, {}, {}]
        elif minute > bucket[0]:
            self._teach_minute(key, bucket, names)
            bucket = [minute, pos, {}, bucket[3], {}]
        else:
            bucket[1] = pos  # an event of an earlier minute (a producer's clock behind) joins the open one
            if len(bucket) == 4:  # written by a version without USD per model
                bucket.append({})
        if event.component == "model_call" and "new_model" in names:  # only the new-model detector reads it
            usd = bucket[4]
            model = (event.model_or_service or "unknown")[:NAME_CHARS]
            usd[model] = usd.get(model, 0.0) + nanos / NANOS_PER_USD
        # Per most recently active trace of the scope: its calls, whether its last call failed, the
        # minute of its first call, the age bucket it reached (loops, retries that fail again) and
        # the minute of its last call. Keys are CRC-32s of trace ids (compact in a checkpoint; a
        # collision among TRACES_KEPT traces is one in ~10^7). Least recently active first.
        trace = event.trace_id
        if trace is None:
            profile_counts(event.component, event.model_or_service, event.workflow_step, event.input_tokens,
                           event.output_tokens, event.cached_tokens, bucket[2])
        else:
            traces = bucket[3]
            if traces:
                _forget_idle(traces, minute)
            tkey = f"{zlib.crc32(trace.encode()):x}"
            seen = traces.pop(tkey, None) or [0, 0, minute, -1, minute]
            if len(seen) == 4:  # kept by a version without the last call's minute
                seen.append(seen[2])
            seen[0] += 1
            failed = event.component == "model_call" and event.output_tokens <= 0
            refail = failed and seen[1] == 1  # the call before it in this trace failed too
            seen[1] = int(failed)
            seen[3] = profile_counts(event.component, event.model_or_service, event.workflow_step,
                                     event.input_tokens, event.output_tokens, event.cached_tokens, bucket[2],
                                     seen[0], refail, max(0, minute - seen[2]), seen[3])
            seen[4] = max(seen[4], minute)
            traces[tkey] = seen
            if len(traces) > TRACES_KEPT:
                del traces[next(iter(traces))]
        self.state[bkey] = bucket

    def _teach_minute(self, key: Key, bucket: list[Any], names: frozenset[str]) -> None:
        t = (bucket[0] + 1) * 60.0
        for name in MINUTELY:
            if name in names:
                self._minute_detector(name, key).learn_one(_minute_x(name, bucket), t)
        self._taught_minutes.add(key)
        self._scores.pop(key, None)

    def _minute_detector(self, name: str, key: Key) -> MinuteDetector:
        """The instance's live minute detector ``name``, rebuilt from state on a cache miss."""
        live = self._minute_live.get(key)
        if live is None:
            if len(self._minute_live) >= CACHE_MAX:
                self.flush()
                self._minute_live.clear()
            live = self._minute_live[key] = {}
        found = live.get(name)
        if found is None:
            proto = self._minute_protos[name]
            try:
                found = proto.from_state(self.state.get((MINUTELY[name],) + key))
            except DetectorStateError:
                self.errors += 1
                found = proto.from_state(None)
            live[name] = found
        return found

    def _teach(self, key: Key, bucket: list[int], hour: int, names: frozenset[str]) -> None:
        seasonal, unit, token_drift = self._detectors(key)
        closed, nanos, calls = bucket[0], bucket[2], bucket[3]
        if "spend" in names:
            seasonal.learn_one({"spend_usd": nanos / NANOS_PER_USD}, closed * HOUR)
            for idle in range(max(closed + 1, hour - MAX_IDLE_HOURS), hour):
                seasonal.learn_one({"spend_usd": 0.0}, idle * HOUR)
        if "unit_cost" in names:
            unit.learn_one({"cost_usd": nanos / NANOS_PER_USD, "requests": float(calls)}, (closed + 1) * HOUR)
        if "tokens" in names and len(bucket) == 6:
            token_drift.learn_one({"tokens": float(bucket[5]), "model_calls": float(bucket[4])}, (closed + 1) * HOUR)
        self._taught.add(key)
        self._scores.pop(key, None)

    def flush(self) -> int:
        """Write the state of every detector taught since the last flush into the engine's mapping
        (before a checkpoint or a copy of the state); returns how many were written."""
        written = 0
        for key in self._taught:
            seasonal, unit, token_drift = self._live[key]
            self.state[("det",) + key] = {"spend": seasonal.to_state(), "unit_cost": unit.to_state(),
                                          "tokens": token_drift.to_state()}
            written += 1
        for key in self._taught_minutes:
            for name, detector in self._minute_live[key].items():
                self.state[(MINUTELY[name],) + key] = detector.to_state()
                written += 1
        self._taught.clear()
        self._taught_minutes.clear()
        return written

    def _detectors(self, key: Key) -> tuple[SeasonalBaseline, UnitCostDrift, TokenDrift]:
        """The instance's live detectors, rebuilt from state on a cache miss (the cache is bounded:
        idle instances fall out and come back from their state)."""
        found = self._live.get(key)
        if found is None:
            zone = self.calendar(key[0]).name
            proto = self._seasonal.get(zone)
            if proto is None:
                proto = self._seasonal[zone] = SeasonalBaseline(tz=zone, **self._spend_params)
            saved = self.state.get(("det",) + key) or {}
            try:
                found = (proto.from_state(saved.get("spend")), self._unit.from_state(saved.get("unit_cost")),
                         self._tokens.from_state(saved.get("tokens")))
            except (DetectorStateError, TypeError, KeyError, ValueError):
                # A state this version cannot read (an older layout): start the series again
                # rather than fail every batch that touches the instance.
                self.errors += 1
                found = (proto.from_state(None), self._unit.from_state(None), self._tokens.from_state(None))
            if len(self._live) >= CACHE_MAX:
                self.flush()
                self._live.clear()
            self._live[key] = found
        return found

    # ------------------------------------------------------------ scoring
    def context(self, key: Key, now: float, names: frozenset[str] = ALL_DETECTORS,
                warm_gated: frozenset[str] = frozenset()) -> dict[str, Any]:
        """``anomaly.*`` for a rule, on the last 60 minutes: scored again when the minute changes
        or the window's spend has grown by a tenth since (a burst inside one minute must not
        hide behind the score of its first event), else the memo answers. Only the detectors in
        ``names`` are scored, and those in ``warm_gated`` (every rule reading them requires
        warm) only once warm: until then they answer NOT_SCORED_COLD, which no such rule passes."""
        minute = int(now // 60)
        warm = self._warm_names(key, now, names, warm_gated) if warm_gated else names
        if not warm:
            answer = self._all_cold.get(names)
            if answer is None:
                scores = {name: NOT_SCORED_COLD for name in sorted(names)}
                answer = self._all_cold[names] = ({name: _COLD_CEL for name in scores}, scores)
            if len(self._scores) >= CACHE_MAX:
                self._scores.clear()
            self._scores[key] = (minute, answer[0], answer[1], 0, 0.0)
            return answer[0]
        memo = self._scores.get(key)
        hourly = warm & HOURLY
        before, this_hour, calls = (_window_split(self.state.get(("window",) + key), now) if warm & WINDOW_READERS
                                    else (0, 0, 0))
        sums: dict[str, float] = {}
        open_minute = self.state.get(("pbkt",) + key) if warm & MINUTE_NAMES else None
        if open_minute is not None:
            sums = open_minute[2]  # by construction not learned yet
        open_calls = sums.get("calls", 0)
        if (memo is not None and memo[0] == minute and before + this_hour <= memo[3] * RESCORE_GROWTH
                and open_calls <= memo[4] * RESCORE_CALLS + 2):
            return memo[1]
        if len(self._scores) >= CACHE_MAX:
            self._scores.clear()
        scores = {name: NOT_SCORED_COLD for name in sorted(names - warm)}
        if hourly:
            seasonal, unit, token_drift = self._detectors(key)
            if "spend" in hourly:
                scores["spend"] = seasonal.score_one(
                    {"spend_usd": self._as_this_hour(seasonal, before, now) + this_hour / NANOS_PER_USD}, now)
            if "unit_cost" in hourly:
                scores["unit_cost"] = unit.score_one(
                    {"cost_usd": (before + this_hour) / NANOS_PER_USD, "requests": float(calls)}, now)
            if "tokens" in hourly:  # over days: the learned hours plus the open one
                scores["tokens"] = token_drift.score_one(_open_hour_tokens(self.state.get(("abkt",) + key), now), now)
        for name in MINUTELY:
            if name in warm:
                x = {} if open_minute is None else _minute_x(name, open_minute)
                scores[name] = self._minute_detector(name, key).score_one(x, now)
        context = {name: _COLD_CEL if score is NOT_SCORED_COLD else _cel(score) for name, score in scores.items()}
        self._scores[key] = (minute, context, scores, before + this_hour, open_calls)
        return context

    def _warm_names(self, key: Key, now: float, names: frozenset[str], warm_gated: frozenset[str]) -> frozenset[str]:
        """``names`` without the gated detectors that are still warming up."""
        plan = self._gate_plans.get((names, warm_gated))
        if plan is None:  # which hourly (by index in _detectors) and minute detectors to check
            plan = self._gate_plans[(names, warm_gated)] = (
                tuple((i, name) for i, name in enumerate(HOURLY_ORDER) if name in names and name in warm_gated),
                tuple(name for name in MINUTELY if name in names and name in warm_gated))
        cold: list[str] = []
        if plan[0]:
            hourly = self._detectors(key)
            for i, name in plan[0]:
                if not hourly[i].warm_at(now):
                    cold.append(name)
        for name in plan[1]:
            if not self._minute_detector(name, key).warm_at(now):
                cold.append(name)
        return names.difference(cold) if cold else names

    @staticmethod
    def _as_this_hour(seasonal: SeasonalBaseline, before_nanos: int, now: float) -> float:
        """The window's part from the previous hour, rescaled to this hour's expected rate: a
        window just after 18:00 still holds the busy 17:00 hour and must not read as a spike
        against the quiet 18:00 slot (nor a quiet 8:00 as a drop against 9:00)."""
        usd = before_nanos / NANOS_PER_USD
        if usd <= 0:
            return 0.0
        previous, current = seasonal.expected(now - HOUR), seasonal.expected(now)
        if not previous or not current:
            return usd
        return usd * current / previous

    def evidence(self, key: Key) -> dict[str, Any] | None:
        """Every detector's last score of an instance, JSON-ready (for the alert)."""
        memo = self._scores.get(key)
        return None if memo is None else {name: score.to_dict() for name, score in memo[2].items()}

    def reasons(self, key: Key) -> list[str]:
        """What the last scoring of an instance found unusual (for the alert's summary)."""
        memo = self._scores.get(key)
        if memo is None:
            return []
        return [score.text for score in memo[2].values() if score.warm and score.severity != "none"]


def _forget_idle(traces: dict[str, list[int]], minute: int) -> None:
    """Drop the least recently active traces while their last call is TRACE_IDLE_MIN or more
    minutes old (a 4-field entry of an older version: its first call's minute)."""
    while traces:
        oldest = next(iter(traces))
        entry = traces[oldest]
        if minute - entry[-1 if len(entry) > 4 else 2] < TRACE_IDLE_MIN:
            return
        del traces[oldest]


def _minute_x(name: str, bucket: list[Any]) -> dict[str, float]:
    """A minute bucket as detector ``name`` reads it: the call profile's sums (the cache detector
    reads their model calls and hits), or calls and USD per model for the new-model detector."""
    if name != "new_model":
        return bucket[2]
    x = {key: value for key, value in bucket[2].items() if key.startswith("model:")}
    for model, usd in (bucket[4] if len(bucket) > 4 else {}).items():
        x["usd:" + model] = usd
    return x


def _open_hour_tokens(bucket: Any, now: float) -> dict[str, float]:
    """Tokens and successful model calls of the hour bucket when it is ``now``'s hour."""
    if bucket is None or len(bucket) != 6 or bucket[0] != int(now // HOUR):
        return {}
    return {"tokens": float(bucket[5]), "model_calls": float(bucket[4])}


def _window_split(buckets: Any, now: float) -> tuple[int, int, int]:
    """Spend of the last 60 minutes before and since the current hour's start, and its calls."""
    now_minute = int(now // 60)
    hour_start = int(now // HOUR) * 60
    before = this_hour = calls = 0
    for minute, nanos, count in buckets or ():
        if 0 <= now_minute - minute < 60:
            calls += count
            if minute >= hour_start:
                this_hour += nanos
            else:
                before += nanos
    return before, this_hour, calls


def _cel(score: Score) -> dict[str, Any]:
    return {"score": float(score.value), "severity": score.severity, "warm": score.warm,
            "actual": float(score.actual), "expected": float(score.expected or 0.0)}


_COLD_CEL = _cel(NOT_SCORED_COLD)  # shared: contexts are read, never changed
