"""Seeded synthetic cost traffic: realistic tenants' traces and the packaged demo day.

Replay, the demo and the detector evaluation need traffic that looks like production
(diurnal and weekly load in each tenant's own time zone, agent traces of several calls, a
mix of models, prompt caching, failed calls retried, half the events already priced by the
gateway) and is identical for a seed, so a report can be reproduced. Incidents (``Effect``)
add events, or change the events of their scope inside their window, and touch nothing
else: each tenant and incident draws from its own random stream, so the same seed with and
without an incident gives the same events outside the incident's window and scope.

Two options, off by default (so a scenario without them is byte for byte what it was), add
what issue 9's unit economics read: ``outcomes`` ends each trace with one business outcome
record (``"record_type": "outcome"``) a few minutes after its last call, its kind drawn from
the use case's quality rates (``quality_rates``); ``traced`` use cases have every cost event
emitted twice, the gateway's copy and an ``origin: "trace"`` copy with the same
``cost_event_id``, as the OpenTelemetry bridge would. Both draw from streams of their own.

Regenerate the packaged demo with ``python -m spendwarden.replay.scenario --demo``.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from spendwarden.exceptions import ConfigError
from spendwarden.replay.prices import (
    CALL_PRICES_NANOS, PRICING_VERSION, TOKEN_PRICES_NANOS, cost_nanos, reprice, usd,
)

# Riskier use cases lean on larger models; weights per tier.
MODEL_MIX: dict[str, tuple[tuple[str, float], ...]] = {
    "low": (("gpt-4o-mini", 0.4), ("gemini-2.0-flash", 0.35), ("claude-haiku-4", 0.25)),
    "medium": (("gpt-4o", 0.35), ("gpt-4o-mini", 0.3), ("claude-haiku-4", 0.2), ("claude-sonnet-4", 0.15)),
    "high": (("claude-sonnet-4", 0.5), ("gpt-4o", 0.4), ("claude-haiku-4", 0.1)),
}
TOKENS: dict[str, tuple[int, int]] = {"low": (900, 180), "medium": (2200, 450), "high": (4000, 700)}
TRACE_LENGTHS = (1, 2, 3, 4, 5, 6)
TRACE_WEIGHTS = (0.25, 0.2, 0.2, 0.15, 0.12, 0.08)
MEAN_TRACE = sum(n * w for n, w in zip(TRACE_LENGTHS, TRACE_WEIGHTS)) / sum(TRACE_WEIGHTS)
# random.choices with these cumulative weights draws exactly as with the weights, minus the sums.
_TRACE_CUM = list(itertools.accumulate(TRACE_WEIGHTS))
_MIX_CUM = {tier: (models, list(itertools.accumulate(weights)))
            for tier, (models, weights) in ((t, tuple(zip(*mix))) for t, mix in MODEL_MIX.items())}
# call(): a trace's first call is a model call; later ones are vector search above
# VECTOR_AT, web search above WEB_AT of a uniform draw. Token counts are lognormal around the
# tier's medians (sigmas below); a cache hit serves a uniform share of the input from cache.
VECTOR_AT, WEB_AT = 0.65, 0.85
IN_SIGMA, OUT_SIGMA = 0.6, 0.7
CACHED_SHARE = (0.4, 0.9)
CACHE_HIT = 0.4  # chance a model call hits the cache, unless the profile says otherwise
OUTCOME_KINDS = ("resolved", "accepted", "escalated", "rejected", "human_rejected")
OUTCOME_DELAY_MS = (60_000, 600_000)  # an outcome comes 1-10 minutes after its trace's last call
_COMMON = {"allocation_method": "direct_metered", "pricing_version": PRICING_VERSION}

UseCase = tuple[str, str, Sequence[str]]  # (use_case_id, risk_tier, workflow_steps)


@dataclass(frozen=True)
class TenantProfile:
    """One tenant's traffic: ``calls_per_hour`` is events per hour at the daily peak."""

    tenant_id: str
    timezone: str
    calls_per_hour: float
    use_cases: Sequence[UseCase]
    cost_center: str
    business_unit: str
    environment: str = "prod"
    weights: Sequence[float] | None = None  # share of calls per use case; equal when None
    cache_hit: Sequence[float] | None = None  # per use case: chance a call hits the cache (CACHE_HIT)
    weekend: float = 1.0  # load on local Saturdays and Sundays relative to weekdays
    day_noise: float = 0.0  # sigma of a lognormal volume factor drawn per local day
    fail_rate: float = 0.0  # share of model calls that fail once (billed input, no output) and retry


