"""What unit.* costs: replay of a scenario with outcomes and traced use cases, the outcomes pack
against the playbook pack (budgets only), against a parse-only loop measured in the same run.

    .venv/bin/python bench/unit_economics.py [--days 3] [--tenants 20] [--seed 7]

Generates traffic with ``spendwarden scenario quiet --outcomes --traced-share 0.2`` (every
trace ends with an outcome record; a fifth of the use cases also arrive as ``origin: trace``
copies), then measures:

  parse-only       for line in file: orjson.loads(line)                  (the ceiling)
  ingest-only      Ingest.parse_items: decode + validate + price, outcomes too
  playbook pack    replay with rules/packs/playbook (budgets, no unit.*)
  outcomes pack    replay with rules/packs/outcomes (every rule reads unit.*)

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spendwarden.replay.readers import open_events
from spendwarden.replay.run import NullSink, replay
from spendwarden.rules.loader import load_ruleset
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

PACKS = Path(__file__).resolve().parent.parent / "rules" / "packs"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import time_ingest_only, time_parse_only  # noqa: E402 - the same baselines as the engine bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    spendwarden = str(Path(sys.executable).with_name("spendwarden"))
    ingest = Ingest(Pricebook.default())
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "events.jsonl")
        started = time.perf_counter()
        with open(path, "wb") as out:
            subprocess.run([spendwarden, "scenario", "quiet", "--days", str(args.days), "--tenants", str(args.tenants),
                            "--seed", str(args.seed), "--outcomes", "--traced-share", "0.2", "--no-progress",
                            "--labels", os.path.join(folder, "labels.json")],
                           stdout=out, check=True)
        print(f"generated in {time.perf_counter() - started:.1f}s ({os.path.getsize(path) / 1e6:.0f} MB)",
              file=sys.stderr)
        records, parse_s = time_parse_only(path)
        gc.collect()
        items, ingest_s = time_ingest_only(path, ingest)
        runs = {}
        for pack in ("playbook", "outcomes"):
            gc.collect()
            runs[pack] = replay(open_events(path), load_ruleset(PACKS / pack), ingest, NullSink())
    base, unit = runs["playbook"], runs["outcomes"]
    rows = [("parse-only (orjson.loads)", records, parse_s), ("ingest-only (parse_items)", items, ingest_s),
            ("replay, playbook pack", base.events + base.outcomes, base.elapsed_s),
            ("replay, outcomes pack", unit.events + unit.outcomes, unit.elapsed_s)]
    print(f"\n{'stage':<28} {'records':>10} {'seconds':>9} {'records/s':>11} {'us/record':>10}")
    for name, count, seconds in rows:
        print(f"{name:<28} {count:>10,} {seconds:>9.2f} {count / seconds:>11,.0f} {seconds / count * 1e6:>10.2f}")
    assert unit.engine is not None
    stats = unit.engine.stats
    print(f"\n{unit.events:,} cost events, {unit.outcomes:,} outcomes ({stats.outcome_duplicates:,} duplicates); "
          f"outcomes pack: {stats.alerts_fired:,} alerts, {stats.cel_evaluations:,} CEL evaluations")
    unit_rate = (unit.events + unit.outcomes) / unit.elapsed_s
    base_rate = (base.events + base.outcomes) / base.elapsed_s
    print(json.dumps({
        "events": unit.events, "outcomes": unit.outcomes,
        "parse_only_records_per_s": round(records / parse_s),
        "playbook_records_per_s": round(base_rate),
        "outcomes_pack_records_per_s": round(unit_rate),
        "ratio": round(unit_rate / base_rate, 3),
        "alerts_fired": stats.alerts_fired,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
