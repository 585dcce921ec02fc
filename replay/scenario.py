"""Seeded synthetic cost traffic: realistic tenants' traces and the packaged demo day.

Replay, the demo and the benchmarks need traffic that looks like production (diurnal load
in each tenant's own time zone, agent traces of several calls, a mix of models, half the
events already priced by the gateway) and is identical for a seed, so a report or a
benchmark figure can be reproduced. Incidents add labelled bad behaviour on top of the
normal traffic without changing it: each tenant and incident draws from its own random
stream, so the same seed with and without an incident gives the same normal events.

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
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from spendwarden.exceptions import ConfigError

PRICING_VERSION = "2026-10"
# List prices in nano-dollars: per token (input, output, cached input) or per call.
TOKEN_PRICES_NANOS: dict[str, tuple[str, int, int, int]] = {
    "gpt-4o": ("openai", 2500, 10000, 1250),
    "gpt-4o-mini": ("openai", 150, 600, 75),
    "claude-sonnet-4": ("anthropic", 3000, 15000, 300),
    "claude-haiku-4": ("anthropic", 800, 4000, 80),
    "gemini-2.0-flash": ("google", 100, 400, 25),
}
CALL_PRICES_NANOS: dict[str, tuple[str, int]] = {
    "web-search": ("tool", 5_000_000),
    "vector-search": ("retrieval", 400_000),
}
# Riskier use cases lean on larger models; weights per tier.
_MODEL_MIX: dict[str, tuple[tuple[str, float], ...]] = {
    "low": (("gpt-4o-mini", 0.4), ("gemini-2.0-flash", 0.35), ("claude-haiku-4", 0.25)),
    "medium": (("gpt-4o", 0.35), ("gpt-4o-mini", 0.3), ("claude-haiku-4", 0.2), ("claude-sonnet-4", 0.15)),
    "high": (("claude-sonnet-4", 0.5), ("gpt-4o", 0.4), ("claude-haiku-4", 0.1)),
}
_TOKENS: dict[str, tuple[int, int]] = {"low": (900, 180), "medium": (2200, 450), "high": (4000, 700)}
_TRACE_LENGTHS = (1, 2, 3, 4, 5, 6)
_TRACE_WEIGHTS = (0.25, 0.2, 0.2, 0.15, 0.12, 0.08)
_MEAN_TRACE = sum(n * w for n, w in zip(_TRACE_LENGTHS, _TRACE_WEIGHTS)) / sum(_TRACE_WEIGHTS)
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


@dataclass(frozen=True, kw_only=True)
class Incident:
    """Labelled bad behaviour. ``runaway``: an agent loop multiplies one use case's calls."""

    kind: Literal["runaway"] = "runaway"
    tenant_id: str
    use_case_id: str
    start: datetime
    duration_minutes: float
    multiplier: float


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


def cost_nanos(model: str, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0,
               api_calls: int = 1) -> int:
    """List cost of one event; cached tokens are part of input and billed at the cached rate."""
    if model in CALL_PRICES_NANOS:
        return api_calls * CALL_PRICES_NANOS[model][1]
    _, p_in, p_out, p_cached = TOKEN_PRICES_NANOS[model]
    return (input_tokens - cached_tokens) * p_in + cached_tokens * p_cached + output_tokens * p_out


