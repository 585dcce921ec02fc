"""Anomaly detectors: scoring throughput of each, and the engine with detectors on against the
same engine without them, in one run.

    .venv/bin/python bench/detectors.py [--events 200000] [--tenants 1000] [--use-cases 10] [--days 7]
        [--repeat 2]

  each detector        learn_one and score_one per second on synthetic hourly or minute series
  replay without        every shipped pack + one per-use-case day budget with a plain cap rule
  replay with all       the same + one rule per detector on that budget (anomaly.spend, .unit_cost,
                        .tokens, .profile, .new_model, .cache): every detector learns and scores
  replay with defaults  the same with the default set's five (rules/packs/anomaly: all but spend)
                        (hourly detectors taught each closed hour, minute ones each closed minute;
                        scored once a minute per instance)

Each replay runs ``--repeat`` times, the three interleaved, and the fastest run of each counts
(this machine's speed drifts by 5-10% between runs; the minimum is the least disturbed one).

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

from spendwarden.detectors import (  # noqa: E402
    CacheCollapse, NewModel, SeasonalBaseline, TokenDrift, TokenProfile, UnitCostDrift,
)
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
DETECTOR_THRESHOLDS = {"spend": 6, "unit_cost": 6, "tokens": 5, "profile": 5, "new_model": 5, "cache": 15}
DEFAULT_SET = ("unit_cost", "tokens", "profile", "new_model", "cache")  # rules/packs/anomaly


def rule_set(tenants: int, detectors: tuple[str, ...]) -> Any:
    """The engine bench's packs plus the detector budget, with one rule per detector named."""
    rules = [{"name": f"det.{name}-anomaly", "budget": "det.uc-day",
              "when": f"anomaly.{name}.warm && anomaly.{name}.score > {DETECTOR_THRESHOLDS[name]}"}
             for name in detectors]
    extra = RuleFile.model_validate({"budgets": [DETECTOR_BUDGET], "rules": [CAP] + rules})
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


def minute_models(rng: random.Random, _: int) -> dict[str, float]:
    """One minute of 20 model calls over three models, as the new-model detector reads it."""
    x: dict[str, float] = {}
    for _ in range(20):
        model, price = rng.choice((("gpt-4o", 0.01), ("gpt-4o-mini", 0.001), ("claude-haiku-4", 0.002)))
        x["model:" + model] = x.get("model:" + model, 0) + 1
        x["usd:" + model] = x.get("usd:" + model, 0.0) + price * rng.lognormvariate(0, 0.5)
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--use-cases", type=int, default=10)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each replay; the fastest counts")
    args = parser.parse_args()

    seasonal_learn, seasonal_score = time_detector(
        lambda: SeasonalBaseline(tz="Europe/Paris"), 20, 21 * 24,
        lambda rng, h: {"spend_usd": (20.0 if 9 <= h % 24 < 18 else 4.0) * rng.lognormvariate(0, 0.2)})
    unit_learn, unit_score = time_detector(
        lambda: UnitCostDrift(per="requests"), 20, 21 * 24,
        lambda rng, h: {"cost_usd": 0.01 * 300 * rng.lognormvariate(0, 0.05), "requests": 300.0})

    tokens_learn, tokens_score = time_detector(
        TokenDrift, 20, 21 * 24,
        lambda rng, h: {"tokens": 300 * 1500 * rng.lognormvariate(0, 0.05), "model_calls": 300.0})
    profile_learn, profile_score = time_detector(TokenProfile, 20, 21 * 24, profile_minute)
    new_learn, new_score = time_detector(NewModel, 20, 21 * 24, minute_models)
    cache_learn, cache_score = time_detector(
        CacheCollapse, 20, 21 * 24, lambda rng, h: {"model_calls": 20.0, "hits": float(rng.randint(6, 12))})

    without_rules, all_rules = rule_set(args.tenants, ()), rule_set(args.tenants, tuple(DETECTOR_THRESHOLDS))
    default_rules = rule_set(args.tenants, DEFAULT_SET)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "events.jsonl")
        with open(path, "wb") as handle:
            for line in bench_events(args.events, tenants=args.tenants, use_cases=args.use_cases,
                                     hours=24 * args.days):
                handle.write(line + b"\n")
        without_s = with_s = default_s = float("inf")
        for _ in range(max(1, args.repeat)):
            events, seconds, _ = time_replay(path, without_rules)
            without_s = min(without_s, seconds)
            _, seconds, engine = time_replay(path, all_rules)
            with_s = min(with_s, seconds)
            taught = sum(1 for key in engine.state if key[0] in ("det", "detp"))
            del engine  # its state must not weigh on the next run's garbage collections
            _, seconds, _ = time_replay(path, default_rules)
            default_s = min(default_s, seconds)

    print(f"\n{'what':<44} {'count':>10} {'seconds':>9} {'per second':>12}")
    for name, rate in (("seasonal learn_one", seasonal_learn), ("seasonal score_one", seasonal_score),
                       ("unit-cost learn_one", unit_learn), ("unit-cost score_one", unit_score),
                       ("tokens learn_one", tokens_learn), ("tokens score_one", tokens_score),
                       ("profile learn_one (one minute of 20 calls)", profile_learn),
                       ("profile score_one", profile_score),
                       ("new-model learn_one (one minute of 20 calls)", new_learn),
                       ("new-model score_one", new_score),
                       ("cache learn_one (one minute of 20 calls)", cache_learn), ("cache score_one", cache_score)):
        print(f"{name:<44} {'':>10} {'':>9} {rate:>12,.0f}")
    print(f"{'replay without detectors (baseline)':<44} {events:>10,} {without_s:>9.2f} {events / without_s:>12,.0f}")
    print(f"{'replay with all six detectors':<44} {events:>10,} {with_s:>9.2f} {events / with_s:>12,.0f}")
    print(f"{'replay with the default set (five)':<44} {events:>10,} {default_s:>9.2f} {events / default_s:>12,.0f}")
    overhead = (with_s - without_s) / without_s
    default_overhead = (default_s - without_s) / without_s
    print(f"\ninstances with detectors: {taught:,}; detector cost / engine without them: {overhead:.2f}x with all "
          f"six, {default_overhead:.2f}x with the default set (goal <= 3x)")
    print(json.dumps({
        "events": events, "seasonal_scores_per_s": round(seasonal_score), "seasonal_learns_per_s": round(seasonal_learn),
        "unit_cost_scores_per_s": round(unit_score), "unit_cost_learns_per_s": round(unit_learn),
        "tokens_scores_per_s": round(tokens_score), "tokens_learns_per_s": round(tokens_learn),
        "profile_scores_per_s": round(profile_score), "profile_learns_per_s": round(profile_learn),
        "new_model_scores_per_s": round(new_score), "new_model_learns_per_s": round(new_learn),
        "cache_scores_per_s": round(cache_score), "cache_learns_per_s": round(cache_learn),
        "without_events_per_s": round(events / without_s), "with_events_per_s": round(events / with_s),
        "default_events_per_s": round(events / default_s), "default_overhead_x": round(default_overhead, 3),
        "detector_overhead_x": round(overhead, 3), "instances_with_detectors": taught,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
