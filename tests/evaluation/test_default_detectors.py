"""Issue 6's evaluation, run on every CI: the default detector set (rules/packs/anomaly) on 30
simulated days of 50 tenants, with a seed drawn fresh each run and never used for tuning.

The seed and the issue's goal table are printed (and are in every failure message); to replay
a run: ``SPENDWARDEN_EVAL_SEED=<seed> bash deploy/local.sh test tests/evaluation``. It takes a
few minutes (about 3 million events); ``-m "not evaluation"`` leaves it out of a quick run.

What is asserted: the two goals the default set meets on every seed measured (no alert on
growth or surges; at most one false alert per 10 tenant-weeks), and floors under the other
figures that catch a regression without claiming the goal: recall >= 0.75 (goal 0.9), median
delay <= 30 min for agent loops (measured 3-11) and <= 60 min for misroutes (goal 15 for both;
a misroute is found at its first dear call, so its delay is mostly the wait for that call). docs/detectors.md
("Evaluation") has the measured figures and what limits them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

import spendwarden.rules
from tooling import spendwarden_cli

PACK = Path(spendwarden.rules.__file__).parent / "packs" / "anomaly"
DAYS, TENANTS = 30, 50


@pytest.mark.evaluation
def test_default_detectors_meet_the_issue_goals_on_a_fresh_seed(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("SPENDWARDEN_EVAL_SEED") or secrets.randbelow(1_000_000))
    with capsys.disabled():  # printed whatever the outcome, past pytest's capture
        print(f"\ndetector evaluation: seed {seed} ({DAYS} days x {TENANTS} tenants; "
              f"replay with SPENDWARDEN_EVAL_SEED={seed})", flush=True)
    events, labels, report = tmp_path / "events.jsonl", tmp_path / "labels.json", tmp_path / "report"
    with events.open("wb") as out:
        subprocess.run([spendwarden_cli(), "scenario", "mixed", "--days", str(DAYS), "--tenants", str(TENANTS),
                        "--seed", str(seed), "--labels", str(labels), "--no-progress"],
                       stdout=out, check=True, timeout=1800)
    subprocess.run([spendwarden_cli(), "replay", str(events), "--rules", str(PACK), "--labels", str(labels),
                    "--report", str(report), "--no-progress"], check=True, timeout=3600,
                   stdout=subprocess.DEVNULL)
    events.unlink()  # 1.5 GB
    result = json.loads((report / "evaluation.json").read_text())
    table = (report / "report.md").read_text()
    with capsys.disabled():
        for goal in result["goals"]:
            print(f"  {goal['goal']:<40} {goal['measured']:>8}  {'met' if goal['met'] else 'NOT MET'}", flush=True)
    assert result["seed"] == seed and result["tenants"] == TENANTS and result["days"] >= DAYS
    assert result["detectors"]["all"]["windows"] >= 30, "the scenario must hold its incidents"
    windows = len(json.loads(labels.read_text())["incidents"])  # incidents, growth and surges
    plots = list((report / "plots").glob("*.png"))
    assert len(plots) >= windows and all(f"(plots/{p.name})" in table for p in plots)
    everything = result["detectors"]["all"]
    kinds = everything["kinds"]
    checks = {
        "no alert on growth or surges (goal)": everything["on_growth_surge"] == 0,
        "<= 1 false alert per 10 tenant-weeks (goal)": everything["false_per_10_tenant_weeks"] <= 1.0,
        "recall >= 0.75 (floor; goal 0.9)": everything["recall"] >= 0.75,
        "agent-loop median delay <= 30 min (floor; goal 15)":
            (kinds["agent-loop"]["delay_median_min"] or 1e9) <= 30,
        "misroute median delay <= 60 min (floor; goal 15)": (kinds["misroute"]["delay_median_min"] or 1e9) <= 60,
    }
    failed = [name for name, ok in checks.items() if not ok]
    assert not failed, f"seed {seed}: {failed}\n\n{table}"
