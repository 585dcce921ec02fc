"""The ``spendwarden`` command: demo, replay, rules lint/test, schema and pricebook import.

Every command runs in-process through click's CliRunner; user mistakes must end with exit
code 2 and one ``spendwarden: error:`` line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner, Result

from spendwarden.cli import main

PACKS = Path(__file__).resolve().parents[2] / "rules" / "packs"

RULES = """\
tenants:
  acme: {timezone: America/New_York}
budgets:
  - name: uc-daily
    period: day
    for_each: [tenant_id, use_case_id]
    limit_usd: 10
rules:
  - name: daily-cap
    budget: uc-daily
    when: budget.used_ratio >= 1.0
    decide: {level: block, only_risk_tiers: [low]}
"""


def event(event_id: str, ts: str, cost: str, use_case: str = "cs") -> dict[str, str]:
    return {"cost_event_id": event_id, "ts": ts, "tenant_id": "acme", "use_case_id": use_case,
            "risk_tier": "low", "allocated_cost_usd": cost}


GOOD = [
    event("e1", "2026-11-24T15:00:00Z", "4"),
    event("e2", "2026-11-24T15:01:00Z", "4"),
    event("e3", "2026-11-24T15:02:00Z", "3"),
    event("e4", "2026-11-24T15:03:00Z", "2", use_case="drafting"),
]


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES)
    return folder


@pytest.fixture
def events(tmp_path: Path) -> Path:
    """Four good events, a malformed line (3) and a repeat of e2 (line 5)."""
    lines = [orjson.dumps(GOOD[0]), orjson.dumps(GOOD[1]), b"{not json", orjson.dumps(GOOD[1]),
             orjson.dumps(GOOD[2]), orjson.dumps(GOOD[3])]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def assert_user_error(result: Result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("spendwarden: error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


# ---------------------------------------------------------------- demo

def test_demo_blocks_the_looping_agent_and_lifts_the_block_at_new_york_midnight() -> None:
    """`demo` shows acme/drafting's daily-cap alert, the block, and L0 allow again at 05:00Z."""
    result = run("demo")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"ALERT\s+high\s+daily-cap\s+acme/drafting\s.*-> block", out)
    assert re.search(r"DECISION acme drafting:low -> block \(rule daily-cap", out)
    assert "2026-11-25T05:00:00.000Z  DECISION acme drafting:low -> L0 allow" in out
    assert "2026-11-25T05:00:00.000Z  DECISION acme drafting:medium -> L0 allow" in out
    # the block comes before the lift, and nothing is blocked for high risk
    assert out.index("drafting:low -> block") < out.index("drafting:low -> L0 allow")
    assert ":high -> " not in out


# ---------------------------------------------------------------- replay

