"""Loading rule files: merged sections, file:line:col errors, lint and the last-good store."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spendwarden.exceptions import ConfigError, RuleFileError
from spendwarden.rules.loader import LintMessage, RuleStore, lint, load_ruleset

TENANTS = """\
tenants:
  defaults:
    tier: standard
  acme:
    timezone: Europe/Paris
    tier: gold
"""

BUDGETS = """\
budgets:
  - name: tenant-daily
    period: day
    for_each: [tenant_id]
    limit_by_tier: {standard: 50, gold: 500}
  - name: low-monthly
    period: month
    scope: {risk_tier: low}
    for_each: [tenant_id]
    limit_usd: 1000
rules:
  - name: daily-80
    budget: tenant-daily
    when: budget.used_ratio >= 0.8
    severity: high
  - name: low-degrade
    budget: low-monthly
    when: budget.used_ratio >= 0.9 && local.hour >= 8
    decide: {level: L1, model_alias: small}
"""

# A per-tenant budget over every risk tier, and a rule on it; line 9 is the `when`.
ONE_RULE = """\
budgets:
  - name: b1
    period: day
    for_each: [tenant_id]
    limit_usd: 5
rules:
  - name: r1
    budget: b1
    when: {when}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path: Path) -> RuleFileError:
    with pytest.raises(RuleFileError) as info:
        load_ruleset(path)
    return info.value


def test_directory_of_two_files_merges_sections(tmp_path: Path) -> None:
    """Tenants from one file and budgets/rules from another merge into one RuleSet."""
    write(tmp_path, "a_tenants.yaml", TENANTS)
    write(tmp_path, "b_budgets.yml", BUDGETS)
    write(tmp_path, "README.md", "not yaml: [")
    ruleset = load_ruleset(tmp_path)
    assert ruleset.files == [str(tmp_path / "a_tenants.yaml"), str(tmp_path / "b_budgets.yml")]
    assert [b.name for b in ruleset.budgets] == ["tenant-daily", "low-monthly"]
    assert [r.name for r in ruleset.rules] == ["daily-80", "low-degrade"]
    assert ruleset.tenant("acme").timezone == "Europe/Paris"
    assert ruleset.tenant("unknown").tier == "standard"
    assert ruleset.budget("low-monthly").rules[0].decide_tiers == ("low",)
    assert ruleset.rules[0].line == 12


def test_subdirectories_are_not_read(tmp_path: Path) -> None:
    """Only YAML files directly inside the directory count; tests/ below is ignored."""
    write(tmp_path, "rules.yaml", BUDGETS)
    write(tmp_path, "tests/case.yaml", "this: [is, broken")
    assert len(load_ruleset(tmp_path).rules) == 2


def test_single_file_loads(tmp_path: Path) -> None:
    """A path to one YAML file loads that file alone."""
    assert len(load_ruleset(write(tmp_path, "rules.yaml", BUDGETS)).budgets) == 2


