"""The Prometheus rules in deploy/prometheus: valid, unit-tested both ways, documented, and on real metrics.

- ``promtool check rules``, ``promtool check config`` (the example) and ``promtool test rules``
  pass. Without promtool on PATH these skip, unless SPENDWARDEN_TEST_REQUIRE_PROMETHEUS=1
  (CI installs the Debian ``prometheus`` package and sets it), where they fail.
- Every alert has at least one promtool case where it fires and one where it must stay quiet,
  and every recording rule a case with exact expected values: deleting a case fails here.
- Every alert has a severity, a summary, a description and a runbook_url whose anchor is the
  alert name in lowercase (the heading of that alert in docs/operations.md).
- Every metric an expression reads is one the worker or the router exports
  (``metric_catalog.exported_series()``) or a recording rule of the same file. Metric names are
  read with promql-parser, the Python binding of the Rust ``promql-parser`` crate: a real PromQL
  parser, so label names, function names, keywords (``by``, ``on``, ``offset``) and strings in
  matchers are never taken for metric names, as a regular expression could.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "spendwarden.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "spendwarden.rules.test.yml"
EXAMPLE_CONFIG = PROMETHEUS / "prometheus.example.yml"
RUNBOOK = "https://github.com/spendwarden/spendwarden/blob/main/docs/operations.md#"
SEVERITIES = {"info", "warning", "critical"}

# Other files (dashboards, docs) use these names: they are a contract, not a detail.
CONTRACT_RECORDING_RULES = {
    "tenant:token_cost_usd:rate5m",
    "tenant_model:token_cost_usd:rate5m",
    "tenant:token_cost_usd:increase1h",
    "spendwarden:token_cost_usd:increase1h",
    "tenant:token_cost_usd:increase1d",
    "spendwarden:token_cost_usd:increase1d",
    "tenant_model_type:token_usage:rate5m",
}


def _rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _recordings() -> dict[str, dict]:
    return {rule["record"]: rule for rule in _rules() if "record" in rule}


def _unit_tests() -> dict:
    return yaml.safe_load(RULE_TESTS.read_text())


def _promtool() -> str:
    return require_tool("promtool", "SPENDWARDEN_TEST_REQUIRE_PROMETHEUS", "prometheus")


@pytest.mark.parametrize("args", [
    ["check", "rules", RULES],
    ["check", "config", EXAMPLE_CONFIG],
    ["test", "rules", RULE_TESTS],
], ids=["check-rules", "check-example-config", "test-rules"])
def test_promtool(args: list) -> None:
    done = subprocess.run([_promtool(), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"


def test_unit_tests_load_the_rules_file() -> None:
    files = [(RULE_TESTS.parent / f).resolve() for f in _unit_tests()["rule_files"]]
    assert files == [RULES.resolve()]


def test_every_alert_fires_and_stays_quiet_in_a_case() -> None:
    alerts = _alerts()
    firing: dict[str, int] = {name: 0 for name in alerts}
    quiet: dict[str, int] = {name: 0 for name in alerts}
    for case in _unit_tests()["tests"]:
        for check in case.get("alert_rule_test") or []:
            name = check["alertname"]
            # promtool passes a quiet case of an alert that does not exist: it finds no alert.
            assert name in alerts, f"test {case['name']!r} checks {name}, which the rules file lacks"
            if check.get("exp_alerts"):
                firing[name] += 1
                for expected in check["exp_alerts"]:
                    assert expected["exp_labels"]["severity"] == alerts[name]["labels"]["severity"]
            else:
                quiet[name] += 1
    assert [name for name, n in firing.items() if n == 0] == [], "alerts with no case where they fire"
    assert [name for name, n in quiet.items() if n == 0] == [], "alerts with no case where they stay quiet"


def test_every_recording_rule_has_exact_values_in_a_case() -> None:
    recordings = _recordings()
    assert CONTRACT_RECORDING_RULES <= recordings.keys(), "a recording rule of the metric contract is missing"
    tested = {check["expr"].strip() for case in _unit_tests()["tests"]
              for check in case.get("promql_expr_test") or [] if check.get("exp_samples")}
    assert sorted(recordings.keys() - tested) == [], "recording rules with no promql_expr_test"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    alerts = _alerts()
    assert alerts, "no alerts in the rules file"
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        assert annotations.get("summary", "").strip(), name
        assert annotations.get("description", "").strip(), name
        assert annotations.get("runbook_url") == RUNBOOK + name.lower(), name


def test_every_runbook_link_lands_on_a_section_of_the_operations_guide() -> None:
    """The anchor GitHub makes of ``### <AlertName>`` is the name in lower case."""
    headings = {line[4:].strip() for line in (ROOT / "docs" / "operations.md").read_text().splitlines()
                if line.startswith("### ")}
    missing = sorted(set(_alerts()) - headings)
    assert not missing, f"docs/operations.md has no '### <name>' section for {missing}"


def _metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (vector and range selectors, subqueries included)."""
    import promql_parser

    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            by_label = [m for m in node.matchers.matchers if m.name == "__name__"]
            assert all(m.op == promql_parser.MatchOp.Equal for m in by_label), \
                f"a metric name matched by pattern cannot be checked: {expr}"
            names.update([node.name] if node.name else [m.value for m in by_label])
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_metric_names_parser_reads_selectors_only() -> None:
    expr = ('sum by (tenant) (rate(a_total{job="b_total"}[5m])) > 3 * (c offset 1h) and on (instance) '
            'absent(d) or label_replace(e, "f", "g", "", "") or {__name__="h"} or max_over_time(i[1h:5m])')
    assert _metric_names(expr) == {"a_total", "c", "d", "e", "h", "i"}


def test_rules_read_only_exported_metrics_and_recording_rules() -> None:
    from spendwarden.streams.metric_catalog import exported_series

    known = exported_series() | _recordings().keys()
    unknown = {}
    for rule in _rules():
        missing = _metric_names(rule["expr"]) - known
        if missing:
            unknown[rule.get("alert") or rule.get("record")] = sorted(missing)
    assert unknown == {}, "rules read series that neither the service exports nor a rule records"
