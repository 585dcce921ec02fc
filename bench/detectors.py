"""Anomaly detectors: scoring throughput of each, and the engine with detectors on against the
same engine without them, in one run.

    .venv/bin/python bench/detectors.py [--events 200000] [--tenants 1000] [--use-cases 10] [--days 7]

  seasonal / unit-cost  learn_one and score_one per second on synthetic hourly series
  replay without        every shipped pack + one per-use-case day budget with a plain cap rule
  replay with           the same + two rules on that budget reading anomaly.spend / anomaly.unit_cost
                        (detectors taught each closed hour, scored once a minute per instance)

Goal (issue 6): detectors cost <= 3x the engine without them, i.e. (with - without) / without <= 3.
Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import all_packs  # noqa: E402 - the engine bench's rule set

from spendwarden.detectors import SeasonalBaseline, TokenProfile, UnitCostDrift  # noqa: E402
from spendwarden.detectors.profile import profile_counts  # noqa: E402
from spendwarden.replay.readers import open_events  # noqa: E402
from spendwarden.replay.run import NullSink, replay  # noqa: E402
from spendwarden.replay.bench_stream import bench_events  # noqa: E402
from spendwarden.rules.schema import RuleFile  # noqa: E402
from spendwarden.streams.ingest import Ingest  # noqa: E402
from spendwarden.streams.pricebook import Pricebook  # noqa: E402

DETECTOR_BUDGET = {"name": "det.uc-day", "for_each": ["tenant_id", "use_case_id"], "period": "day",
                   "limit_usd": 10_000_000}
CAP = {"name": "det.cap", "budget": "det.uc-day", "when": "budget.used_ratio >= 1.0"}
ANOMALY_RULES = [
    {"name": "det.spend-anomaly", "budget": "det.uc-day", "when": "anomaly.spend.warm && anomaly.spend.score > 6"},
    {"name": "det.unit-cost-anomaly", "budget": "det.uc-day",
     "when": "anomaly.unit_cost.warm && anomaly.unit_cost.score > 6"},
    {"name": "det.profile-anomaly", "budget": "det.uc-day", "when": "anomaly.profile.warm && anomaly.profile.score > 6"},
]


def rule_set(tenants: int, with_detectors: bool) -> Any:
    """The engine bench's packs plus the detector budget, with or without the anomaly rules."""
    extra = RuleFile.model_validate({"budgets": [DETECTOR_BUDGET],
                                     "rules": [CAP] + (ANOMALY_RULES if with_detectors else [])})
    return all_packs(tenants, [extra])


def time_detector(make: Any, series: int, hours: int, x_of: Any) -> tuple[float, float]:
    """learn_one and score_one per second over ``series`` synthetic series of ``hours`` each."""
    rng = random.Random(1)
    points = [[x_of(rng, h) for h in range(hours)] for _ in range(series)]
    detectors = [make() for _ in range(series)]
    learn_s = score_s = 0.0
    for det, xs in zip(detectors, points):
        for h, x in enumerate(xs):
            t = h * 3600.0
            started = time.perf_counter()
            det.score_one(x, t)
            middle = time.perf_counter()
            det.learn_one(x, t)
            score_s += middle - started
            learn_s += time.perf_counter() - middle
    calls = series * hours
    return calls / learn_s, calls / score_s


def time_replay(path: str, rules: Any) -> tuple[int, float, Any]:
    gc.collect()
    result = replay(open_events(path), rules, Ingest(Pricebook.default()), NullSink())
    return result.events, result.elapsed_s, result.engine


def profile_minute(rng: random.Random, _: int) -> dict[str, float]:
    """One minute of 20 calls of a use case: three models, two steps, cache hits, some failures."""
    x: dict[str, float] = {}
    for i in range(20):
        profile_counts("model_call", rng.choice(("gpt-4o", "gpt-4o-mini", "claude-haiku-4")), ("plan", "answer")[i % 2],
                       int(rng.lognormvariate(7, 0.5)), 0 if rng.random() < 0.04 else int(rng.lognormvariate(5, 0.5)),
                       500 if rng.random() < 0.5 else 0, x, i % 5 + 1)
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--use-cases", type=int, default=10)
    parser.add_argument("--days", type=float, default=7.0)
    args = parser.parse_args()

    seasonal_learn, seasonal_score = time_detector(
        lambda: SeasonalBaseline(tz="Europe/Paris"), 20, 21 * 24,
        lambda rng, h: {"spend_usd": (20.0 if 9 <= h % 24 < 18 else 4.0) * rng.lognormvariate(0, 0.2)})
    unit_learn, unit_score = time_detector(
        lambda: UnitCostDrift(per="requests"), 20, 21 * 24,
        lambda rng, h: {"cost_usd": 0.01 * 300 * rng.lognormvariate(0, 0.05), "requests": 300.0})

    profile_learn, profile_score = time_detector(TokenProfile, 20, 21 * 24, profile_minute)

    without_rules, with_rules = rule_set(args.tenants, False), rule_set(args.tenants, True)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "events.jsonl")
        with open(path, "wb") as handle:
            for line in bench_events(args.events, tenants=args.tenants, use_cases=args.use_cases,
                                     hours=24 * args.days):
                handle.write(line + b"\n")
        events, without_s, _ = time_replay(path, without_rules)
        _, with_s, engine = time_replay(path, with_rules)
    taught = sum(1 for key in engine.state if key[0] == "det")

    print(f"\n{'what':<44} {'count':>10} {'seconds':>9} {'per second':>12}")
    for name, rate in (("seasonal learn_one", seasonal_learn), ("seasonal score_one", seasonal_score),
                       ("unit-cost learn_one", unit_learn), ("unit-cost score_one", unit_score),
                       ("profile learn_one (one minute of 20 calls)", profile_learn),
                       ("profile score_one", profile_score)):
        print(f"{name:<44} {'':>10} {'':>9} {rate:>12,.0f}")
    print(f"{'replay without detectors (baseline)':<44} {events:>10,} {without_s:>9.2f} {events / without_s:>12,.0f}")
    print(f"{'replay with detectors':<44} {events:>10,} {with_s:>9.2f} {events / with_s:>12,.0f}")
    overhead = (with_s - without_s) / without_s
    print(f"\ninstances with detectors: {taught:,}; detector cost / engine without them: {overhead:.2f}x "
          f"(goal <= 3x)")
    print(json.dumps({
        "events": events, "seasonal_scores_per_s": round(seasonal_score), "seasonal_learns_per_s": round(seasonal_learn),
        "unit_cost_scores_per_s": round(unit_score), "unit_cost_learns_per_s": round(unit_learn),
        "profile_scores_per_s": round(profile_score), "profile_learns_per_s": round(profile_learn),
        "without_events_per_s": round(events / without_s), "with_events_per_s": round(events / with_s),
        "detector_overhead_x": round(overhead, 3), "instances_with_detectors": taught,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