def _usd(nanos: int) -> float:
    # Serialises as a plain decimal with at most 9 places (orjson: 0.000015, never 1.5e-05).
    return round(nanos / 1e9, 9)


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ms(when: datetime) -> int:
    if when.tzinfo is None:
        raise ConfigError(f"{when.isoformat()} has no time zone; give times in UTC or with an offset")
    return round(when.timestamp() * 1000)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Tenant:
    """Draws one tenant's traces minute by minute from its own random stream."""

    def __init__(self, profile: TenantProfile, seed: int) -> None:
        self.p = profile
        self.rng = random.Random(f"{seed}/{profile.tenant_id}")
        try:
            self.zone = ZoneInfo(profile.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"tenant {profile.tenant_id}: unknown time zone {profile.timezone!r}") from None
        weights = list(profile.weights or [1.0] * len(profile.use_cases))
        if len(weights) != len(profile.use_cases) or not profile.use_cases:
            raise ConfigError(f"tenant {profile.tenant_id}: need one weight per use case")
        total = sum(weights)
        self.shares = {uc[0]: w / total for uc, w in zip(profile.use_cases, weights)}
        self.events = 0
        self.traces = 0

    def calls_per_minute(self, minute_ms: int, use_case_id: str) -> float:
        local = datetime.fromtimestamp(minute_ms / 1000, self.zone)
        shape = diurnal(local.hour + local.minute / 60)
        return self.p.calls_per_hour * shape * self.shares[use_case_id] / 60

    def minute(self, minute_ms: int, end_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
        rng = self.rng
        span = min(60_000, end_ms - minute_ms)
        for use_case in self.p.use_cases:
            lam = self.calls_per_minute(minute_ms, use_case[0]) * span / 60_000 / _MEAN_TRACE
            for _ in range(_poisson(rng, lam)):
                self.traces += 1
                trace_id = f"{self.p.tenant_id}-t{self.traces:07d}"
                ms = minute_ms + int(rng.random() * span)
                steps = use_case[2]
                for i in range(rng.choices(_TRACE_LENGTHS, _TRACE_WEIGHTS)[0]):
                    self.events += 1
                    event_id = f"{self.p.tenant_id}-{self.events:08d}"
                    yield ms, self.call(rng, use_case, steps[i % len(steps)], event_id, trace_id, first=i == 0)
                    ms += int(rng.uniform(300, 4000))

    def call(self, rng: random.Random, use_case: UseCase, step: str, event_id: str, trace_id: str, *,
             first: bool = False, model: str | None = None, input_boost: int = 0) -> dict[str, Any]:
        """One event (ts filled in later): a model call, or a retrieval or tool call."""
        r = 0.0 if first or model else rng.random()
        if r > 0.85 or model == "web-search":
            service = "web-search"
        elif r > 0.65:
            service = "vector-search"
        else:
            service = model or rng.choices(*zip(*_MODEL_MIX[use_case[1]]))[0]
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
            med_in, med_out = _TOKENS[use_case[1]]
            tokens_in = min(120_000, int(rng.lognormvariate(math.log(med_in), 0.6)) + input_boost + 20)
            tokens_out = min(8_000, int(rng.lognormvariate(math.log(med_out), 0.7)) + 5)
            hit = rng.random() < 0.4
            cached = int(tokens_in * rng.uniform(0.4, 0.9)) if hit else 0
            event.update(
                component="model_call", provider=TOKEN_PRICES_NANOS[service][0], model_or_service=service,
                input_tokens=tokens_in, output_tokens=tokens_out, cached_tokens=cached, api_calls=1,
                cache_status="hit" if hit else "miss",
            )
            nanos = cost_nanos(service, tokens_in, tokens_out, cached)
        if rng.random() < 0.5:  # the other half is priced from the pricebook
            event["allocated_cost_usd"] = _usd(nanos)
        event.update(_COMMON)
        event["retention_class"] = "standard"
        return event


class _Runaway:
    """An agent loop: extra calls at (multiplier - 1) x the use case's normal rate, step plan."""

    LOOPS = 3

    def __init__(self, incident: Incident, tenant: _Tenant, seed: int, index: int) -> None:
        self.inc = incident
        self.index = index
        self.tenant = tenant
        self.rng = random.Random(f"{seed}/incident/{index}/{incident.tenant_id}/{incident.use_case_id}")
        self.start_ms = _ms(incident.start)
        self.end_ms = self.start_ms + round(incident.duration_minutes * 60_000)
        match = [uc for uc in tenant.p.use_cases if uc[0] == incident.use_case_id]
        if not match:
            raise ConfigError(f"incident: tenant {incident.tenant_id} has no use case {incident.use_case_id}")
        self.use_case = match[0]
        self.model = _MODEL_MIX[self.use_case[1]][0][0]
        self.iterations = [0] * self.LOOPS
        self.ids = 0

    def minute(self, minute_ms: int, end_ms: int) -> Iterator[tuple[int, dict[str, Any]]]:
        lo, hi = max(minute_ms, self.start_ms), min(minute_ms + 60_000, self.end_ms, end_ms)
        if hi <= lo:
            return
        rng, tenant = self.rng, self.tenant
        rate = tenant.calls_per_minute(minute_ms, self.use_case[0]) * (self.inc.multiplier - 1)
        for _ in range(_poisson(rng, rate * (hi - lo) / 60_000)):
            loop = rng.randrange(self.LOOPS)
            self.iterations[loop] += 1
            service = "web-search" if rng.random() < 0.2 else self.model
            boost = min(60_000, 150 * self.iterations[loop])  # the loop's context keeps growing
            self.ids += 1
            prefix = f"{tenant.p.tenant_id}-loop{self.index}"
            event = tenant.call(rng, self.use_case, "plan", f"{prefix}-{self.ids:08d}", f"{prefix}-t{loop}",
                                model=service, input_boost=boost)
            yield lo + int(rng.random() * (hi - lo)), event


def generate(*, start: datetime, hours: float, tenants: list[TenantProfile], seed: int,
             incidents: Iterable[Incident] = ()) -> Iterator[dict[str, Any]]:
    """Cost events as JSON-ready dicts in timestamp order over ``[start, start + hours)``.

    Traces start minute by minute and may spill into later minutes, so pending events wait
    in a heap and are released once no later trace can start before them.
    """
    start_ms = _ms(start)
    end_ms = start_ms + round(hours * 3_600_000)
    states = {p.tenant_id: _Tenant(p, seed) for p in tenants}
    sources: list[_Tenant | _Runaway] = list(states.values())
    for index, inc in enumerate(incidents):
        if inc.tenant_id not in states:
            raise ConfigError(f"incident: unknown tenant {inc.tenant_id}")
        sources.append(_Runaway(inc, states[inc.tenant_id], seed, index))
    pending: list[tuple[int, int, dict[str, Any]]] = []
    order = itertools.count()
    for minute_ms in range(start_ms, end_ms, 60_000):
        for source in sources:
            for ms, event in source.minute(minute_ms, end_ms):
                if ms < end_ms:
                    event["ts"] = _iso(ms)
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
