"""Issue 6's incident kinds at their fixed sizes, and the labelled windows that carry them.

A ``Window`` says what happens to which scope when; ``bind`` turns it into an ``Effect`` that
``scenario.generate`` runs: extra events (agent loop, retry storm, growth, surge) from the
incident's own random stream, or changes to the scope's model calls inside the window
(prompt bloat, misroute, cache collapse, slow leak). Sizes are the issue's Definitions:

- agent loop: one workflow step's calls x5 (the step's normal mix of calls, in 3 looping traces);
- prompt bloat: input tokens x3 on one use case (cached tokens too, so the cached share holds);
- misroute: 30% of a use case's model calls move to a model ~10x the use case's mean call price;
- cache collapse: cached share from >= 40% to ~2% (<= 5%);
- retry storm: failed-call cost x4 (extra failed attempts, 2-4 per stuck request: a retry limit);
- slow leak: the use case's cost per call +3% per day, compounded, for 10 days, then fixed;
- growth (not an incident): volume +50% over a week at steady unit cost, and it stays;
- surge (not an incident): one local day at 3x volume at steady unit cost.

Issue 9's kinds need outcomes or traced use cases (``scenario.generate``'s options):

- quality regression: for a day one use case's cost per call falls 30% (its model calls' tokens
  scaled as a cheaper model would price them; tool calls keep their price) while the human
  rejected share of its outcomes triples;
- gateway silent: for some hours a traced use case's gateway copies stop; only the ``origin:
  trace`` copies of its calls remain.

Failed calls are model calls with ``output_tokens: 0`` (``scenario.failed``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Literal

from spendwarden.exceptions import ConfigError
from spendwarden.replay.prices import CALL_PRICES_NANOS, TOKEN_PRICES_NANOS, reprice
from spendwarden.replay.scenario import (
    CACHED_SHARE, IN_SIGMA, MEAN_TRACE, MODEL_MIX, OUT_SIGMA, TOKENS, TRACE_LENGTHS, TRACE_WEIGHTS, VECTOR_AT,
    WEB_AT, Effect, Incident, Runaway, Tenant, _ms, failed, poisson, use_case_of,
)

Kind = Literal["agent-loop", "prompt-bloat", "misroute", "cache-collapse", "retry-storm", "slow-leak", "growth",
               "surge", "quality-regression", "gateway-silent"]
KINDS: tuple[str, ...] = ("agent-loop", "prompt-bloat", "misroute", "cache-collapse", "retry-storm", "slow-leak",
                          "growth", "surge")
# Issue 9's kinds: not in ``mixed`` (they need outcomes and traced use cases, which change the
# events); scenario ``outcomes`` places them.
OUTCOME_KINDS: tuple[str, ...] = ("quality-regression", "gateway-silent")
NOT_INCIDENTS = frozenset({"growth", "surge"})  # labelled so an alert on them counts as false

LOOP_FACTOR = 5
BLOAT_FACTOR = 3
MISROUTE_SHARE = 0.3
MISROUTE_RATIO = 10.0
MISROUTE_RANGE = (8.0, 12.5)  # price ratios accepted as "10x"; high-tier use cases have none
CACHE_BEFORE = 0.40  # a collapse needs at least this cached share before
CACHE_AFTER = 0.02  # expected cached share during the collapse (the Definitions allow <= 5%)
RETRY_FACTOR = 4
RETRY_BURST = (2, 4)  # failed attempts per stuck request in a storm (a client's retry limit), mean 3
LEAK_PER_DAY = 1.03
LEAK_DAYS = 10
GROWTH_FACTOR, GROWTH_DAYS = 1.5, 7
SURGE_FACTOR = 3
QUALITY_COST_FACTOR = 0.7  # cost per call in a quality regression
QUALITY_REJECTION_FACTOR = 3  # human_rejected share of outcomes in a quality regression

SIZES: dict[str, dict[str, Any]] = {
    "agent-loop": {"step_calls_factor": LOOP_FACTOR},
    "prompt-bloat": {"input_tokens_factor": BLOAT_FACTOR},
    "misroute": {"share_of_model_calls": MISROUTE_SHARE},
    "cache-collapse": {"cached_share_after": CACHE_AFTER},
    "retry-storm": {"failed_cost_factor": RETRY_FACTOR},
    "slow-leak": {"unit_cost_per_day": LEAK_PER_DAY, "days": LEAK_DAYS},
    "growth": {"volume_factor": GROWTH_FACTOR, "days": GROWTH_DAYS, "stays": True},
    "surge": {"volume_factor": SURGE_FACTOR, "unit": "one local day"},
    "quality-regression": {"cost_per_call_factor": QUALITY_COST_FACTOR,
                           "human_rejected_share_factor": QUALITY_REJECTION_FACTOR},
    "gateway-silent": {"reported_share": 0.0},
}

_FIRST = 1 / MEAN_TRACE  # share of events that open a trace: always model calls
MODEL_SHARE = _FIRST + (1 - _FIRST) * VECTOR_AT  # share of a use case's events that are model calls
_TOOL_NANOS = (1 - _FIRST) * ((WEB_AT - VECTOR_AT) * CALL_PRICES_NANOS["vector-search"][1]
                              + (1 - WEB_AT) * CALL_PRICES_NANOS["web-search"][1])  # per event
_MEAN_CACHED = sum(CACHED_SHARE) / 2


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class Window:
    """One labelled window on one tenant's use case: an incident, or growth or a surge."""

    kind: Kind
    tenant_id: str
    use_case_id: str
    start: datetime
    end: datetime
    workflow_step: str | None = None  # agent loop: the looping step
    model: str | None = None  # misroute: where the calls go
    id: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)  # measured sizes for the label (price ratio)

    @property
    def is_incident(self) -> bool:
        return self.kind not in NOT_INCIDENTS

    def bind(self, tenant: Tenant, seed: int, index: int) -> Effect:
        if self.end <= self.start:
            raise ConfigError(f"{self.kind} on {self.tenant_id}: the window ends before it starts")
        return _BIND[self.kind](self, tenant, seed, index)

    def label(self) -> dict[str, Any]:
        """The labels file's entry: times in UTC, ``is_incident`` false for growth and surges."""
        entry: dict[str, Any] = {"id": self.id, "kind": self.kind, "tenant_id": self.tenant_id,
                                 "use_case_id": self.use_case_id}
        if self.workflow_step is not None:
            entry["workflow_step"] = self.workflow_step
        if self.model is not None:
            entry["model"] = self.model
        entry.update(start=_iso(self.start), end=_iso(self.end), is_incident=self.is_incident,
                     size={**SIZES[self.kind], **self.facts})
        return entry


