"""The Grafana dashboard (deploy/grafana) is well formed and every query would run.

- Every panel (rows and panels nested in collapsed rows included) has an id, a title, a
  description, the templated ``${datasource}`` and at least one target; ids are unique and no two
  panels overlap on the grid.
- Every query is valid PromQL as Prometheus itself parses it: Grafana's variables are replaced
  by values of the right kind (``$__rate_interval`` → ``5m``, ``$tenant`` → ``.*`` …) and each
  expression becomes a recording rule of a temporary file checked by ``promtool check rules``.
  promtool is the Debian ``prometheus`` package; without it the test is skipped, unless
  ``SPENDWARDEN_TEST_REQUIRE_PROMETHEUS=1`` (CI installs the package and sets it) makes that a
  failure.
- Every series a query reads is exported by the worker or the router
  (``spendwarden.streams.metric_catalog.exported_series()``) or is recorded by
  ``deploy/prometheus/rules/spendwarden.rules.yml``. Metric names are taken from the syntax tree
  of ``promql-parser`` (Python binding of the Rust promql-parser, a test dependency) rather than
  a regex: a regex cannot tell a metric from a label name in ``by (...)``, a function name, a
  keyword or text inside a quoted label value without re-implementing the grammar.
- The provisioning files point Grafana at the folder the dashboards are mounted in and at a
  Prometheus data source whose uid is the dashboard's default.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tooling import require_tool

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "spendwarden.json"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "spendwarden.yaml"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "spendwarden.rules.yml"
# Where compose mounts deploy/grafana/dashboards inside the Grafana container.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# Grafana's built-in variables, replaced by values of the same kind (a duration, a number).
BUILTINS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1d",
    "__interval_ms": "60000", "__range_s": "86400", "__range_ms": "86400000",
}
# $name, ${name}, ${name:format} and the deprecated [[name]] / [[name:format]].
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
# Grafana's label_values(metric_selector, label) variable query: only the selector is PromQL.
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*\w+\s*\)\s*$", re.DOTALL)
# A range in brackets: [5m], [$__rate_interval], [1h:5m] (subquery).
RANGE = re.compile(r"\[([^\]]+)\]")


@dataclass(frozen=True)
class Query:
    where: str  # "panel 2 'Spend rate per tenant', target A" or "variable model"
    expr: str  # as written in the dashboard
    promql: str  # with Grafana's variables replaced


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those a row holds (a collapsed row keeps its panels in its own list)."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def variable_names(dashboard: dict[str, Any]) -> set[str]:
    return {v["name"] for v in dashboard["templating"]["list"]}


def substitute(expr: str, variables: set[str], where: str) -> str:
    """Replace Grafana variables: durations by durations, dashboard variables by ``.*``.

    Dashboard variables are only meant for label matchers (``tenant=~"$tenant"``), where ``.*``
    is valid; one used anywhere else becomes ``.*`` in the middle of PromQL and fails to parse.
    """

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name in BUILTINS:
            return BUILTINS[name]
        assert name in variables, f"{where}: ${name} is neither a Grafana built-in nor a dashboard variable"
        return ".*"

    return VARIABLE.sub(value, expr)


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Each target expression of each panel, and each query variable's PromQL."""
    names = variable_names(dashboard)
    queries = []
    for panel in walk_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r}, target {target.get('refId')}"
            expr = target.get("expr", "")
            queries.append(Query(where, expr, substitute(expr, names, where)))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        definition = variable["definition"]
        found = LABEL_VALUES.match(definition)
        expr = found.group("selector") if found else definition
        where = f"variable {variable['name']}"
        queries.append(Query(where, expr, substitute(expr, names, where)))
    return queries


# ----------------------------------------------------------------------------- structure

def test_walk_panels_finds_panels_inside_collapsed_rows() -> None:
    # The real dashboard keeps its rows open; a collapsed row must still not hide a panel.
    panels = [{"id": 1, "type": "row", "collapsed": True, "panels": [{"id": 2}, {"id": 3}]}, {"id": 4}]
    assert [p["id"] for p in walk_panels(panels)] == [1, 2, 3, 4]


def test_every_panel_is_complete() -> None:
    dashboard = load_dashboard()
    panels = list(walk_panels(dashboard["panels"]))
    problems = []
    ids = [p.get("id") for p in panels]
    duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if duplicates or None in ids:
        problems.append(f"panel ids must be present and unique: duplicates {duplicates}")
    for panel in panels:
        name = f"panel {panel.get('id')} {panel.get('title')!r}"
        if not panel.get("title"):
            problems.append(f"{name}: no title")
        if panel.get("type") == "row":
            continue
        if not panel.get("description"):
            problems.append(f"{name}: no description")
        if panel.get("datasource") != DATASOURCE_REF:
            problems.append(f"{name}: datasource {panel.get('datasource')!r}, not {DATASOURCE_REF}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{name}: no target")
        for target in targets:
            if not target.get("expr", "").strip():
                problems.append(f"{name}, target {target.get('refId')}: empty expr")
            if target.get("datasource", DATASOURCE_REF) != DATASOURCE_REF:
                problems.append(f"{name}, target {target.get('refId')}: datasource {target['datasource']!r}")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"{name}: refIds must be present and unique, got {ref_ids}")
    assert not problems, "\n".join(problems)


