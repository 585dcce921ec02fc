"""What a scrape of the worker's /metrics costs at a given number of spend series.

    .venv/bin/python bench/metrics.py [--tenants 1000] [--use-cases 10] [--models 5] [--rounds 3]
        [--extra-state-keys 1000000]

An engine counts one event per (tenant, use case, model), so the spend series exist as they would
after a day of traffic (``--extra-state-keys`` pads the state with inert keys, as a week of
dedupe ids and hourly history would: the snapshot scans every key), then a scrape is measured in its two parts (docs/metrics.md):

  snapshot     SpendMetrics.snapshot(): what runs on the event loop (reads the engine state)
  scrape       generate_latest of the registry with the frozen snapshot: label folding, samples
               and text formatting, which the worker runs in a thread
  baseline     generate_latest of a plain prometheus-client registry holding the same series as
               labelled Counter/Gauge children (what per-event counters would cost to render)

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest  # noqa: E402

from spendwarden.rules.compiler import RuleSet  # noqa: E402
from spendwarden.rules.loader import load_ruleset  # noqa: E402
from spendwarden.streams.checkpoint import DirtyState  # noqa: E402
from spendwarden.streams.engine import Engine, position  # noqa: E402
from spendwarden.streams.events import CostEvent, PricedEvent  # noqa: E402
from spendwarden.streams.money import usd_to_nanos  # noqa: E402
from spendwarden.streams.spend_metrics import SpendMetrics  # noqa: E402

RULES = """
budgets:
  - {name: uc-day, for_each: [tenant_id, use_case_id], period: day, limit_usd: 100}
  - {name: tenant-month, for_each: [tenant_id], period: month, limit_usd: 1000}
"""
T0 = 1_767_222_000.0


def build(tenants: int, use_cases: int, models: int, rules: RuleSet) -> Engine:
    engine = Engine(rules, DirtyState())
    n = 0
    for t in range(tenants):
        for u in range(use_cases):
            for m in range(models):
                n += 1
                event = CostEvent(cost_event_id=f"e{n}", ts=datetime.fromtimestamp(T0 + n * 0.01, timezone.utc),
                                  tenant_id=f"t{t}", use_case_id=f"uc{u}", model_or_service=f"m{m}",
                                  input_tokens=100, output_tokens=10, allocated_cost_usd=Decimal("0.01"))
                engine.process(PricedEvent(event, usd_to_nanos(Decimal("0.01"))), position(n))
    return engine


def baseline_registry(metrics: SpendMetrics) -> CollectorRegistry:
    """The same series as plain labelled children, values copied from one render."""
    registry = CollectorRegistry()
    families = {f.name: f for f in metrics.collect()}
    plain: dict[str, Counter | Gauge] = {}
    for name, family in families.items():
        for sample in family.samples:
            metric = plain.get(sample.name)
            if metric is None:
                kind = Counter if family.type == "counter" else Gauge
                metric = plain[sample.name] = kind(sample.name.removesuffix("_total") if kind is Counter
                                                   else sample.name, "baseline", list(sample.labels),
                                                   registry=registry)
            child = metric.labels(**sample.labels)
            child.inc(sample.value) if isinstance(metric, Counter) else child.set(sample.value)
    return registry


def timed(call, rounds: int) -> float:  # type: ignore[no-untyped-def]
    found = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        found.append(time.perf_counter() - started)
    return statistics.median(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--use-cases", type=int, default=10)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--extra-state-keys", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "rules.yaml").write_text(RULES)
        rules = load_ruleset(folder)
    print(f"building {args.tenants * args.use_cases * args.models:,} (tenant, use case, model) rows ...",
          file=sys.stderr, flush=True)
    engine = build(args.tenants, args.use_cases, args.models, rules)
    for i in range(args.extra_state_keys):
        engine.state[("pad", i)] = i
    metrics = SpendMetrics(lambda: {0: engine}, max_tenants=args.tenants, clock=lambda: T0 + 3600)
    metrics.restored(0, engine.state.items())
    registry = CollectorRegistry()
    registry.register(metrics)
    body = generate_latest(registry)
    lines = body.count(b"\n")

    def frozen_scrape() -> None:
        with metrics.frozen():
            generate_latest(registry)

    snapshot_s = timed(metrics.snapshot, args.rounds)
    scrape_s = timed(frozen_scrape, args.rounds)
    plain = baseline_registry(metrics)
    baseline_s = timed(lambda: generate_latest(plain), args.rounds)

    print(f"{'part':<48}{'seconds':>10}")
    print(f"{'snapshot (on the event loop)':<48}{snapshot_s:>10.3f}")
    print(f"{'scrape: snapshot + render (render in a thread)':<48}{scrape_s:>10.3f}")
    print(f"{'baseline: plain prometheus-client, same series':<48}{baseline_s:>10.3f}")
    print(f"{lines:,} lines, {len(body) / 1e6:.1f} MB per scrape; state keys {len(engine.state):,}")
    print(json.dumps({"series_lines": lines, "snapshot_s": round(snapshot_s, 4), "scrape_s": round(scrape_s, 4),
                      "baseline_s": round(baseline_s, 4), "ratio": round(scrape_s / baseline_s, 3)}))


if __name__ == "__main__":
    main()