def step_share(steps: Sequence[str], step: str) -> float:
    """Share of a use case's events at ``step``: trace positions cycle through the steps."""
    if step not in steps:
        raise ConfigError(f"workflow step {step!r} is not one of {list(steps)}")
    count = sum(w * sum(1 for i in range(n) if steps[i % len(steps)] == step)
                for n, w in zip(TRACE_LENGTHS, TRACE_WEIGHTS))
    return count / sum(TRACE_WEIGHTS) / MEAN_TRACE


def _call_parts(model: str, tier: str, hit: float) -> tuple[float, float]:
    """Expected (input, output) list cost in nanos of one call of ``tier`` on ``model``."""
    _, p_in, p_out, p_cached = TOKEN_PRICES_NANOS[model]
    med_in, med_out = TOKENS[tier]
    tokens_in = med_in * math.exp(IN_SIGMA ** 2 / 2) + 19.5  # call(): int(lognormal) + 20
    tokens_out = med_out * math.exp(OUT_SIGMA ** 2 / 2) + 4.5
    cached = hit * _MEAN_CACHED
    return tokens_in * ((1 - cached) * p_in + cached * p_cached), tokens_out * p_out


def mix_call_nanos(tier: str, hit: float) -> tuple[float, float]:
    """Expected (input, output) cost of one model call of the tier's usual mix."""
    parts = [(w * a, w * b) for m, w in MODEL_MIX[tier] for a, b in [_call_parts(m, tier, hit)]]
    return sum(a for a, _ in parts), sum(b for _, b in parts)


def misroute_target(tier: str, hit: float) -> tuple[str, float] | None:
    """The model whose calls cost closest to 10x the tier's mean call, and that ratio, if in range."""
    base = sum(mix_call_nanos(tier, hit))
    ratios = {m: sum(_call_parts(m, tier, hit)) / base for m in TOKEN_PRICES_NANOS}
    model = min(ratios, key=lambda m: abs(math.log(ratios[m] / MISROUTE_RATIO)))
    lo, hi = MISROUTE_RANGE
    return (model, round(ratios[model], 2)) if lo <= ratios[model] <= hi else None


def cached_share(hit: float) -> float:
    """Expected share of input tokens served from cache at a cache hit rate."""
    return hit * _MEAN_CACHED


def leak_gain(tier: str, hit: float, fail_rate: float) -> float:
    """How much model calls' tokens must grow per unit of growth in the use case's cost per event.

    Tool calls cost a fixed price per call, so model calls carry the whole rise: scaling their
    tokens by ``s = 1 + (ratio - 1) * gain`` makes ``s * model + tools = ratio * (model + tools)``
    per event, failed attempts included.
    """
    cost_in, cost_out = mix_call_nanos(tier, hit)
    model = MODEL_SHARE * (cost_in + cost_out + fail_rate * cost_in)
    return (model + _TOOL_NANOS) / model