def test_panels_fit_the_grid_without_overlapping() -> None:
    placed: list[tuple[str, set[tuple[int, int]]]] = []
    problems = []
    for panel in walk_panels(load_dashboard()["panels"]):
        name = f"panel {panel['id']} {panel['title']!r}"
        grid = panel["gridPos"]
        if grid["x"] < 0 or grid["w"] <= 0 or grid["h"] <= 0 or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: gridPos {grid} outside the 24 columns")
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        problems += [f"{name} overlaps {other}" for other, taken in placed if cells & taken]
        placed.append((name, cells))
    assert not problems, "\n".join(problems)


def test_template_variables() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert tenant["type"] == "query"
    assert tenant["datasource"] == DATASOURCE_REF
    assert tenant["definition"] == "label_values(token_cost_total_usd, tenant)"
    assert tenant["multi"] and tenant["includeAll"]


def test_multi_value_variables_are_only_used_in_regex_matchers() -> None:
    # Grafana expands a multi-value or All selection to a regex (a|b or .*): with = instead of =~
    # the panel silently shows nothing as soon as two tenants are selected.
    dashboard = load_dashboard()
    multi = {v["name"] for v in dashboard["templating"]["list"] if v.get("multi") or v.get("includeAll")}
    problems = []
    for query in dashboard_queries(dashboard):
        for match in VARIABLE.finditer(query.expr):
            name = next(g for g in match.groups() if g)
            if name in multi and not re.search(r'=~\s*"[^"]*$', query.expr[:match.start()]):
                problems.append(f"{query.where}: ${name} outside a =~\"...\" matcher in {query.expr}")
    assert not problems, "\n".join(problems)


def test_ranges_follow_the_dashboard() -> None:
    # A hard-coded [5m] breaks when the scrape interval changes (too few samples) and ignores
    # zooming; $__rate_interval is sized by Grafana from the data source's scrape interval.
    allowed = {"$__rate_interval", "$__range", "${__rate_interval}", "${__range}"}
    problems = [f"{q.where}: range [{r}] in {q.expr}" for q in dashboard_queries(load_dashboard())
                for r in RANGE.findall(q.expr) if r not in allowed]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- PromQL

@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "SPENDWARDEN_TEST_REQUIRE_PROMETHEUS", "prometheus")


def test_every_expression_parses_with_promtool(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries(load_dashboard())
    assert len(queries) > 20, "the dashboard lost its panels"
    # One recording rule per expression: promtool parses each one exactly as Prometheus would
    # and reports every failure with the rule name, which maps back to the panel.
    rules = [{"record": f"dashboard:check:{n}", "expr": q.promql} for n, q in enumerate(queries)]
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]},
                                         sort_keys=False))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], check=False, capture_output=True,
                            text=True)
    output = result.stdout + result.stderr
    failed = sorted({int(n) for n in re.findall(r"dashboard:check:(\d+)", output)})
    details = "\n".join(f"  {queries[n].where}: {queries[n].promql}" for n in failed)
    assert result.returncode == 0, f"promtool refused these queries:\n{details}\n\n{output}"


def metric_names(promql: str) -> set[str]:
    """Names of the series an expression selects, from its syntax tree."""
    try:
        import promql_parser
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("promql-parser is missing: it is part of the test extra (pip install -e '.[test]')")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    # {__name__=~"..."} could select anything: say so instead of guessing.
                    assert matcher.op == promql_parser.MatchOp.Equal, f"cannot check {matcher} in {promql}"
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(promql), visit)
    return names


def recorded_series() -> set[str]:
    assert RULES.exists(), f"{RULES.relative_to(ROOT)} is missing: the dashboard uses its recording rules"
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_metric_name_extraction() -> None:
    # Label names, function names, keywords and quoted values are not metrics.
    expr = ('sum by (tenant) (rate(a_total{model=~"b_total|c"}[5m])) / on (tenant) group_left '
            'count_values("level", d) + time() - {__name__="e_seconds"} or vector(0)')
    assert metric_names(expr) == {"a_total", "d", "e_seconds"}


def test_every_metric_is_exported_or_recorded() -> None:
    from spendwarden.streams.metric_catalog import exported_series

    known = exported_series() | recorded_series()
    problems = []
    for query in dashboard_queries(load_dashboard()):
        try:
            unknown = metric_names(query.promql) - known
        except ValueError as exc:  # a syntax error: report it with the others, promtool's test says more
            problems.append(f"{query.where}: does not parse ({exc}): {query.expr}")
            continue
        if unknown:
            problems.append(f"{query.where}: {sorted(unknown)} in {query.expr}")
    assert not problems, "series neither exported nor recorded:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- provisioning

def test_dashboard_provider_loads_the_mounted_folder() -> None:
    providers = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_MOUNT


def test_datasource_is_the_dashboards_default() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    prometheus = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    source = prometheus[0]
    assert source["url"] == "http://prometheus:9090"
    variable = next(v for v in load_dashboard()["templating"]["list"] if v["name"] == "datasource")
    # The variable lists data sources of this type and starts on the provisioned one.
    assert variable["query"] == source["type"]
    assert variable["current"]["value"] == source["uid"] == "prometheus"
