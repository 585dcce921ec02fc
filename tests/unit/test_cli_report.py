"""``spendwarden replay --labels/--report/--sweep/--compare`` on a crafted file (no warm-up needed:
the rules are budget rules labelled as detectors, so they fire on the first dollars)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from spendwarden.cli import main

RULES = """\
tenants:
  acme: {timezone: America/New_York}
budgets:
  - {name: uc-daily, period: day, for_each: [tenant_id, use_case_id], limit_usd: 10}
rules:
  - name: big
    budget: uc-daily
    when: budget.used_ratio >= THRESHOLD
    labels: {detector: crafted}
  - name: cap
    budget: uc-daily
    when: budget.used_ratio >= 5.0
"""


def event(n: int, minute: int, cost: str, use_case: str = "cs") -> dict[str, str]:
    return {"cost_event_id": f"e{n}", "ts": f"2026-11-24T15:{minute:02d}:00Z", "tenant_id": "acme",
            "use_case_id": use_case, "risk_tier": "low", "allocated_cost_usd": cost}


def labels_file(path: Path) -> Path:
    path.write_text(json.dumps({
        "seed": 5, "scenario": "crafted", "start": "2026-11-10T00:00:00Z", "end": "2026-11-25T00:00:00Z",
        "warmup_end": "2026-11-24T00:00:00Z", "tenants": [{"tenant_id": "acme"}, {"tenant_id": "globex"}],
        "incidents": [
            {"id": "agent-loop-01", "kind": "agent-loop", "tenant_id": "acme", "use_case_id": "cs",
             "workflow_step": "draft", "start": "2026-11-24T15:00:00Z", "end": "2026-11-24T15:30:00Z",
             "is_incident": True},
            {"id": "surge-01", "kind": "surge", "tenant_id": "globex", "use_case_id": "cs",
             "start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z", "is_incident": False},
        ]}))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    events = [event(1, 0, "4"), event(2, 1, "4"), event(3, 2, "3"), event(4, 3, "8", use_case="drafting")]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    for name, threshold in (("rules", "0.5"), ("rules-new", "0.9")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rules.yaml").write_text(RULES.replace("THRESHOLD", threshold))
    return {"events": tmp_path / "events.jsonl", "rules": tmp_path / "rules", "new": tmp_path / "rules-new",
            "labels": labels_file(tmp_path / "labels.json"), "out": tmp_path / "out"}


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_report_writes_markdown_and_json_and_prints_the_table(files: dict[str, Path]) -> None:
    result = run("replay", files["events"], "--rules", files["rules"], "--labels", files["labels"],
                 "--report", files["out"], "--no-progress")
    assert result.exit_code == 0, result.output
    # big fires at 15:01 on cs (the loop: delay 1 min) and at 15:03 on drafting (a false alert)
    assert "| crafted  | 2      | 0.50      | 1/1      | 1.00   | 1 " in result.stdout
    assert "crafted seed 5: 15 days, 2 tenants" in result.stdout
    data = json.loads((files["out"] / "evaluation.json").read_text())
    all_ = data["detectors"]["all"]
    assert (all_["recall"], all_["false_alerts"], all_["on_growth_surge"], all_["delay_median_min"]) == (1.0, 1, 0, 1.0)
    assert data["tenant_weeks"] == pytest.approx(2 / 7, abs=1e-3)
    assert set(data["detectors"]) == {"crafted", "all"}  # cap is a budget rule: not counted
    assert data["seed"] == 5
    assert data["command"] == (f"spendwarden replay {files['events']} --rules {files['rules']} --labels "
                               f"{files['labels']} --report {files['out']}")
    report = (files["out"] / "report.md").read_text()
    assert "# Detector evaluation: crafted seed 5" in report
    assert "| agent-loop" in report and "surge (not an incident)" in report
    assert "acme/drafting" in report  # the false alert is listed
    assert data["command"] in report
    # a plot per labelled window and per false alert, linked from the report
    plots = sorted(p.name for p in (files["out"] / "plots").iterdir())
    assert len(plots) == 3 and all((files["out"] / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert [p for p in plots if p.startswith("false-acme-drafting-")]
    for name in plots:
        assert f"(plots/{name})" in report


def test_sweep_prints_one_row_per_value_and_marks_the_frontier(files: dict[str, Path]) -> None:
    result = run("replay", files["events"], "--rules", files["rules"], "--labels", files["labels"],
                 "--sweep", "rule.big:budget.used_ratio=0.5,0.9,2", "--no-progress", "--report", files["out"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0") or line.startswith("| 2")]
    assert len(rows) == 3
    # 0.5 finds the loop a minute earlier, 0.9 without the false alert on drafting: both on the
    # frontier; 2 finds nothing and is beaten by 0.9
    assert [row.rstrip().endswith("| *        |") for row in rows] == [True, True, False]
    data = json.loads((files["out"] / "sweep.json").read_text())
    assert [r["delay_median_min"] for r in data["rows"]] == [1.0, 2.0, None]
    assert [r["false_alerts"] for r in data["rows"]] == [1, 0, 0]
    assert [r["frontier"] for r in data["rows"]] == [True, True, False]
    assert "rule.big:budget.used_ratio=0.5,0.9,2" in (files["out"] / "sweep.md").read_text()


def test_compare_lists_alerts_that_appear_and_vanish(files: dict[str, Path]) -> None:
    result = run("replay", files["events"], "--compare", files["rules"], files["new"], "--labels", files["labels"],
                 "--no-progress")
    assert result.exit_code == 0, result.output
    assert "1 appear, 2 vanish" in result.stdout
    lines = result.stdout.splitlines()
    assert any("vanishes" in line and "2026-11-24T15:01:00Z" in line and "agent-loop-01" in line for line in lines)
    assert any("appears" in line and "2026-11-24T15:02:00Z" in line and "agent-loop-01" in line for line in lines)
    assert any("vanishes" in line and "acme/drafting" in line and "false alert" in line for line in lines)


@pytest.mark.parametrize(("args", "needle"), [
    (["--report", "OUT"], "add --labels"),
    (["--sweep", "rule.big:budget.used_ratio=1"], "add --labels"),
    (["--labels", "LABELS", "--sweep", "spend=1"], "expected detectors.KIND.PARAM"),
    (["--labels", "LABELS", "--sweep", "rule.nope:budget.used_ratio=1"], "no rule named nope"),
    (["--labels", "nowhere.json"], "--labels nowhere.json: no such file"),
    (["--compare", "RULES", "RULES"], "either --rules or --compare"),
])
def test_mistakes_end_with_one_error_line(files: dict[str, Path], args: list[str], needle: str) -> None:
    fill = {"OUT": files["out"], "LABELS": files["labels"], "RULES": files["rules"]}
    result = run("replay", files["events"], "--rules", files["rules"], "--no-progress",
                 *[fill.get(a, a) for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("spendwarden: error: ") and needle in result.stderr, result.stderr


def test_rules_are_required_without_compare(files: dict[str, Path]) -> None:
    result = run("replay", files["events"])
    assert result.exit_code == 2 and "--rules is required" in result.stderr


def test_labels_without_detectors_say_what_to_do(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "rules.yaml").write_text(RULES.replace("    labels: {detector: crafted}\n", "")
                                                   .replace("THRESHOLD", "0.5"))
    result = run("replay", files["events"], "--rules", tmp_path / "plain", "--labels", files["labels"])
    assert result.exit_code == 2 and "nothing to evaluate" in result.stderr