class _Change(Effect):
    """Changes the model calls of one use case inside the window, from its own random stream."""

    transforms = True

    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        self.w = window
        self.use_case = use_case_of(tenant.p, window.use_case_id)
        self.hit = tenant.hit[window.use_case_id]
        self.rng = random.Random(f"{seed}/incident/{index}/{window.kind}/{window.tenant_id}/{window.use_case_id}")
        self.start_ms, self.end_ms = _ms(window.start), _ms(window.end)

    def apply(self, ms: int, event: dict[str, Any]) -> None:
        if (self.start_ms <= ms < self.end_ms and event["use_case_id"] == self.w.use_case_id
                and event.get("component") == "model_call"):
            self.change(ms, event)
            reprice(event)

    def change(self, ms: int, event: dict[str, Any]) -> None:
        raise NotImplementedError


class _Bloat(_Change):
    def change(self, ms: int, event: dict[str, Any]) -> None:
        event["input_tokens"] *= BLOAT_FACTOR
        event["cached_tokens"] *= BLOAT_FACTOR


class _Misroute(_Change):
    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        super().__init__(window, tenant, seed, index)
        if window.model not in TOKEN_PRICES_NANOS:
            raise ConfigError(f"misroute on {window.tenant_id}: {window.model!r} is not a priced model")
        self.provider = TOKEN_PRICES_NANOS[window.model][0]

    def change(self, ms: int, event: dict[str, Any]) -> None:
        if self.rng.random() < MISROUTE_SHARE:
            event["model_or_service"], event["provider"] = self.w.model, self.provider


class _CacheCollapse(_Change):
    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        super().__init__(window, tenant, seed, index)
        self.keep = min(1.0, CACHE_AFTER / max(cached_share(self.hit), 1e-9))  # hits that survive

    def change(self, ms: int, event: dict[str, Any]) -> None:
        if event["cached_tokens"] and self.rng.random() >= self.keep:
            event["cached_tokens"], event["cache_status"] = 0, "miss"


class _SlowLeak(_Change):
    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        super().__init__(window, tenant, seed, index)
        self.gain = leak_gain(self.use_case[1], self.hit, tenant.p.fail_rate)

    def change(self, ms: int, event: dict[str, Any]) -> None:
        ratio = LEAK_PER_DAY ** ((ms - self.start_ms) / 86_400_000)
        scale = 1 + (ratio - 1) * self.gain
        for key in ("input_tokens", "output_tokens", "cached_tokens"):
            event[key] = round(event[key] * scale)


