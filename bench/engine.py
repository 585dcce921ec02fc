"""Engine throughput through replay, against a bare parse-only loop measured in the same run.

    .venv/bin/python bench/engine.py [--events 1000000] [--tenants 1000] [--use-cases 10]
        [--days 7] [--use-case-day-usd 1300]

Generates N JSONL cost events (1,000 tenants x 10 use cases, Zipf-sized tenants, 7 days, each
tenant priced so one of its use cases spends ~1,300 USD a day: about 10% of events move a
scope across a threshold), loads every shipped rule pack at once (names prefixed by pack,
tenants replaced by 1,000 generated ones with tiers and time zones), and measures:

  parse-only     for line in file: orjson.loads(line)                 (the ceiling)
  validate-only  the CostEvent schema's own validator on each line, nothing else: the floor of
                 any per-event design that validates with pydantic (docs/engine.md#performance)
  ingest-only    decode + validate (pydantic) + checks + price, no engine
  replay         the full replay driver: ingest + engine + ticks + effects

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from spendwarden.replay.readers import open_events
from spendwarden.replay.run import NullSink, ReplayResult, replay
from spendwarden.replay.bench_stream import bench_events
from spendwarden.rules.compiler import SourceFile, compile_ruleset
from spendwarden.rules.loader import read_source
from spendwarden.rules.schema import RuleFile, TenantSpec
from spendwarden.streams.events import CostEvent
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

PACKS = Path(__file__).resolve().parent.parent / "rules" / "packs"
ZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo", "America/Los_Angeles")


def bench_tenants(count: int) -> dict[str, TenantSpec]:
    """Tiers by size (the Zipf head is gold), sandboxes at t09xx, zones spread over the world."""
    tenants = {"defaults": TenantSpec(timezone="UTC", tier="bronze")}
    for t in range(count):
        tier = "gold" if t < 20 else "silver" if t < 200 else "sandbox" if t // 100 == 9 else "bronze"
        tenants[f"t{t:04d}"] = TenantSpec(timezone=ZONES[t % len(ZONES)], tier=tier)
    return tenants


def budget_pack_files() -> list[Path]:
    """The shipped packs' rule files, the anomaly pack left out (bench/detectors.py measures it)
    and the outcomes pack too (it needs outcomes and traces: bench/unit_economics.py)."""
    return sorted(p for p in PACKS.glob("*/*.yaml") if p.parent.name not in ("anomaly", "outcomes"))


def all_packs(tenant_count: int, extra: Sequence[RuleFile] = ()) -> Any:
    """Every shipped budget pack in one rule set: names prefixed with the pack, tenants generated
    (``extra`` rule files are added, e.g. by bench/detectors.py). The anomaly pack is left out:
    the engine bench measures the engine without detectors, bench/detectors.py adds them."""
    sources = []
    for rules_file in budget_pack_files():
        pack = rules_file.parent.name
        source = read_source(rules_file)
        model = source.model
        budgets = [b.model_copy(update={"name": f"{pack}.{b.name}"}) for b in model.budgets]
        rules = [r.model_copy(update={"name": f"{pack}.{r.name}", "budget": f"{pack}.{r.budget}"})
                 for r in model.rules]
        sources.append(SourceFile(source.path, RuleFile(budgets=budgets, rules=rules), source.locate, source.raw))
    sources.append(SourceFile("<bench tenants>", RuleFile(tenants=bench_tenants(tenant_count)),
                              lambda loc: (None, None)))
    sources.extend(SourceFile(f"<extra {i}>", model, lambda loc: (None, None)) for i, model in enumerate(extra))
    return compile_ruleset(sources)


def time_each_line(path: str, call: Callable[[bytes], Any]) -> tuple[int, float]:
    """Lines and seconds for ``call`` on every line of the file, results dropped."""
    count = 0
    started = time.perf_counter()
    with open(path, "rb") as handle:
        for line in handle:
            call(line)
            count += 1
    return count, time.perf_counter() - started


def time_parse_only(path: str) -> tuple[int, float]:
    """orjson.loads per line: the ceiling."""
    return time_each_line(path, orjson.loads)


def time_validate_only(path: str) -> tuple[int, float]:
    """pydantic-core's validator for CostEvent on the raw bytes (ingest's fast path without the
    checks and pricing): no replay that validates every event with it can beat this rate."""
    return time_each_line(path, CostEvent.__pydantic_validator__.validate_json)


def time_ingest_only(path: str, ingest: Ingest) -> tuple[int, float]:
    """Ingest.parse_items, the worker's parser (cost events and marked outcomes)."""
    parse = ingest.parse_items
    count = 0
    started = time.perf_counter()
    with open(path, "rb") as handle:
        for line in handle:
            count += len(parse(line.rstrip(b"\n"))[0])
    return count, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--use-cases", type=int, default=10)
    parser.add_argument("--days", type=float, default=7.0, help="event-time span of the generated events")
    parser.add_argument("--use-case-day-usd", type=float, default=1300.0,
                        help="price each tenant's events so one of its use cases spends about this much a day "
                             "(daily use-case limits of the packs are 1,000-1,200 USD), so scopes cross thresholds")
    args = parser.parse_args()

    rules = all_packs(args.tenants)
    ingest = Ingest(Pricebook.default())
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "events.jsonl")
        started = time.perf_counter()
        with open(path, "wb") as handle:
            for line in bench_events(args.events, tenants=args.tenants, use_cases=args.use_cases,
                                     hours=24 * args.days, use_case_day_usd=args.use_case_day_usd):
                handle.write(line + b"\n")
        print(f"generated {args.events:,} events in {time.perf_counter() - started:.1f}s "
              f"({os.path.getsize(path) / 1e6:.0f} MB); {len(rules.budgets)} budgets, {len(rules.rules)} rules "
              f"from {len(budget_pack_files())} packs", file=sys.stderr)

        parsed, parse_s = time_parse_only(path)
        gc.collect()
        validated, validate_s = time_validate_only(path)
        gc.collect()
        ingested, ingest_s = time_ingest_only(path, ingest)
        gc.collect()
        result: ReplayResult = replay(open_events(path), rules, ingest, NullSink())

    engine = result.engine
    assert engine is not None
    crossing = engine.stats.alerts_fired
    rows = [
        ("parse-only (orjson.loads)", parsed, parse_s),
        ("validate-only (pydantic)", validated, validate_s),
        ("ingest-only (validate + price)", ingested, ingest_s),
        ("replay (ingest + engine)", result.events, result.elapsed_s),
    ]
    print(f"\n{'stage':<32} {'events':>10} {'seconds':>9} {'events/s':>11} {'us/event':>9}")
    for name, count, seconds in rows:
        print(f"{name:<32} {count:>10,} {seconds:>9.2f} {count / seconds:>11,.0f} {seconds / count * 1e6:>9.2f}")
    engine_us = (result.elapsed_s - ingest_s) / result.events * 1e6
    print(f"{'engine share (replay - ingest)':<32} {'':>10} {'':>9} {'':>11} {engine_us:>9.2f}")
    parse_rate = parsed / parse_s
    replay_rate = result.events / result.elapsed_s
    print(f"\nalerts fired {crossing:,}, resolved {result.effects.get('alert_resolved', 0):,}, decision changes "
          f"{result.effects.get('decision', 0):,}, CEL evaluations {engine.stats.cel_evaluations:,}, "
          f"events that moved a scope across a threshold: {result.events_with_effects / result.events:.1%}")
    validate_rate = validated / validate_s
    print(f"replay / parse-only ratio: {replay_rate / parse_rate:.3f}  (goal >= 0.25 and >= 100,000 events/s)")
    print(f"validate-only / parse-only ratio: {validate_rate / parse_rate:.3f}  (the most any replay that validates "
          f"each event with pydantic can reach, with no pricing and no engine)")
    print(json.dumps({
        "events": result.events,
        "parse_only_events_per_s": round(parse_rate),
        "validate_only_events_per_s": round(validate_rate),
        "validate_only_ratio": round(validate_rate / parse_rate, 3),
        "ingest_only_events_per_s": round(ingested / ingest_s),
        "engine_events_per_s": round(replay_rate),
        "ratio": round(replay_rate / parse_rate, 3),
        "engine_us_per_event": round(engine_us, 2),
        "alerts_fired": crossing,
        "decision_changes": result.effects.get("decision", 0),
        "cel_evaluations": engine.stats.cel_evaluations,
        "events_crossing_share": round(result.events_with_effects / result.events, 4),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