def test_replay_json_summary_counts_rejections_and_duplicates(rules: Path, events: Path) -> None:
    """`replay --json` prints one JSON line with exact record, event, rejection, duplicate and effect counts."""
    result = run("replay", str(events), "--rules", str(rules), "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["records"] == 6
    assert summary["events"] == 5  # validated events, the duplicate included
    assert summary["duplicates"] == 1
    assert summary["rejected"] == {"decode": 1}
    assert sum(summary["rejected"].values()) == 1
    assert summary["effects"] == {"decision": 1, "alert_firing": 1}


def test_replay_summary_table_is_the_default_output(rules: Path, events: Path) -> None:
    """Without --json, replay prints the rule-set version and the summary table with counters."""
    result = run("replay", str(events), "--rules", str(rules), "--no-progress")
    assert result.exit_code == 0, result.output
    assert re.search(r"events counted\s+4\b", result.stdout)
    assert re.search(r"duplicates\s+1\b", result.stdout)
    assert re.search(r"uc-daily\s+acme/cs\s+2026-11-24\s+\$11\.00", result.stdout)


def test_replay_out_writes_decisions_alerts_and_dead_letters(rules: Path, events: Path, tmp_path: Path) -> None:
    """`replay --out DIR` writes one JSONL file per effect kind; dead letters carry reason, detail and line."""
    out = tmp_path / "out"
    result = run("replay", str(events), "--rules", str(rules), "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output

    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert [(d["tenant_id"], d["field"], d["verdict"]["level"]) for d in decisions] == [("acme", "cs:low", "block")]

    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert [(a["kind"], a["rule"], a["scope"]) for a in alerts] == [
        ("alert_firing", "daily-cap", {"tenant_id": "acme", "use_case_id": "cs"})]
    assert alerts[0]["spend_usd"] == "11"

    dead = [json.loads(line) for line in (out / "dead-letter.jsonl").read_text().splitlines()]
    assert len(dead) == 1
    assert dead[0]["reason"] == "decode"
    assert dead[0]["detail"].startswith("not UTF-8 JSON")
    assert dead[0]["source"] == {"line": 3}
    assert dead[0]["raw"] == "{not json"


def test_csv_replays_to_the_same_totals_as_jsonl(rules: Path, tmp_path: Path) -> None:
    """A CSV of the same events gives the same counts and per-budget totals as the JSONL file."""
    records = [*GOOD, GOOD[1], dict(GOOD[0], cost_event_id="e5", input_tokens=12)]
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    header = ["cost_event_id", "ts", "tenant_id", "use_case_id", "risk_tier", "allocated_cost_usd", "input_tokens"]
    rows = [",".join(header)] + [",".join(str(r.get(name, "")) for name in header) for r in records]
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("\n".join(rows) + "\n")

    summaries = []
    for path in (jsonl, csv_path):
        result = run("replay", str(path), "--rules", str(rules), "--json", "--no-progress")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        summaries.append({k: v for k, v in summary.items() if k not in ("elapsed_s", "events_per_s")})
    assert summaries[0] == summaries[1]
    assert summaries[0]["records"] == 6 and summaries[0]["duplicates"] == 1
    assert summaries[0]["effects"] == {"decision": 1, "alert_firing": 1}

    def totals(path: Path) -> list[str]:
        result = run("replay", str(path), "--rules", str(rules), "--no-progress")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        return lines[next(i for i, line in enumerate(lines) if line.startswith("budget ")):]

    assert totals(jsonl) == totals(csv_path)
    assert any(re.match(r"uc-daily\s+acme/cs\s+2026-11-24\s+\$15\.00$", line) for line in totals(csv_path))


# ---------------------------------------------------------------- user mistakes

def test_missing_events_file_is_a_one_line_error(rules: Path, tmp_path: Path) -> None:
    """A missing events file exits 2 with one error line naming the file."""
    missing = tmp_path / "nope.jsonl"
    assert_user_error(run("replay", str(missing), "--rules", str(rules)), "nope.jsonl")


def test_missing_rules_directory_is_a_one_line_error(events: Path, tmp_path: Path) -> None:
    """A missing --rules directory exits 2 with one error line naming it."""
    assert_user_error(run("replay", str(events), "--rules", str(tmp_path / "no-rules")), "no-rules")


def test_bad_advance_to_is_a_one_line_error(rules: Path, events: Path) -> None:
    """An --advance-to that is not ISO 8601 exits 2 with one error line quoting the value."""
    result = run("replay", str(events), "--rules", str(rules), "--advance-to", "tomorrow", "--no-progress")
    assert_user_error(result, "--advance-to", "'tomorrow'")


def test_broken_rules_file_is_a_one_line_error_with_its_position(events: Path, tmp_path: Path) -> None:
    """A rule file with a bad value exits 2 with one error line giving file:line:column and the field."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES.replace("period: day", "period: fortnight"))
    result = run("replay", str(events), "--rules", str(folder), "--no-progress")
    assert_user_error(result, "rules.yaml:5:13:", "budgets.0.period", "'fortnight'")


# ---------------------------------------------------------------- rules lint / test

def test_rules_lint_reports_file_and_line_of_a_broken_file(tmp_path: Path) -> None:
    """`rules lint` exits 1 and prints file:line: error: for a file that does not load."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES.replace("when: budget.used_ratio >= 1.0", "when: budget.used >= 1.0"))
    result = run("rules", "lint", str(folder))
    assert result.exit_code == 1, result.output
    path = str(folder / "rules.yaml")
    assert re.search(rf"^{re.escape(path)}:11: error: rules\.0\.when: budget\.used is not a known field",
                     result.stdout, re.M)


@pytest.mark.parametrize("pack", ["ladder", "playbook", "tiers"])
def test_rules_lint_passes_a_shipped_pack(pack: str) -> None:
    """`rules lint` exits 0 on each shipped pack and says ok on stderr."""
    result = run("rules", "lint", str(PACKS / pack))
    assert result.exit_code == 0, result.output
    assert " error: " not in result.stdout
    assert result.stderr.startswith(f"ok: {PACKS / pack}")


def test_rules_test_runs_every_pack_test() -> None:
    """`rules test rules/packs` runs every case of every pack and reports them all passed."""
    expected = sum(len(yaml.safe_load(path.read_text())["tests"]) for path in PACKS.glob("*/tests/*.test.yaml"))
    assert expected > 0
    result = run("rules", "test", str(PACKS))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == f"{expected} passed, 0 failed"
    assert "FAIL" not in result.stdout


def test_rules_test_exits_1_when_a_rule_test_fails(rules: Path) -> None:
    """`rules test` prints FAIL with the problem and exits 1 when an expectation does not hold."""
    (rules / "tests").mkdir()
    (rules / "tests" / "cap.test.yaml").write_text(textwrap.dedent("""\
        tests:
          - name: cap blocks low risk
            events:
              - {ts: "2026-11-24T15:00:00Z", tenant_id: acme, use_case_id: cs, risk_tier: low, allocated_cost_usd: 11}
            expect_decisions:
              acme: {"cs:low": block}
          - name: wrong expectation
            events:
              - {ts: "2026-11-24T15:00:00Z", tenant_id: acme, use_case_id: cs, risk_tier: low, allocated_cost_usd: 5}
            expect_firing:
              - {rule: daily-cap}
        """))
    result = run("rules", "test", str(rules))
    assert result.exit_code == 1, result.output
    assert "PASS" in result.stdout and "cap blocks low risk" in result.stdout
    assert re.search(r"FAIL .*cap\.test\.yaml: wrong expectation", result.stdout)
    assert "expected firing daily-cap {} but it is not firing" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "1 passed, 1 failed"


# ---------------------------------------------------------------- schema, pricebook

def test_schema_cost_event_prints_json_schema() -> None:
    """`schema cost-event` prints the JSON Schema with cost_event_id, ts and tenant_id required."""
    result = run("schema", "cost-event")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "cost_event_id" in schema["required"]
    assert {"ts", "tenant_id"} <= set(schema["required"])
    assert "allocated_cost_usd" in schema["properties"]


def test_pricebook_import_litellm_prints_per_mtok_prices(tmp_path: Path) -> None:
    """`pricebook import-litellm` turns per-token LiteLLM prices into pricebook YAML per million tokens."""
    source = tmp_path / "prices.json"
    source.write_text(json.dumps({
        "sample_spec": {"input_cost_per_token": 0.0},
        "gpt-x": {"litellm_provider": "openai", "input_cost_per_token": 2.5e-06,
                  "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-06},
        "embedder-without-prices": {"litellm_provider": "openai", "mode": "embedding"},
    }))
    result = run("pricebook", "import-litellm", str(source), "--version", "v1",
                 "--effective-from", "2026-01-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    book = yaml.safe_load(result.stdout)
    (version,) = book["versions"]
    assert version["version"] == "v1"
    assert version["prices"] == [{"provider": "openai", "model": "gpt-x", "input_per_mtok": 2.5,
                                  "output_per_mtok": 10, "cached_per_mtok": 1.25}]