class _RetryStorm(Effect):
    """Extra failed attempts at (x4 - 1) x the use case's normal failed calls, in bursts."""

    adds = True

    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        if tenant.p.fail_rate <= 0:
            raise ConfigError(f"retry storm on {window.tenant_id}: the tenant has no failed calls (fail_rate 0)")
        self.w, self.tenant, self.index = window, tenant, index
        self.use_case = use_case_of(tenant.p, window.use_case_id)
        steps = list(dict.fromkeys(self.use_case[2]))
        self.steps, self.step_weights = steps, [step_share(self.use_case[2], s) for s in steps]
        self.rng = random.Random(f"{seed}/incident/{index}/retry-storm/{window.tenant_id}/{window.use_case_id}")
        self.start_ms, self.end_ms = _ms(window.start), _ms(window.end)
        self.ids = 0

    def minute(self, minute_ms: int, end_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
        lo, hi = max(minute_ms, self.start_ms), min(minute_ms + 60_000, self.end_ms, end_ms)
        if hi <= lo:
            return
        rng, tenant, uc = self.rng, self.tenant, self.use_case
        failed_per_min = tenant.calls_per_minute(minute_ms, uc[0]) * MODEL_SHARE * tenant.p.fail_rate
        mean_burst = sum(RETRY_BURST) / 2
        bursts = poisson(rng, failed_per_min * (RETRY_FACTOR - 1) / mean_burst * (hi - lo) / 60_000)
        prefix = f"{tenant.p.tenant_id}-storm{self.index}"
        for _ in range(bursts):
            step = rng.choices(self.steps, self.step_weights)[0]
            model = rng.choices(*zip(*MODEL_MIX[uc[1]]))[0]
            self.ids += 1
            trace_id = f"{prefix}-t{self.ids:06d}"
            prompt = tenant.call(rng, uc, step, f"{prefix}-{self.ids:06d}", trace_id, model=model)
            ms = lo + int(rng.random() * (hi - lo))
            for attempt in range(1, rng.randint(*RETRY_BURST) + 1):
                if ms >= self.end_ms:
                    break
                yield ms, failed({**prompt, "cost_event_id": f"{prompt['cost_event_id']}-{attempt}"})
                ms += int(rng.uniform(1000, 8000))  # back-off


class _Volume(Effect):
    """Extra traffic of the use case from the tenant's own profile: unit cost stays as it was."""

    adds = True

    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        use_case_of(tenant.p, window.use_case_id)
        self.w = window
        self.extra = Tenant(tenant.p, seed, stream=f"{window.kind}{index}")
        if tenant.quality is not None:  # the extra traffic's traces end in outcomes too
            self.extra.with_outcomes()
        self.start_ms, self.end_ms = _ms(window.start), _ms(window.end)

    def factor(self, ms: int) -> float:
        """Extra volume as a multiple of the normal one at ``ms``."""
        if ms < self.start_ms:
            return 0.0
        if self.w.kind == "surge":
            return SURGE_FACTOR - 1.0 if ms < self.end_ms else 0.0
        done = min(1.0, (ms - self.start_ms) / (self.end_ms - self.start_ms))
        return (GROWTH_FACTOR - 1.0) * done  # and it stays after the week

    def minute(self, minute_ms: int, end_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
        factor = self.factor(minute_ms)
        if factor > 0:
            yield from self.extra.minute(minute_ms, end_ms, factor=factor, only=self.w.use_case_id)


class _QualityRegression(_Change):
    """Cheaper calls, worse outcomes: model calls' tokens scaled so the use case's cost per call is
    x0.7, and outcomes turned into human rejections until their share is x3."""

    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        super().__init__(window, tenant, seed, index)
        if tenant.quality is None:
            raise ConfigError(f"quality regression on {window.tenant_id}: the scenario has no outcomes "
                              "(generate(outcomes=True))")
        gain = leak_gain(self.use_case[1], self.hit, tenant.p.fail_rate)
        self.scale = max(0.05, 1 + (QUALITY_COST_FACTOR - 1) * gain)
        cum = tenant.quality[window.use_case_id]
        share = cum[-1] - cum[-2]  # human_rejected is the last kind
        self.flip = min(1.0, (QUALITY_REJECTION_FACTOR - 1) * share / max(1e-9, 1 - share))

    def apply(self, ms: int, event: dict[str, Any]) -> None:
        if not (self.start_ms <= ms < self.end_ms and event["use_case_id"] == self.w.use_case_id):
            return
        if event.get("record_type") == "outcome":
            if event["outcome"] != "human_rejected" and self.rng.random() < self.flip:
                event["outcome"] = "human_rejected"
        elif event.get("component") == "model_call":
            for key in ("input_tokens", "output_tokens", "cached_tokens"):
                event[key] = round(event[key] * self.scale)
            reprice(event)


class _GatewaySilent(Effect):
    """A traced use case's gateway stops reporting: its reported copies are dropped in the window."""

    drops = True

    def __init__(self, window: Window, tenant: Tenant, seed: int, index: int) -> None:
        use_case_of(tenant.p, window.use_case_id)
        self.w = window
        self.start_ms, self.end_ms = _ms(window.start), _ms(window.end)

    def keep(self, ms: int, event: dict[str, Any]) -> bool:
        return not (self.start_ms <= ms < self.end_ms and event["use_case_id"] == self.w.use_case_id
                    and "record_type" not in event and event.get("origin", "reported") == "reported")


def _agent_loop(window: Window, tenant: Tenant, seed: int, index: int) -> Effect:
    use_case = use_case_of(tenant.p, window.use_case_id)
    if window.workflow_step is None:
        raise ConfigError(f"agent loop on {window.tenant_id}: say which workflow_step loops")
    minutes = (window.end - window.start) / timedelta(minutes=1)
    incident = Incident(kind="runaway", tenant_id=window.tenant_id, use_case_id=window.use_case_id,
                        start=window.start, duration_minutes=minutes, multiplier=LOOP_FACTOR)
    return Runaway(incident, tenant, seed, index, step=window.workflow_step,
                   share=step_share(use_case[2], window.workflow_step), model=None, context_growth=0)


_BIND: dict[str, Callable[[Window, Tenant, int, int], Effect]] = {
    "agent-loop": _agent_loop, "prompt-bloat": _Bloat, "misroute": _Misroute, "cache-collapse": _CacheCollapse,
    "retry-storm": _RetryStorm, "slow-leak": _SlowLeak, "growth": _Volume, "surge": _Volume,
    "quality-regression": _QualityRegression, "gateway-silent": _GatewaySilent,
}
