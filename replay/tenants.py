"""Many tenants with Zipf-like sizes for scenarios: a few big ones, a long tail of small ones.

Detectors must work on both ends: the big tenants carry most of the spend, the small ones
most of the scopes (and most of the noise per scope). Sizes are exact Zipf ranks (``t00`` is
the biggest), everything else (zone, use cases, weekend habit, cache use) is drawn from the
seed, so a scenario's tenants are the same for a seed whatever the scenario.
"""

from __future__ import annotations

import random

from spendwarden.replay.scenario import TenantProfile, UseCase

TOP_CALLS_PER_HOUR = 2000.0  # the biggest tenant's events per hour at a weekday's peak
ZIPF_EXPONENT = 1.0
FAIL_RATE = 0.04  # model calls that fail once and are retried (rate limits, timeouts)
DAY_NOISE = 0.1  # day-to-day volume: lognormal sigma

# (id, risk tier, workflow steps): what a tenant may run. Steps repeat through a trace.
CATALOGUE: tuple[UseCase, ...] = (
    ("support_chat", "low", ("classify", "retrieve", "answer")),
    ("ticket_triage", "low", ("classify", "route")),
    ("report_summary", "low", ("retrieve", "summarize")),
    ("doc_qa", "medium", ("retrieve", "rerank", "answer")),
    ("drafting", "medium", ("plan", "draft", "revise")),
    ("code_assist", "medium", ("plan", "generate", "test")),
    ("research_agent", "medium", ("plan", "search", "read", "write")),
    ("claims_review", "high", ("extract", "retrieve", "assess", "review")),
    ("contract_review", "high", ("extract", "assess", "summarize")),
    ("fraud_screening", "high", ("score", "explain")),
)
# IANA zones and how often tenants sit in them.
ZONES: tuple[tuple[str, float], ...] = (
    ("America/New_York", 0.25), ("America/Los_Angeles", 0.15), ("America/Sao_Paulo", 0.05),
    ("Europe/London", 0.12), ("Europe/Berlin", 0.15), ("Asia/Kolkata", 0.08), ("Asia/Tokyo", 0.1),
    ("Australia/Sydney", 0.05), ("UTC", 0.05),
)
_UNITS = ("operations", "legal", "finance", "support", "engineering", "marketing")


def zipf_tenants(n: int, seed: int, top_calls_per_hour: float = TOP_CALLS_PER_HOUR) -> list[TenantProfile]:
    """``n`` tenants, the i-th (from 0) at ``top_calls_per_hour / (i + 1)`` events/h at peak.

    Most are businesses whose weekends run at 20-45% of a weekday; a third are consumer
    apps at 80-110%. Each runs 2-4 use cases with uneven shares and its own cache hit rate
    (15-90% of model calls), so some use cases cache enough to suffer a cache collapse.
    """
    rng = random.Random(f"{seed}/tenants")
    width = max(2, len(str(n - 1)))
    zones, zone_weights = zip(*ZONES)
    tenants = []
    for i in range(n):
        use_cases = rng.sample(CATALOGUE, rng.choice((2, 3, 3, 4)))
        consumer = rng.random() < 1 / 3
        tenants.append(TenantProfile(
            tenant_id=f"t{i:0{width}d}",
            timezone=rng.choices(zones, zone_weights)[0],
            calls_per_hour=round(top_calls_per_hour / (i + 1) ** ZIPF_EXPONENT, 3),
            use_cases=use_cases,
            cost_center=f"cc-{1000 + i}",
            business_unit=rng.choice(_UNITS),
            weights=[round(rng.uniform(0.5, 3.0), 3) for _ in use_cases],
            cache_hit=[round(rng.uniform(0.15, 0.9), 3) for _ in use_cases],
            weekend=round(rng.uniform(0.8, 1.1) if consumer else rng.uniform(0.2, 0.45), 3),
            day_noise=DAY_NOISE,
            fail_rate=FAIL_RATE,
        ))
    return tenants