def test_missing_path_and_empty_directory_are_config_errors(tmp_path: Path) -> None:
    """A missing path or a directory without YAML files is a one-line ConfigError."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_ruleset(tmp_path / "nope")
    write(tmp_path, "notes.txt", "x")
    with pytest.raises(ConfigError, match="no \\*.yaml") as info:
        load_ruleset(tmp_path)
    assert "\n" not in str(info.value)


def test_empty_file_is_an_empty_ruleset(tmp_path: Path) -> None:
    """An empty (or comment-only) file is valid and defines nothing."""
    ruleset = load_ruleset(write(tmp_path, "empty.yaml", "# nothing yet\n"))
    assert ruleset.rules == [] and ruleset.budgets == [] and ruleset.tenants == {}


def test_top_level_list_is_refused_at_line_1(tmp_path: Path) -> None:
    """A file whose top level is not a mapping fails at line 1."""
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    error = load_error(path)
    assert str(error).startswith(f"{path}:1: top level must be a mapping")


def test_bad_cel_syntax_points_at_the_when_value(tmp_path: Path) -> None:
    """A CEL syntax error names the file, the line of the `when` value and a column."""
    path = write(tmp_path, "r.yaml", ONE_RULE.format(when="budget.used_ratio >= )"))
    error = load_error(path)
    assert error.path == str(path) and error.line == 9 and error.column is not None
    assert "rules.0.when: CEL: Syntax error" in error.message
    # Quoted: the quote is column 11, so the `)` (22nd character inside) is column 33.
    path.write_text(ONE_RULE.format(when='"budget.used_ratio >= )"'))
    assert str(load_error(path)).startswith(f"{path}:9:33: rules.0.when: CEL:")


def test_unknown_cel_variable_lists_available_ones(tmp_path: Path) -> None:
    """A `when` using an unknown root variable is refused with the list of variables."""
    path = write(tmp_path, "r.yaml", ONE_RULE.format(when="budget.used_ratio >= 0.5 && foo.bar > 1"))
    error = load_error(path)
    assert str(error).startswith(f"{path}:9:11: rules.0.when: unknown variable 'foo'")
    assert "available: budget, period, local, tenant, scope, window" in error.message


def test_unknown_budget_is_refused(tmp_path: Path) -> None:
    """A rule naming a budget nobody defines points at its `budget` key and lists known ones."""
    text = ONE_RULE.format(when="budget.used_ratio >= 0.5").replace("budget: b1", "budget: b2")
    path = write(tmp_path, "r.yaml", text)
    assert str(load_error(path)) == f"{path}:8:13: rules.0.budget: unknown budget 'b2'; known: b1"


def test_unknown_field_points_at_the_key(tmp_path: Path) -> None:
    """A typo'd field (`limt_usd`) is refused at that key's line and column."""
    text = ONE_RULE.format(when="budget.used_ratio >= 0.5").replace("limit_usd: 5", "limt_usd: 5")
    path = write(tmp_path, "r.yaml", text)
    assert str(load_error(path)) == (
        f"{path}:5:5: budgets.0.limt_usd: Extra inputs are not permitted (got 5)"
    )


def test_bad_timezone_is_refused(tmp_path: Path) -> None:
    """An unknown IANA zone fails at the timezone value with a hint."""
    path = write(tmp_path, "t.yaml", "tenants:\n  acme:\n    timezone: Mars/Olympus\n")
    error = load_error(path)
    assert str(error).startswith(f"{path}:3:15: tenants.acme.timezone: unknown time zone 'Mars/Olympus'")
    assert error.message.endswith("(got 'Mars/Olympus')")


def test_bad_level_lists_allowed_values(tmp_path: Path) -> None:
    """An unknown decide level fails at the level value and lists the allowed levels."""
    text = ONE_RULE.format(when="budget.used_ratio >= 0.5") + "    decide:\n      level: L9\n"
    path = write(tmp_path, "r.yaml", text)
    assert str(load_error(path)) == (
        f"{path}:11:14: rules.0.decide.level: Input should be 'L0', 'L1', 'L2', 'L3', 'L4', "
        "'throttle' or 'block' (got 'L9')"
    )


def test_long_input_is_truncated(tmp_path: Path) -> None:
    """The got-part of an error stays short even when the input is a whole mapping."""
    text = ONE_RULE.split("rules:")[0].replace("limit_usd: 5", "limit_usd: 5\n    limit_by_tier: {a: 1}")
    error = load_error(write(tmp_path, "b.yaml", text))
    assert (error.line, error.column) == (2, 5)
    assert "give exactly one of limit_usd or limit_by_tier (got {'name': 'b1'" in error.message
    assert error.message.endswith("...)") and len(error.message.split("(got ")[1]) <= 61


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    """A budget defined in two files is refused in the second, naming the first."""
    first = write(tmp_path, "a.yaml", BUDGETS)
    second = write(tmp_path, "b.yaml", BUDGETS.split("rules:")[0])
    assert str(load_error(tmp_path)) == (
        f"{second}:2:11: budget 'tenant-daily' is defined twice (also in {first})"
    )


def test_yaml_syntax_error_line(tmp_path: Path) -> None:
    """A YAML syntax error reports the line and column of the problem."""
    path = write(tmp_path, "bad.yaml", "budgets:\n  - name: b1\n    period: [day\n")
    error = load_error(path)
    assert error.line == 4 and error.column == 1
    assert error.message.startswith("YAML: expected ',' or ']'")


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    """A key repeated in one mapping is an error at the second occurrence (PyYAML would overwrite)."""
    text = ONE_RULE.format(when="budget.used_ratio >= 0.5").replace(
        "limit_usd: 5", "limit_usd: 5\n    limit_usd: 50"
    )
    path = write(tmp_path, "dup.yaml", text)
    assert str(load_error(path)) == f"{path}:6:5: duplicate key 'limit_usd' (first at line 5)"


def test_decision_reaching_high_risk_is_refused(tmp_path: Path) -> None:
    """Deciding L1 on a budget that includes high-risk traffic is refused; excluding it loads."""
    text = ONE_RULE.format(when="budget.used_ratio >= 0.5") + "    decide:\n      level: L1\n"
    path = write(tmp_path, "r.yaml", text)
    error = load_error(path)
    assert (error.line, error.column) == (11, 7)
    assert "high-risk" in error.message
    path.write_text(text + "      only_risk_tiers: [low]\n")
    assert load_ruleset(path).rules[0].decide_tiers == ("low",)


def test_lint_reports_guards_unused_budgets_and_shadow(tmp_path: Path) -> None:
    """Lint warns on unguarded rules and unused budgets and notes shadow decisions."""
    text = BUDGETS.replace("budget.used_ratio >= 0.9 && local.hour >= 8", "local.hour >= 8").replace(
        "severity: high", "severity: high\n    budget: low-monthly"
    ).replace("    budget: tenant-daily\n", "") + "    mode: shadow\n"
    path = write(tmp_path, "r.yaml", text)
    messages = lint(path)
    assert [(m.severity, m.line) for m in messages] == [("warning", 2), ("warning", 16), ("info", 16)]
    assert str(messages[0]) == (
        f"{path}:2: warning: budget tenant-daily is not used by any rule; it is counted but never alerts"
    )
    assert str(messages[2]) == f"{path}:16: info: rule low-degrade: shadow: decisions are reported, not published"
    assert messages[1].message.startswith(
        "rule low-degrade has no numeric guard term, so CEL runs on every event touching budget low-monthly"
    )


def test_lint_of_a_broken_file_is_one_error(tmp_path: Path) -> None:
    """When loading fails lint returns exactly that error."""
    path = write(tmp_path, "bad.yaml", "rules: [\n")
    [message] = lint(path)
    assert message.severity == "error" and message.file == str(path) and message.line == 2
    assert lint(tmp_path / "nope") == [
        LintMessage("error", str(tmp_path / "nope"), None, f"rules path {tmp_path / 'nope'} does not exist")
    ]


def test_rule_store_keeps_last_good_set(tmp_path: Path) -> None:
    """A broken edit leaves the previous set in place; a fixed edit swaps it in."""
    path = write(tmp_path, "rules.yaml", BUDGETS)
    store = RuleStore(tmp_path)
    assert store.reload() is None
    before = store.current
    assert store.version == before.version
    path.write_text(BUDGETS.replace("limit_usd: 1000", "limit_usd: -1"))
    error = store.reload()
    assert isinstance(error, RuleFileError) and error.line == 10
    assert store.current is before
    path.write_text(BUDGETS.replace("limit_usd: 1000", "limit_usd: 2000"))
    assert store.reload() is None
    assert store.version != before.version
    assert store.current.budget("low-monthly").spec.limit_usd == 2000


def test_rule_store_raises_on_a_bad_start(tmp_path: Path) -> None:
    """Constructing a store on broken files raises instead of starting empty."""
    write(tmp_path, "rules.yaml", "rules: [\n")
    with pytest.raises(RuleFileError):
        RuleStore(tmp_path)
