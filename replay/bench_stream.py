"""A fast stream of benchmark cost events: JSON lines spliced from pre-serialised fragments.

Benchmarks need millions of valid, varied events per second without the generator being the
bottleneck, so this skips the realistic traces of ``scenario.generate``: tenants are drawn
Zipf-distributed per line and call shapes from a fixed pool of 4,096.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from spendwarden.replay.prices import CALL_PRICES_NANOS, TOKEN_PRICES_NANOS, usd, cost_nanos
from spendwarden.replay.scenario import _COMMON, _ms

# The models of scenario's tier mixes; not the misroute targets, so the stream stays as it was.
_BENCH_MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "gemini-2.0-flash"]


def bench_events(n: int, tenants: int = 1000, use_cases: int = 10, seed: int = 1,
                 start: datetime = datetime(2026, 11, 24, tzinfo=UTC), hours: float = 24,
                 cost_scale: float = 1.0, use_case_day_usd: float | None = None) -> Iterator[bytes]:
    """``n`` JSON lines (no newline) for throughput tests, fast enough not to be the bottleneck.

    ``cost_scale`` multiplies every cost. ``use_case_day_usd`` instead prices each tenant's
    events so that one of its use cases spends about that much a day, small tenants included
    (benchmarks use it to make every scope's budgets cross thresholds). Fragments are
    serialised once with orjson and joined per line with one random draw: tenants
    Zipf-distributed (t0000 biggest), t09xx in sandbox, every event priced.
    """
    rng = random.Random(seed)
    weights = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(tenants)))
    table = [bisect.bisect_left(weights, (k + 0.5) / 65536 * weights[-1]) for k in range(65536)]
    tenant_frags = [_frag({
        "tenant_id": f"t{t:04d}", "business_unit": f"bu{t % 8}", "cost_center": f"cc{t % 20}",
        "environment": "sandbox" if t // 100 == 9 else "prod"}) for t in range(tenants)]
    tiers = ("low",) * 6 + ("medium",) * 2 + ("high",) * 2
    steps = ("classify", "retrieve", "answer", "review")
    uc_frags = [_frag({"use_case_id": f"uc{u}", "risk_tier": tiers[u % 10], "workflow_step": steps[u % 4]})
                for u in range(use_cases)]
    bodies = _bench_bodies(rng)
    mean_nanos = sum(nanos for _, nanos in bodies) / len(bodies)
    # Cost classes a quarter octave apart: each tenant draws from the pool nearest its scale.
    scale_class = [0] * tenants
    if use_case_day_usd is None:
        class_scales = [cost_scale]
    else:
        hits = [0] * tenants  # the generator's own tenant shares, so small tenants are sized right
        for tenant in table:
            hits[tenant] += 1
        days = hours / 24
        steps_of = [round(4 * math.log2(use_case_day_usd * 1e9 * days * use_cases / (n * h / 65536) / mean_nanos))
                    if h else None for h in hits]  # a tenant with no hits never appears
        low = min(s for s in steps_of if s is not None)
        steps_of = [low if s is None else s for s in steps_of]
        class_scales = [2 ** ((low + k) / 4) for k in range(max(steps_of) - low + 1)]
        scale_class = [s - low for s in steps_of]
    pools = [[_frag({**body, "allocated_cost_usd": usd(round(nanos * scale)), **_COMMON,
                     "retention_class": "standard"}) for body, nanos in bodies] for scale in class_scales]
    start_ms, span_ms = _ms(start), round(hours * 3_600_000)
    epoch = datetime(1970, 1, 1)
    last_sec, sec_text = -1, b""
    getrandbits = rng.getrandbits
    template = b'{"cost_event_id":"b%d-%09d","trace_id":"b%d-t%08d","ts":"%s.%03dZ",%s,%s,%s}'
    for i in range(n):
        ms = start_ms + i * span_ms // n
        sec = ms // 1000
        if sec != last_sec:
            last_sec = sec
            sec_text = (epoch + timedelta(seconds=sec)).strftime("%Y-%m-%dT%H:%M:%S").encode()
        r = getrandbits(64)
        tenant = table[r & 0xFFFF]
        yield template % (seed, i, seed, i // 3, sec_text, ms % 1000, tenant_frags[tenant],
                          uc_frags[(r >> 16) % use_cases], pools[scale_class[tenant]][(r >> 32) & 4095])


def _bench_bodies(rng: random.Random) -> list[tuple[dict[str, Any], int]]:
    """4,096 call shapes (model calls, vector and web searches) with their list cost in nano-dollars."""
    models = _BENCH_MODELS
    bodies: list[tuple[dict[str, Any], int]] = []
    for _ in range(4096):
        r = rng.random()
        if r < 0.1 or r > 0.95:
            service = "vector-search" if r < 0.1 else "web-search"
            bodies.append(({"component": CALL_PRICES_NANOS[service][0], "provider": "internal",
                            "model_or_service": service, "api_calls": 1}, cost_nanos(service)))
        else:
            model = rng.choice(models)
            t_in = int(rng.lognormvariate(7.0, 0.8)) + 10
            t_out = int(rng.lognormvariate(5.3, 0.7)) + 5
            cached = int(t_in * rng.uniform(0.3, 0.9)) if rng.random() < 0.4 else 0
            bodies.append(({"component": "model_call", "provider": TOKEN_PRICES_NANOS[model][0],
                            "model_or_service": model, "input_tokens": t_in, "output_tokens": t_out,
                            "cached_tokens": cached, "api_calls": 1,
                            "cache_status": "hit" if cached else "miss"}, cost_nanos(model, t_in, t_out, cached)))
    return bodies


def _frag(body: dict[str, Any]) -> bytes:
    """A JSON object's members without the braces, to splice into a line template."""
    return orjson.dumps(body)[1:-1]
