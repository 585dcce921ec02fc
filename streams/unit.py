"""Unit economics inside the engine: cost per outcome, rejection rates, repeat (loop) cost and
reporting coverage of a budget instance, over rolling windows of hour buckets.

Why here and not in a report: the FinOps playbook alerts that need outcomes (cost per resolved
case up with quality unchanged, a cost drop that costs quality, agent loops, a gateway that
stopped reporting) must fire while it happens, from the same exact counters as the budgets.

Only budget instances whose rules read ``unit.*`` keep these figures (``Engine`` asks this feed
only for those), so a rule set without them pays nothing.

* **Buckets.** ``("unit", tenant, ukey, hour)`` -> ``[fence, *FIELDS, {model: nanos}]`` where
  ``ukey`` names the budget instance and ``hour`` is the UTC hour since the epoch. Every write of
  one source position lands in a bucket once: the fence is the last position applied, so a
  re-delivered record changes nothing (positions grow per tenant).
* **Join.** An outcome joins the cost events of its tenant with its ``trace_id`` (or, when it has
  none, those whose ``business_outcome_id`` is its id). A trace record ``("utrace", tenant,
  join key)`` holds the trace's cost per budget instance while the trace is active, and is dropped
  once the trace has had neither an event nor an outcome for ``outcome_wait_s`` of event time:
  an outcome later than that joins nothing (it is held, ``stats["held"]``, for events that will
  not come). Joined spend is the spend of
  events whose trace has an outcome, each event once however many outcomes its trace gets; an
  outcome counts once in every budget instance its trace's events fall in (as in showback).
  Buckets are by event time: spend and calls in the event's hour, an outcome and the spend its
  arrival joins in the outcome's hour.
* **Repeats.** A call is a repeat when its trace already made ``repeat_after`` calls of the same
  workflow step and model or tool: retries and tool loops. ``repeat_cost_usd`` is their spend.
* **Reporting.** ``trace_calls`` counts events that came from spans (``origin: trace``) and
  ``reported_calls`` the others, duplicates included: when both a gateway and the traces report
  a call both counts grow; a gateway that stops reporting leaves trace calls only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
from statistics import NormalDist
from typing import Any, get_args

from spendwarden.streams.engine_state import Position
from spendwarden.streams.events import CostEvent, Outcome, OutcomeKind
from spendwarden.streams.money import NANOS_PER_USD

HOUR_S = 3600
OUTCOME_KINDS: tuple[str, ...] = get_args(OutcomeKind)
FIELDS = ("spend", "calls", "input_tokens", "output_tokens", "cached_tokens", "repeat", "unattributed",
          "trace_calls", "reported_calls", "joined", "resolved_joined", "outcomes", *OUTCOME_KINDS)
_S = {name: i for i, name in enumerate(FIELDS)}  # index in summed fields
_AT = {name: i + 1 for name, i in _S.items()}  # index in a bucket, after its fence
_MODELS = len(FIELDS) + 1  # index of the {model: nanos} route mix
MODELS_KEPT = 8  # per bucket; the rest of the spend is under "other"
# Windows in hours back from the current hour H, both ends included, and whether amounts are
# per-day averages (the baselines compare against one day).
WINDOWS: dict[str, tuple[int, int, int]] = {
    "hour": (1, 0, 1),  # the current and the previous clock hour
    "day": (23, 0, 1),
    "week": (167, 0, 1),
    "baseline": (191, 24, 7),  # the 7 days before `day`, per day
    "prior_week": (335, 168, 1),  # the 7 days before `week`
}
KEEP_HOURS = max(start for start, _, _ in WINDOWS.values()) + 1
FIGURES = (
    "spend_usd", "calls", "outcomes", *OUTCOME_KINDS, "cost_per_outcome_usd", "cost_per_resolved_case_usd",
    "rejection_rate", "human_rejection_rate", "resolution_rate", "input_tokens_per_call",
    "output_tokens_per_call", "cache_hit_ratio", "repeat_cost_usd", "repeat_share", "unattributed_usd",
    "unattributed_share", "trace_calls", "reported_calls", "human_rejection_z",
)
# A trace record keeps at most this many outcome ids and (step, model) call counters, so it
# stays far below Kafka's record limit whatever a producer sends (SeenIds deduplicates outcomes
# anyway; calls of further (step, model) pairs are not checked for repeats).
TRACE_OUTCOMES_KEPT = 32
TRACE_CALLS_KEPT = 64
CLOSED_KEPT = 50_000  # instances whose closed hours' sums are kept in memory
DEFAULT_OUTCOME_WAIT_S = 6 * 3600
DEFAULT_REPEAT_AFTER = 3
UNATTRIBUTED_USE_CASE = "unknown"


def unit_key(budget_name: str, inst: tuple[str, ...]) -> str:
    """The state name of a budget instance (tabs cannot occur in names or ids)."""
    return "\t".join((budget_name, *inst))


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


_USD = NANOS_PER_USD
Sums = list[int]  # FIELDS in order


def _amount(field: str, scale: float = 1.0) -> Any:
    i = _S[field]
    return lambda s, per: s[i] / scale / per


def _share(num: str, den: str) -> Any:
    i, j = _S[num], _S[den]
    return lambda s, per: _ratio(s[i], s[j])


# Every figure of a window from its summed fields (amounts divided by ``per`` days).
FIGURE_OF: dict[str, Any] = {
    "spend_usd": _amount("spend", _USD),
    "calls": _amount("calls"),
    "outcomes": _amount("outcomes"),
    **{kind: _amount(kind) for kind in OUTCOME_KINDS},
    "cost_per_outcome_usd": lambda s, per: _ratio(s[_S["joined"]], s[_S["outcomes"]]) / _USD,
    "cost_per_resolved_case_usd": lambda s, per: _ratio(s[_S["resolved_joined"]], s[_S["resolved"]]) / _USD,
    "rejection_rate": lambda s, per: _ratio(s[_S["rejected"]] + s[_S["human_rejected"]], s[_S["outcomes"]]),
    "human_rejection_rate": _share("human_rejected", "outcomes"),
    "resolution_rate": _share("resolved", "outcomes"),
    "input_tokens_per_call": _share("input_tokens", "calls"),
    "output_tokens_per_call": _share("output_tokens", "calls"),
    "cache_hit_ratio": _share("cached_tokens", "input_tokens"),
    "repeat_cost_usd": _amount("repeat", _USD),
    "repeat_share": _share("repeat", "spend"),
    "unattributed_usd": _amount("unattributed", _USD),
    "unattributed_share": _share("unattributed", "spend"),
    "trace_calls": _amount("trace_calls"),
    "reported_calls": _amount("reported_calls"),
}
assert (*FIGURE_OF, "human_rejection_z") == FIGURES  # the z-score compares two windows (UnitView)
# The window each current window's z-score is measured against.
Z_REFERENCE = {"hour": "baseline", "day": "baseline", "week": "prior_week"}
_H, _N = _S["human_rejected"], _S["outcomes"]


def rejection_z(rejected: int, outcomes: int, ref_rejected: int, ref_outcomes: int) -> float:
    """How surprising a window's human rejections are against its reference's share, as a
    z-score: the normal quantile of the exact binomial chance of at least ``rejected`` among
    ``outcomes`` at the reference share p0 (smoothed, (r + 0.5) / (n0 + 1), so a reference
    without rejections is not certainty); negative below the expected count. 0 without outcomes
    on either side or without rejections; within +-10.

    Why exact: at 25 outcomes and a 4% share, 5 rejections are a 1-in-180 chance, but the
    normal approximation calls them 3.8 standard errors (1 in 14,000); a rule checked every
    hour of every use case would page on luck."""
    if not outcomes or not ref_outcomes or not rejected:
        return 0.0  # no rejection is no sign of a rise
    p0 = (ref_rejected + 0.5) / (ref_outcomes + 1)
    if rejected > outcomes * p0:  # above the mean: the upper tail P(X >= k) is the small side
        z = -_NORMAL.inv_cdf(max(1e-300, _binomial_sum(rejected, outcomes, p0, up=True)))
    else:  # at or below it: the lower tail P(X <= k - 1) is
        z = _NORMAL.inv_cdf(max(1e-300, _binomial_sum(rejected - 1, outcomes, p0, up=False)))
    return max(-_Z_CAP, min(_Z_CAP, z))


def _binomial_sum(k: int, n: int, p: float, *, up: bool) -> float:
    """P(X >= k) (``up``) or P(X <= k) for X ~ Binomial(n, p), summed in log space from k away
    from the mean (the terms only shrink that way), until they vanish; 0.0 when it underflows."""
    if k < 0:
        return 0.0 if not up else 1.0
    if k > n:
        return 1.0 if not up else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    first = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
    log_ratio_up = log_p - log_q  # term(i + 1) / term(i) = (n - i) / (i + 1) * p / q
    total, log_term, i = 1.0, 0.0, k  # terms relative to the first
    while True:
        if up:
            if i >= n:
                break
            log_term += math.log((n - i) / (i + 1)) + log_ratio_up
            i += 1
        else:
            if i <= 0:
                break
            log_term -= math.log((n - i + 1) / i) + log_ratio_up
            i -= 1
        term = math.exp(log_term)
        total += term
        if term < total * 1e-16:
            break
    log_total = first + math.log(total)
    return 0.0 if log_total < -745 else min(1.0, math.exp(log_total))


_NORMAL = NormalDist()
_Z_CAP = 10.0


def route_mix(models: dict[str, int]) -> dict[str, float]:
    """The three largest models' shares of spend."""
    total = sum(models.values())
    ranked = sorted(models.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {model: round(_ratio(nanos, total), 4) for model, nanos in ranked}


def window_figures(sums: Sums, models: dict[str, int], per: int) -> dict[str, Any]:
    """The ``unit.<window>.*`` figures of summed bucket fields."""
    figures: dict[str, Any] = {name: figure(sums, per) for name, figure in FIGURE_OF.items()}
    figures["route_mix"] = route_mix(models)
    return figures


class UnitView:
    """The figures of one instance at one engine time, computed only as asked: a guard reads one
    figure, a rule's CEL the windows it names (most evaluations stop at a guard)."""

    __slots__ = ("_closed", "_open", "_sums")

    def __init__(self, closed: dict[str, tuple[Sums, dict[str, int]]], open_bucket: list[Any] | None) -> None:
        self._closed = closed
        self._open = open_bucket
        self._sums: dict[str, tuple[Sums, dict[str, int]]] = {}

    def sums(self, window: str) -> tuple[Sums, dict[str, int]]:
        found = self._sums.get(window)
        if found is None:
            sums, models = self._closed[window]
            open_bucket = self._open
            if WINDOWS[window][1] == 0 and open_bucket is not None:  # the window holds the open hour
                sums = [a + b for a, b in zip(sums, open_bucket[1:_MODELS])]
                models = dict(models)
                for model, nanos in open_bucket[_MODELS].items():
                    models[model] = models.get(model, 0) + nanos
            found = self._sums[window] = (sums, models)
        return found

    def figure(self, window: str, name: str) -> float:
        if name == "human_rejection_z":
            return self.rejection_z(window)
        return FIGURE_OF[name](self.sums(window)[0], WINDOWS[window][2])

    def rejection_z(self, window: str) -> float:
        """``human_rejection_z`` of a window against its reference (0 for the references)."""
        reference = Z_REFERENCE.get(window)
        if reference is None:
            return 0.0
        now, then = self.sums(window)[0], self.sums(reference)[0]
        return rejection_z(now[_H], now[_N], then[_H], then[_N])

    def window(self, window: str) -> dict[str, Any]:
        sums, models = self.sums(window)
        figures = window_figures(sums, models, WINDOWS[window][2])
        figures["human_rejection_z"] = self.rejection_z(window)
        return figures

    def context(self, reads: dict[str, tuple[str, ...] | None] | None = None) -> dict[str, dict[str, Any]]:
        """The ``unit`` CEL variable: every window whole by default, else what ``reads`` names
        (window -> figures, None for the whole window)."""
        if reads is None:
            return {name: self.window(name) for name in WINDOWS}
        context: dict[str, dict[str, Any]] = {}
        for name, figures in reads.items():
            if figures is None:
                context[name] = self.window(name)
            else:
                context[name] = {figure: self.figure(name, figure) for figure in figures}
        return context


# Which window a rule's figures are compared against in its alert's summary.
_REFERENCE = {"week": "prior_week", "day": "baseline", "hour": "baseline", "prior_week": "week", "baseline": "day"}
_CURRENT_FIRST = ("week", "day", "hour")


def unit_summary(figures: dict[str, dict[str, Any]], expression: str) -> str:
    """One line an on-call can act on: the window the rule reads against its reference, naming
    unit cost, quality, token profile, cache hits, route mix, repeats and who reported the calls."""
    read = [w for w in _CURRENT_FIRST if f"unit.{w}." in expression]
    current = read[0] if read else "day"
    reference = _REFERENCE[current]
    now, then = figures[current], figures[reference]

    def pair(name: str, fmt: str) -> str:
        return f"{fmt.format(now[name])} vs {fmt.format(then[name])}"

    mix_now = ", ".join(f"{m} {share:.0%}" for m, share in now["route_mix"].items()) or "none"
    mix_then = ", ".join(f"{m} {share:.0%}" for m, share in then["route_mix"].items()) or "none"
    parts = [
        f"unit economics, {current.replace('_', ' ')} vs {reference.replace('_', ' ')}"
        + (" (per day)" if WINDOWS[reference][2] > 1 else ""),
        f"cost per resolved case {pair('cost_per_resolved_case_usd', '${:.4f}')}",
        f"cost per outcome {pair('cost_per_outcome_usd', '${:.4f}')}",
        f"human rejection {pair('human_rejection_rate', '{:.1%}')}",
        f"tokens per call in {pair('input_tokens_per_call', '{:.0f}')}, out {pair('output_tokens_per_call', '{:.0f}')}",
        f"cache hits {pair('cache_hit_ratio', '{:.0%}')}",
        f"route mix {mix_now} (was {mix_then})",
        f"repeat calls {pair('repeat_cost_usd', '${:.2f}')}",
        f"calls seen in traces {pair('trace_calls', '{:.0f}')}, reported {pair('reported_calls', '{:.0f}')}",
    ]
    return "; ".join(parts)


class UnitFeed:
    """Unit-economics buckets and trace joins of one engine's state."""

    def __init__(self, state: MutableMapping[Any, Any], *, outcome_wait_s: float = DEFAULT_OUTCOME_WAIT_S,
                 repeat_after: int = DEFAULT_REPEAT_AFTER) -> None:
        self.state = state
        self.outcome_wait_s = outcome_wait_s
        self.repeat_after = repeat_after
        # outcomes held for a trace with no event yet (none may ever come)
        self.stats = {"held": 0}
        # (tenant, ukey) -> (current hour, {window: (sums, models)} of its closed hours)
        self._closed: dict[tuple[str, str], tuple[int, dict[str, tuple[list[int], dict[str, int]]]]] = {}
        self._hours: dict[int, set[tuple[Any, ...]]] = {}  # bucket keys by hour, for pruning
        self._traces: dict[tuple[str, str], float] = {}  # (tenant, join key) -> last activity
        for key, value in list(state.items()):
            if key[0] == "unit":
                self._hours.setdefault(key[3], set()).add(key)
            elif key[0] == "utrace":
                self._traces[(key[1], key[2])] = value["t"]

    def configure(self, outcome_wait_s: float, repeat_after: int) -> None:
        """New parameters from a rule reload; counted figures stay."""
        self.outcome_wait_s = outcome_wait_s
        self.repeat_after = repeat_after

    # ------------------------------------------------------------ writes
    def observe(self, tenant: str, event: CostEvent, ts: float, pos: Position, cost: int, ukeys: Iterable[str],
                counted: bool) -> None:
        """One cost event for the budget instances ``ukeys``; ``counted`` False for a duplicate
        (only its sighting is counted: who reported the call)."""
        ukeys = list(dict.fromkeys(ukeys))
        if not ukeys:
            return
        hour = int(ts // HOUR_S)
        sighting = "trace_calls" if event.origin == "trace" else "reported_calls"
        if not counted:
            for ukey in ukeys:
                bucket = self._bucket(tenant, ukey, hour, pos)
                if bucket is not None:
                    bucket[_AT[sighting]] += 1
                    self._store(tenant, ukey, hour, bucket)
            return
        joined = resolved = repeat = False
        late_outcomes: dict[str, list[str]] = {}
        jkey = _join_key(event.trace_id, event.business_outcome_id)
        if jkey is not None:
            record = self.state.get(("utrace", tenant, jkey))
            if record is None:
                record = {"f": -1, "t": ts, "c": {}, "n": {}, "o": {}}
            if record["f"] < pos:
                record["f"], record["t"] = pos, max(record["t"], ts)
                call = f"{event.workflow_step or ''}\t{event.model_or_service or ''}"
                calls = record["n"]
                if call in calls or len(calls) < TRACE_CALLS_KEPT:
                    calls[call] = calls.get(call, 0) + 1
                    repeat = calls[call] > self.repeat_after
                costs, outcomes = record["c"], record["o"]
                for ukey in ukeys:
                    if ukey not in costs and outcomes:
                        late_outcomes[ukey] = list(outcomes.values())
                    costs[ukey] = costs.get(ukey, 0) + cost
                joined = bool(outcomes)
                resolved = "resolved" in outcomes.values()
                self.state[("utrace", tenant, jkey)] = record
                self._traces[(tenant, jkey)] = record["t"]
        model = event.model_or_service or "none"
        unattributed = event.use_case_id == UNATTRIBUTED_USE_CASE
        for ukey in ukeys:
            bucket = self._bucket(tenant, ukey, hour, pos)
            if bucket is None:
                continue
            bucket[_AT["spend"]] += cost
            bucket[_AT["calls"]] += 1
            bucket[_AT["input_tokens"]] += event.input_tokens
            bucket[_AT["output_tokens"]] += event.output_tokens
            bucket[_AT["cached_tokens"]] += event.cached_tokens
            bucket[_AT[sighting]] += 1
            if repeat:
                bucket[_AT["repeat"]] += cost
            if unattributed:
                bucket[_AT["unattributed"]] += cost
            if joined:
                bucket[_AT["joined"]] += cost
            if resolved:
                bucket[_AT["resolved_joined"]] += cost
            for kind in late_outcomes.get(ukey, ()):  # its trace's outcomes reach this instance now
                bucket[_AT["outcomes"]] += 1
                bucket[_AT[kind]] += 1
            _add_model(bucket[_MODELS], model, cost)
            self._store(tenant, ukey, hour, bucket)

    def outcome(self, tenant: str, outcome: Outcome, ts: float, pos: Position) -> list[str]:
        """Join one outcome to its trace; the budget instances (ukeys) whose figures it changed:
        none when no event of its trace is held (none came yet, or the trace went quiet for
        longer than the wait), so the outcome waits for them."""
        jkey = _join_key(outcome.trace_id, outcome.business_outcome_id)
        assert jkey is not None  # an outcome always has its id
        record = self.state.get(("utrace", tenant, jkey))
        if record is None:
            # Events of the trace may still come: hold the outcome for them.
            record = {"f": -1, "t": ts, "c": {}, "n": {}, "o": {}}
        outcomes = record["o"]
        if record["f"] >= pos or outcome.business_outcome_id in outcomes:
            return []
        was_joined = bool(outcomes)
        was_resolved = "resolved" in outcomes.values()
        if len(outcomes) < TRACE_OUTCOMES_KEPT or (outcome.outcome == "resolved" and not was_resolved):
            outcomes[outcome.business_outcome_id] = outcome.outcome  # (never forget it resolved)
        record["f"], record["t"] = pos, max(record["t"], ts)
        self.state[("utrace", tenant, jkey)] = record
        self._traces[(tenant, jkey)] = record["t"]
        if not record["c"]:
            self.stats["held"] += 1  # no event of its trace yet: later ones join as they come
            return []
        hour = int(ts // HOUR_S)
        for ukey, nanos in record["c"].items():
            bucket = self._bucket(tenant, ukey, hour, pos)
            if bucket is None:
                continue
            bucket[_AT["outcomes"]] += 1
            bucket[_AT[outcome.outcome]] += 1
            if not was_joined:
                bucket[_AT["joined"]] += nanos
            if outcome.outcome == "resolved" and not was_resolved:
                bucket[_AT["resolved_joined"]] += nanos
            self._store(tenant, ukey, hour, bucket)
        return list(record["c"])

    # ------------------------------------------------------------ reads
    def figures(self, tenant: str, ukey: str, now: float) -> dict[str, dict[str, Any]]:
        """``unit.*`` of one budget instance at engine time ``now``: one dict per window."""
        return self.view(tenant, ukey, now).context()

    def view(self, tenant: str, ukey: str, now: float) -> UnitView:
        """The instance's figures at engine time ``now``, computed on demand."""
        current = int(now // HOUR_S)
        closed = self._closed.get((tenant, ukey))
        if closed is None or closed[0] != current:
            if len(self._closed) >= CLOSED_KEPT:  # bounded: idle instances sum again when asked
                self._closed.clear()
            closed = (current, self._sum_closed(tenant, ukey, current))
            self._closed[(tenant, ukey)] = closed
        return UnitView(closed[1], self.state.get(("unit", tenant, ukey, current)))

    def _sum_closed(self, tenant: str, ukey: str, current: int) -> dict[str, tuple[list[int], dict[str, int]]]:
        sums = {name: ([0] * len(FIELDS), {}) for name in WINDOWS}
        state = self.state
        for back in range(1, KEEP_HOURS):
            bucket = state.get(("unit", tenant, ukey, current - back))
            if bucket is None:
                continue
            for name, (start, end, _) in WINDOWS.items():
                if end <= back <= start:
                    total, models = sums[name]
                    for i in range(len(FIELDS)):
                        total[i] += bucket[i + 1]
                    for model, nanos in bucket[_MODELS].items():
                        models[model] = models.get(model, 0) + nanos
        return sums

    # ------------------------------------------------------------ upkeep
    def prune(self, newest: float) -> int:
        """Drop buckets older than every window and traces quiet for longer than the wait, at
        ``newest``: the newest event time the engine read, never the wall clock of ticks (a worker
        catching up on a backlog keeps the traces whose outcomes it has not read yet; the service
        runs one engine per partition, whose records it reads in order)."""
        dropped = 0
        oldest = int(newest // HOUR_S) - KEEP_HOURS
        for hour in [h for h in self._hours if h < oldest]:
            for key in self._hours.pop(hour):
                if self.state.pop(key, None) is not None:
                    dropped += 1
        wait = self.outcome_wait_s
        for (tenant, jkey) in [k for k, t in self._traces.items() if t < newest - wait]:
            del self._traces[(tenant, jkey)]
            if self.state.pop(("utrace", tenant, jkey), None) is not None:
                dropped += 1
        return dropped

    def _bucket(self, tenant: str, ukey: str, hour: int, pos: Position) -> list[Any] | None:
        """The bucket to add ``pos`` to, fenced at ``pos`` (the caller adds and stores it), or
        None when ``pos`` was applied already. Changed in place, as the engine's hourly history."""
        found = self.state.get(("unit", tenant, ukey, hour))
        if found is None:
            return [pos, *([0] * len(FIELDS)), {}]
        if found[0] >= pos:
            return None
        found[0] = pos
        return found

    def _store(self, tenant: str, ukey: str, hour: int, bucket: list[Any]) -> None:
        key = ("unit", tenant, ukey, hour)
        self.state[key] = bucket
        self._hours.setdefault(hour, set()).add(key)
        closed = self._closed.get((tenant, ukey))
        if closed is not None and hour < closed[0]:  # a closed hour changed: sum again
            del self._closed[(tenant, ukey)]


def _join_key(trace_id: str | None, business_outcome_id: str | None) -> str | None:
    if trace_id:
        return "t:" + trace_id
    if business_outcome_id:
        return "o:" + business_outcome_id
    return None


def _add_model(models: dict[str, int], model: str, nanos: int) -> None:
    if model in models or len(models) < MODELS_KEPT:
        models[model] = models.get(model, 0) + nanos
    else:
        models["other"] = models.get("other", 0) + nanos