@dataclass(frozen=True, kw_only=True)
class Incident:
    """Labelled bad behaviour. ``runaway``: an agent loop multiplies one use case's calls."""

    kind: Literal["runaway"] = "runaway"
    tenant_id: str
    use_case_id: str
    start: datetime
    duration_minutes: float
    multiplier: float

    def bind(self, tenant: Tenant, seed: int, index: int) -> Effect:
        return Runaway(self, tenant, seed, index)


def quality_rates(seed: int, tenant_id: str, use_case_id: str) -> dict[str, float]:
    """A use case's outcome shares: ~70% resolved or accepted, ~5% human rejections, the rest
    escalated or rejected; drawn per use case from its own stream, the same in every scenario."""
    rng = random.Random(f"{seed}/{tenant_id}/quality/{use_case_id}")
    rates = {"resolved": rng.uniform(0.5, 0.6), "accepted": rng.uniform(0.1, 0.2),
             "rejected": rng.uniform(0.03, 0.07), "human_rejected": rng.uniform(0.04, 0.06)}
    rates["escalated"] = 1.0 - sum(rates.values())
    return {kind: rates[kind] for kind in OUTCOME_KINDS}


def diurnal(local_hour: float) -> float:
    """Load relative to the peak: 8% at night, ramps 6-10h and 16-22h, full 10-16h."""
    if 10.0 <= local_hour < 16.0:
        ramp = 1.0
    elif 6.0 <= local_hour < 10.0:
        ramp = (1 - math.cos(math.pi * (local_hour - 6.0) / 4.0)) / 2
    elif 16.0 <= local_hour < 22.0:
        ramp = (1 + math.cos(math.pi * (local_hour - 16.0) / 6.0)) / 2
    else:
        ramp = 0.0
    return 0.08 + 0.92 * ramp


# diurnal() per local minute of the day, from the same expression as datetime fields gave it.
_DIURNAL = [diurnal(hour + minute / 60) for hour in range(24) for minute in range(60)]
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Stamps:
    """``_iso`` with the minute's text cached: formatting was a tenth of generation time."""

    def __init__(self) -> None:
        self.minutes: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        minute, rest = divmod(ms, 60_000)
        text = self.minutes.get(minute)
        if text is None:
            if len(self.minutes) > 64:
                self.minutes.clear()
            text = self.minutes[minute] = _iso(minute * 60_000)[:-7]
        return f"{text}{rest // 1000:02d}.{rest % 1000:03d}Z"


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ConfigError(f"{when.isoformat()} has no time zone; give times in UTC or with an offset")
    return round(when.timestamp() * 1000)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson count (normal approximation above 30, where the exact loop gets slow)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def failed(event: dict[str, Any]) -> dict[str, Any]:
    """A failed attempt of a model call: the prompt is billed, no output comes back.

    CostEvent has no status field, so ``output_tokens: 0`` on a model call is what marks a
    failure (a normal call has at least 5); the id gets ``-failed``.
    """
    attempt = {**event, "cost_event_id": event["cost_event_id"] + "-failed", "output_tokens": 0}
    reprice(attempt)
    return attempt


class Tenant:
    """Draws one tenant's traces minute by minute from its own random stream.

    ``stream`` names an extra stream of the same tenant (growth, a surge): same profile and
    load, its own random draws and ids, so the normal traffic stays as it was.
    """

    def __init__(self, profile: TenantProfile, seed: int, stream: str | None = None) -> None:
        self.p = profile
        self.seed = seed
        self.prefix = profile.tenant_id if stream is None else f"{profile.tenant_id}-{stream}"
        key = f"{seed}/{profile.tenant_id}" if stream is None else f"{seed}/{profile.tenant_id}/{stream}"
        self.rng = random.Random(key)
        self.fails = random.Random(f"{seed}/{self.prefix}/failures") if profile.fail_rate > 0 else None
        try:
            self.zone = ZoneInfo(profile.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"tenant {profile.tenant_id}: unknown time zone {profile.timezone!r}") from None
        weights = list(profile.weights or [1.0] * len(profile.use_cases))
        if len(weights) != len(profile.use_cases) or not profile.use_cases:
            raise ConfigError(f"tenant {profile.tenant_id}: need one weight per use case")
        hits = list(profile.cache_hit or [CACHE_HIT] * len(profile.use_cases))
        if len(hits) != len(profile.use_cases):
            raise ConfigError(f"tenant {profile.tenant_id}: need one cache_hit per use case")
        total = sum(weights)
        self.shares = {uc[0]: w / total for uc, w in zip(profile.use_cases, weights)}
        self.hit = {uc[0]: h for uc, h in zip(profile.use_cases, hits)}
        self.events = 0
        self.traces = 0
        self._load_at, self._load = -1, 0.0
        self._offset_hour: int | None = None
        self._offset_ms = 0
        self._days: dict[int, float] = {}
        self.quality: dict[str, list[float]] | None = None  # use case -> cumulative outcome weights
        self.outcome_rng: random.Random | None = None
        self.outcomes = 0

    def with_outcomes(self) -> Tenant:
        """End each trace with an outcome record, drawn from its own stream (``quality_rates``)."""
        self.quality = {uc[0]: list(itertools.accumulate(quality_rates(self.seed, self.p.tenant_id, uc[0]).values()))
                        for uc in self.p.use_cases}
        self.outcome_rng = random.Random(f"{self.seed}/{self.prefix}/outcomes")
        return self

    def _local_ms(self, ms: int) -> int:
        """``ms`` on the local wall clock; one zone lookup per hour (a lookup was most of a minute's cost)."""
        hour = ms // 3_600_000
        if hour != self._offset_hour:
            first, last = (datetime.fromtimestamp(t / 1000, self.zone).utcoffset() for t in
                           (hour * 3_600_000, hour * 3_600_000 + 3_599_999))
            # An hour holding a zone change (St John's changes at :30 UTC) is looked up per call.
            self._offset_hour = hour if first == last else None
            self._offset_ms = round(first.total_seconds() * 1000) if first is not None else 0
        if self._offset_hour is None:
            offset = datetime.fromtimestamp(ms / 1000, self.zone).utcoffset()
            return ms + (round(offset.total_seconds() * 1000) if offset is not None else 0)
        return ms + self._offset_ms

    def load(self, minute_ms: int) -> float:
        """Load relative to a weekday's peak: the diurnal shape, the weekend, the day's noise."""
        if minute_ms != self._load_at:
            local_ms = self._local_ms(minute_ms)
            shape = _DIURNAL[local_ms // 60_000 % 1440]
            day = local_ms // 86_400_000 + _EPOCH_ORDINAL  # the local date's ordinal
            if self.p.weekend != 1.0 and day % 7 in (6, 0):  # ordinal 1 (1 January of year 1) is a Monday
                shape *= self.p.weekend
            if self.p.day_noise:
                if day not in self._days:  # drawn per day, not in sequence: any stream gets the same
                    draw = random.Random(f"{self.seed}/{self.p.tenant_id}/day/{day}")
                    self._days[day] = draw.lognormvariate(0.0, self.p.day_noise)
                shape *= self._days[day]
            self._load_at, self._load = minute_ms, shape
        return self._load

    def calls_per_minute(self, minute_ms: int, use_case_id: str) -> float:
        """Expected events per minute of one use case (failed attempts not included)."""
        return self.p.calls_per_hour * self.load(minute_ms) * self.shares[use_case_id] / 60

    def minute(self, minute_ms: int, end_ms: int, factor: float = 1.0,
               only: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """Traces starting in this minute, at ``factor`` x the normal rate (``only`` one use case)."""
        rng, fails, prefix, shares = self.rng, self.fails, self.prefix, self.shares
        span = min(60_000, end_ms - minute_ms)
        peak = self.p.calls_per_hour * self.load(minute_ms)
        for use_case in self.p.use_cases:
            if only is not None and use_case[0] != only:
                continue
            # calls_per_minute(), term for term (the demo's bytes depend on the rounding)
            lam = peak * shares[use_case[0]] / 60 * span / 60_000 / MEAN_TRACE * factor
            for _ in range(poisson(rng, lam)):
                self.traces += 1
                trace_id = f"{prefix}-t{self.traces:07d}"
                ms = minute_ms + int(rng.random() * span)
                steps = use_case[2]
                for i in range(rng.choices(TRACE_LENGTHS, cum_weights=_TRACE_CUM)[0]):
                    self.events += 1
                    event_id = f"{prefix}-{self.events:08d}"
                    event = self.call(rng, use_case, steps[i % len(steps)], event_id, trace_id, first=i == 0)
                    if fails is not None and "input_tokens" in event and fails.random() < self.p.fail_rate:
                        yield ms, failed(event)
                        ms += int(fails.uniform(500, 5000))  # the retry after a back-off
                    yield ms, event
                    last = ms
                    ms += int(rng.uniform(300, 4000))
                if self.quality is not None:
                    yield self.outcome(last, use_case[0], trace_id)

    def outcome(self, last_ms: int, use_case_id: str, trace_id: str) -> tuple[int, dict[str, Any]]:
        """The business outcome of a trace whose last call was at ``last_ms`` (ts filled in later)."""
        orng = self.outcome_rng
        assert orng is not None and self.quality is not None
        self.outcomes += 1
        kind = orng.choices(OUTCOME_KINDS, cum_weights=self.quality[use_case_id])[0]
        record = {"record_type": "outcome", "business_outcome_id": f"{self.prefix}-o{self.outcomes:07d}",
                  "trace_id": trace_id, "ts": "", "tenant_id": self.p.tenant_id, "use_case_id": use_case_id,
                  "outcome": kind}
        return last_ms + int(orng.uniform(*OUTCOME_DELAY_MS)), record

    def call(self, rng: random.Random, use_case: UseCase, step: str, event_id: str, trace_id: str, *,
             first: bool = False, model: str | None = None, input_boost: int = 0) -> dict[str, Any]:
        """One event (ts filled in later): a model call, or a retrieval or tool call."""
        r = 0.0 if first or model else rng.random()
        if r > WEB_AT or model == "web-search":
            service = "web-search"
        elif r > VECTOR_AT:
            service = "vector-search"
        else:
            models, cum_weights = _MIX_CUM[use_case[1]]
            service = model or rng.choices(models, cum_weights=cum_weights)[0]
        p = self.p
        event: dict[str, Any] = {  # identity first, so a person reading the file sees who and when
            "cost_event_id": event_id, "trace_id": trace_id, "ts": "", "tenant_id": p.tenant_id,
            "business_unit": p.business_unit, "cost_center": p.cost_center, "use_case_id": use_case[0],
            "workflow_step": step, "risk_tier": use_case[1], "environment": p.environment,
        }
        if service in CALL_PRICES_NANOS:
            component = CALL_PRICES_NANOS[service][0]
            event.update(component=component, provider="internal", model_or_service=service, api_calls=1)
            nanos = cost_nanos(service)
        else:
            med_in, med_out = TOKENS[use_case[1]]
            tokens_in = min(120_000, int(rng.lognormvariate(math.log(med_in), IN_SIGMA)) + input_boost + 20)
            tokens_out = min(8_000, int(rng.lognormvariate(math.log(med_out), OUT_SIGMA)) + 5)
            hit = rng.random() < self.hit[use_case[0]]
            cached = int(tokens_in * rng.uniform(*CACHED_SHARE)) if hit else 0
            event.update(
                component="model_call", provider=TOKEN_PRICES_NANOS[service][0], model_or_service=service,
                input_tokens=tokens_in, output_tokens=tokens_out, cached_tokens=cached, api_calls=1,
                cache_status="hit" if hit else "miss",
            )
            nanos = cost_nanos(service, tokens_in, tokens_out, cached)
        if rng.random() < 0.5:  # the other half is priced from the pricebook
            event["allocated_cost_usd"] = usd(nanos)
        event.update(_COMMON)
        event["retention_class"] = "standard"
        return event


class Effect:
    """An incident bound to its tenant: it adds events (``minute``), changes events (``apply``), or both."""

    adds = False  # generate() asks minute() for events every minute
    transforms = False  # generate() passes every event of the tenant through apply()
    drops = False  # generate() asks keep() of every event of the tenant (after apply)

    def minute(self, minute_ms: int, end_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(())

    def apply(self, ms: int, event: dict[str, Any]) -> None:
        """Change ``event`` (at ``ms``) in place if it is in this incident's scope and window."""

    def keep(self, ms: int, event: dict[str, Any]) -> bool:
        """False drops ``event`` (a gateway that stopped reporting); outcome records pass too."""
        return True


class Bindable(Protocol):
    """What generate() takes as an incident: a tenant id and a way to bind to that tenant."""

    tenant_id: str

    def bind(self, tenant: Tenant, seed: int, index: int) -> Effect: ...


class Runaway(Effect):
    """An agent loop: extra calls of one step at (multiplier - 1) x a base rate, in a few looping traces.

    The demo's runaway takes the whole use case's rate, step ``plan``, the tier's first model
    (20% web searches) and a context that grows by ``context_growth`` tokens per iteration.
    Issue 6's agent loop passes the step's own rate (``share``), ``model=None`` for the step's
    normal mix of calls and no growth, so only the call count is x5.
    """

    adds = True
    LOOPS = 3

    def __init__(self, incident: Incident, tenant: Tenant, seed: int, index: int, *, step: str = "plan",
                 share: float = 1.0, model: str | None = "tier", context_growth: int = 150) -> None:
        self.inc = incident
        self.index = index
        self.tenant = tenant
        self.rng = random.Random(f"{seed}/incident/{index}/{incident.tenant_id}/{incident.use_case_id}")
        self.start_ms = _ms(incident.start)
        self.end_ms = self.start_ms + round(incident.duration_minutes * 60_000)
        self.use_case = use_case_of(tenant.p, incident.use_case_id)
        self.step, self.share, self.growth = step, share, context_growth
        self.model = MODEL_MIX[self.use_case[1]][0][0] if model == "tier" else model
        self.iterations = [0] * self.LOOPS
        self.ids = 0

    def minute(self, minute_ms: int, end_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
        lo, hi = max(minute_ms, self.start_ms), min(minute_ms + 60_000, self.end_ms, end_ms)
        if hi <= lo:
            return
        rng, tenant = self.rng, self.tenant
        rate = tenant.calls_per_minute(minute_ms, self.use_case[0]) * self.share * (self.inc.multiplier - 1)
        for _ in range(poisson(rng, rate * (hi - lo) / 60_000)):
            loop = rng.randrange(self.LOOPS)
            self.iterations[loop] += 1
            service = ("web-search" if rng.random() < 0.2 else self.model) if self.model else None
            boost = min(60_000, self.growth * self.iterations[loop])  # the loop's context keeps growing
            self.ids += 1
            prefix = f"{tenant.p.tenant_id}-loop{self.index}"
            event = tenant.call(rng, self.use_case, self.step, f"{prefix}-{self.ids:08d}", f"{prefix}-t{loop}",
                                model=service, input_boost=boost)
            yield lo + int(rng.random() * (hi - lo)), event


def use_case_of(profile: TenantProfile, use_case_id: str) -> UseCase:
    """The tenant's use case by id; an incident naming another is a configuration error."""
    match = [uc for uc in profile.use_cases if uc[0] == use_case_id]
    if not match:
        raise ConfigError(f"incident: tenant {profile.tenant_id} has no use case {use_case_id}")
    return match[0]


def generate(*, start: datetime, hours: float, tenants: list[TenantProfile], seed: int,
             incidents: Iterable[Bindable] = (), outcomes: bool = False,
             traced: Iterable[tuple[str, str]] = ()) -> Iterator[dict[str, Any]]:
    """Cost events as JSON-ready dicts in timestamp order over ``[start, start + hours)``.

    Traces start minute by minute and may spill into later minutes, so pending events wait
    in a heap and are released once no later trace can start before them. Incidents that
    change events see every event of their tenant, whichever source made it. ``outcomes``
    adds an outcome record per trace; ``traced`` (tenant, use case) pairs get an ``origin:
    trace`` copy of each event after it (a dropped gateway copy leaves the trace copy alone).
    """
    start_ms = _ms(start)
    end_ms = start_ms + round(hours * 3_600_000)
    states = {p.tenant_id: Tenant(p, seed) for p in tenants}
    if outcomes:
        for state in states.values():
            state.with_outcomes()
    traced_scopes = frozenset(traced)
    sources: list[Tenant | Effect] = list(states.values())
    changes: dict[str, list[Effect]] = {}
    filters: dict[str, list[Effect]] = {}
    for index, inc in enumerate(incidents):
        if inc.tenant_id not in states:
            raise ConfigError(f"incident: unknown tenant {inc.tenant_id}")
        effect = inc.bind(states[inc.tenant_id], seed, index)
        scope = (inc.tenant_id, getattr(inc, "use_case_id", ""))
        if effect.drops and scope not in traced_scopes:
            raise ConfigError(f"{getattr(inc, 'kind', 'incident')} on {scope[0]}/{scope[1]}: the use case is not "
                              "traced, so nothing would show its calls (generate(traced=...))")
        if effect.adds:
            sources.append(effect)
        if effect.transforms:
            changes.setdefault(inc.tenant_id, []).append(effect)
        if effect.drops:
            filters.setdefault(inc.tenant_id, []).append(effect)
    pending: list[tuple[int, int, dict[str, Any]]] = []
    order = itertools.count()
    stamp = _Stamps()
    for minute_ms in range(start_ms, end_ms, 60_000):
        for source in sources:
            for ms, event in source.minute(minute_ms, end_ms):
                if ms < end_ms:
                    if changes:
                        for effect in changes.get(event["tenant_id"], ()):
                            effect.apply(ms, event)
                    event["ts"] = stamp(ms)
                    if traced_scopes and (event["tenant_id"], event["use_case_id"]) in traced_scopes \
                            and "record_type" not in event:
                        copy = {**event, "origin": "trace"}
                        if not filters or all(f.keep(ms, event) for f in filters.get(event["tenant_id"], ())):
                            heapq.heappush(pending, (ms, next(order), event))
                        heapq.heappush(pending, (ms, next(order), copy))
                        continue
                    if filters and not all(f.keep(ms, event) for f in filters.get(event["tenant_id"], ())):
                        continue
                    heapq.heappush(pending, (ms, next(order), event))
        boundary = minute_ms + 60_000
        while pending and pending[0][0] < boundary:
            yield heapq.heappop(pending)[2]
    while pending:
        yield heapq.heappop(pending)[2]


def demo_tenants() -> list[TenantProfile]:
    """Four tenants in three time zones, large to tiny, one of them a sandbox."""
    return [
        TenantProfile("acme", "America/New_York", 760, [
            ("customer_service", "low", ["classify", "retrieve", "answer"]),
            ("claims_triage", "high", ["extract", "retrieve", "assess", "review"]),
            ("drafting", "medium", ["plan", "draft", "revise"]),
        ], "cc-1001", "operations", weights=[0.55, 0.25, 0.2]),
        TenantProfile("globex", "Europe/Berlin", 380, [
            ("support_chat", "low", ["classify", "answer"]),
            ("contract_review", "high", ["extract", "assess", "summarize"]),
            ("code_assist", "medium", ["plan", "generate", "test"]),
        ], "cc-2040", "legal", weights=[0.5, 0.2, 0.3]),
        TenantProfile("initech", "Asia/Tokyo", 140, [
            ("report_summary", "low", ["retrieve", "summarize"]),
            ("fraud_screening", "high", ["score", "explain"]),
        ], "cc-3300", "finance", weights=[0.7, 0.3]),
        TenantProfile("sandbox-dev", "UTC", 30, [
            ("eval_harness", "low", ["generate", "grade"]),
        ], "cc-9000", "platform", environment="sandbox"),
    ]


def demo_incident() -> Incident:
    """acme's drafting agent loops at 10:30 New York time for 90 minutes at 12x its rate."""
    start = datetime(2026, 11, 24, 10, 30, tzinfo=ZoneInfo("America/New_York"))
    return Incident(kind="runaway", tenant_id="acme", use_case_id="drafting", start=start.astimezone(UTC),
                    duration_minutes=90, multiplier=12)


DEMO_START = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)


def demo_events() -> Iterator[dict[str, Any]]:
    """The packaged demo day (replay/data/demo.jsonl)."""
    return generate(start=DEMO_START, hours=24, tenants=demo_tenants(), seed=7, incidents=[demo_incident()])


def main(argv: Sequence[str] | None = None) -> int:
    """Write the demo day or benchmark lines as JSONL to stdout; the count goes to stderr."""
    parser = argparse.ArgumentParser(prog="python -m spendwarden.replay.scenario", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--demo", action="store_true", help="the packaged demo day (seed 7)")
    group.add_argument("--bench", type=int, metavar="N", help="N benchmark events")
    args = parser.parse_args(argv)
    from spendwarden.replay.bench_stream import bench_events

    out = sys.stdout.buffer
    lines = (orjson.dumps(e) for e in demo_events()) if args.demo else bench_events(args.bench)
    count = 0
    for line in lines:
        out.write(line + b"\n")
        count += 1
    out.flush()
    print(f"{count} events", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
