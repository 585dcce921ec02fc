"""The rule test runner: fixture expansion, readable failures, file:line for bad test files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spendwarden.exceptions import ConfigError
from spendwarden.rules.testing import FixtureEvent, FixtureOutcome, TestResult, expand, find_test_files, run_rule_tests

RULES = """\
tenants:
  acme: {timezone: America/New_York}
budgets:
  - name: uc-daily
    period: day
    for_each: [tenant_id, use_case_id]
    limit_usd: 1000
rules:
  - name: daily-90
    budget: uc-daily
    when: budget.used_ratio >= 0.9
    notify: finops
  - name: daily-cap
    budget: uc-daily
    when: budget.used_ratio >= 1.0
    decide: {level: block, only_risk_tiers: [low]}
"""

EVENT = '{ts: "2026-11-25T15:00:00Z", tenant_id: acme, use_case_id: cs, risk_tier: low'


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    write(tmp_path, "rules.yaml", RULES)
    return tmp_path


def run_one(pack: Path, body: str, name: str = "t.test.yaml") -> list[TestResult]:
    return run_rule_tests(write(pack / "tests", name, body))


# ------------------------------------------------------------------ expansion
def test_repeat_expands_with_interval_and_ids() -> None:
    event = FixtureEvent.model_validate(
        {"ts": "2026-11-25T14:00:00Z", "tenant_id": "acme", "cost_event_id": "burst",
         "repeat": 3, "interval": "90s"}
    )
    objs = list(expand(event, "event0"))
    assert [o["cost_event_id"] for o in objs] == ["burst-0", "burst-1", "burst-2"]
    assert [o["ts"] for o in objs] == ["2026-11-25T14:00:00+00:00", "2026-11-25T14:01:30+00:00",
                                       "2026-11-25T14:03:00+00:00"]
    assert "repeat" not in objs[0] and "interval" not in objs[0]


def test_single_event_without_id_gets_generated_id() -> None:
    event = FixtureEvent.model_validate({"ts": "2026-11-25T14:00:00Z", "tenant_id": "acme"})
    assert [o["cost_event_id"] for o in expand(event, "event4")] == ["event4"]


def test_repeat_counts_every_copy(pack: Path) -> None:
    # 9 x 100 = 900 fires daily-90; 8 copies would not.
    results = run_one(pack, f"""\
        tests:
          - name: nine copies
            events:
              - {EVENT}, allocated_cost_usd: 100, repeat: 9, interval: 1h}}
            expect_firing: [{{rule: daily-90, scope: {{use_case_id: cs}}}}]
          - name: eight copies
            events:
              - {EVENT}, allocated_cost_usd: 100, repeat: 8, interval: 1d}}
            expect_firing: []
        """)
    assert [r.passed for r in results] == [True, True], results


def test_same_id_is_counted_once(pack: Path) -> None:
    results = run_one(pack, f"""\
        tests:
          - name: producer duplicate
            events:
              - {EVENT}, allocated_cost_usd: 900, cost_event_id: a}}
              - {EVENT}, allocated_cost_usd: 900, cost_event_id: a}}
            expect_firing: [{{rule: daily-90}}]
            expect_decisions: {{}}
        """)
    assert results[0].passed, results[0]


# ------------------------------------------------------------------ readable failures
def test_failing_expectations_are_readable(pack: Path) -> None:
    results = run_one(pack, f"""\
        tests:
          - name: wrong on purpose
            events:
              - {EVENT}, allocated_cost_usd: 1000}}
            expect_firing:
              - {{rule: daily-90, scope: {{tenant_id: acme, use_case_id: other}}}}
            expect_decisions:
              acme: {{"cs:low": L1}}
            expect_fired: [daily-90, nope]
        """)
    (result,) = results
    assert not result.passed and result.name == "wrong on purpose"
    problems = result.problems
    assert (
        "expected firing daily-90 {tenant_id: acme, use_case_id: other} but it is not firing; firing: "
        "[daily-90 {tenant_id: acme, use_case_id: cs}, daily-cap {tenant_id: acme, use_case_id: cs}]"
    ) in problems
    assert "unexpected firing daily-90 {tenant_id: acme, use_case_id: cs}" in problems
    assert "unexpected firing daily-cap {tenant_id: acme, use_case_id: cs}" in problems
    assert "decision acme cs:low: expected L1, got block" in problems
    never = "expected nope to fire during the test, but there is no such rule"
    assert any(p.startswith(never) for p in problems)
    assert "FAIL" in str(result) and "  - decision acme cs:low" in str(result)


def test_decision_not_expected_and_rule_never_fired(pack: Path) -> None:
    results = run_one(pack, f"""\
        tests:
          - name: quiet expected
            events:
              - {EVENT}, allocated_cost_usd: 950}}
            expect_decisions: {{acme: {{"cs:low": block}}}}
            expect_fired: [daily-cap]
        """)
    problems = results[0].problems
    assert "decision acme cs:low: expected block, got L0" in problems
    assert any("expected daily-cap to fire during the test, but it never fired; fired: ['daily-90']" in p
               for p in problems)


def test_unknown_rule_in_expect_firing(pack: Path) -> None:
    results = run_one(pack, """\
        tests:
          - name: typo
            events: []
            expect_firing: [{rule: daily-09}]
        """)
    assert results[0].problems == [
        "expected firing daily-09 {} but there is no rule daily-09 in the rule set; firing: []"
    ]


def test_bad_event_names_file_line_and_reason(pack: Path) -> None:
    results = run_one(pack, """\
        tests:
          - name: ok
            events: []
            expect_firing: []
          - name: bad tier
            events:
              - {ts: "2026-11-25T15:00:00Z", tenant_id: acme, risk_tier: extreme, allocated_cost_usd: 1}
            expect_firing: []
        """)
    assert results[0].passed
    bad = results[1]
    assert not bad.passed and bad.name == "bad tier"
    (problem,) = bad.problems
    assert problem.startswith(f"{pack / 'tests' / 't.test.yaml'}:5: events[0] event0: invalid: risk_tier:")


def test_unpriced_event_is_reported(pack: Path) -> None:
    results = run_one(pack, """\
        tests:
          - name: no cost
            events:
              - {ts: "2026-11-25T15:00:00Z", tenant_id: acme, provider: nobody, model_or_service: nothing}
            expect_firing: []
        """)
    assert "unpriced: no allocated_cost_usd" in results[0].problems[0]


# ------------------------------------------------------------------ bad test files
@pytest.mark.parametrize(
    ("body", "line", "text"),
    [
        ("tests:\n  - name: a\n    expect_firng: []\n", 3,
         "tests.0.expect_firng: Extra inputs are not permitted"),
        ("tests:\n  - name: a\n    events:\n      - {ts: x, tenant: acme}\n    expect_firing: []\n", 4,
         "unknown event field 'tenant'"),
        ("tests:\n  - name: a\n    events:\n      - {ts: x, repeat: 3}\n    expect_firing: []\n", 4,
         "repeat needs an interval"),
        ("tests:\n  - name: a\n    events:\n      - {ts: x, repeat: 3, interval: 5 minutes}\n"
         "    expect_firing: []\n", 4, "String should match pattern"),
        ("tests:\n  - name: a\n    events: []\n", 2, "a test needs expect_firing"),
        ("tests:\n  - name: a\n    expect_fired: []\n  - name: a\n    expect_fired: []\n", 1,
         "'a' is used twice"),
        ("tests:\n  - name: a\n    expect_decisions: {acme: {'cs:low': L9}}\n", 3, "Input should be"),
        ("tests:\n  - name: [a\n", 3, "YAML:"),
        ("tests:\n  - name: a\n    name: b\n", 3, "duplicate key 'name'"),
        ("- just a list\n", 1, "top level must be a mapping"),
    ],
)
def test_bad_test_file_reports_file_and_line(pack: Path, body: str, line: int, text: str) -> None:
    path = write(pack / "tests", "bad.test.yaml", body)
    (result,) = run_rule_tests(path)
    assert not result.passed and result.file == str(path)
    (problem,) = result.problems
    assert problem.startswith(f"{path}:{line}"), problem
    assert text in problem


def test_rules_that_do_not_load_fail_the_file(pack: Path) -> None:
    write(pack, "rules.yaml", RULES.replace("used_ratio >= 0.9", "used_ratio >=="))
    (result,) = run_one(pack, "tests:\n  - name: a\n    expect_fired: []\n")
    assert not result.passed
    assert f"{pack / 'rules.yaml'}:11" in result.problems[0]


# ------------------------------------------------------------------ discovery
def test_rules_path_relative_to_test_file(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere", "rules.yaml", RULES)
    path = write(tmp_path / "fixtures", "x.test.yaml", """\
        rules: ../elsewhere
        tests:
          - name: a
            events: []
            expect_firing: []
        """)
    assert run_rule_tests(path)[0].passed


def test_pack_root_recurses_into_packs(tmp_path: Path) -> None:
    body = "tests:\n  - name: a\n    events: []\n    expect_firing: []\n"
    for name in ("one", "two"):
        write(tmp_path / name, "rules.yaml", RULES)
        write(tmp_path / name / "tests", "a.test.yaml", body)
        write(tmp_path / name / "tests", "notes.yaml", "not: a test")  # only *.test.yaml count
    files = find_test_files(tmp_path)
    assert files == [tmp_path / "one/tests/a.test.yaml", tmp_path / "two/tests/a.test.yaml"]
    results = run_rule_tests(tmp_path)
    assert [r.passed for r in results] == [True, True]
    assert run_rule_tests(tmp_path / "one")[0].file == str(tmp_path / "one/tests/a.test.yaml")


def test_no_tests_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "rules.yaml", RULES)
    with pytest.raises(ConfigError, match="no \\*.test.yaml files"):
        run_rule_tests(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        run_rule_tests(tmp_path / "missing")


def test_advance_to_resolves_with_no_traffic(pack: Path) -> None:
    results = run_one(pack, f"""\
        tests:
          - name: next local day
            events:
              - {EVENT}, allocated_cost_usd: 1000}}
            advance_to: "2026-11-26T05:00:00Z"
            expect_fired: [daily-90, daily-cap]
            expect_firing: []
            expect_decisions: {{}}
        """)
    assert results[0].passed, results[0]


def test_fixture_lines_are_fed_in_time_order() -> None:
    """Two lines writing interleaved streams reach the engine as one stream in time order; a
    line without a readable ts keeps the file's order (ingest then names the field)."""
    from spendwarden.rules.testing import _in_time_order

    hits = FixtureEvent.model_validate({"ts": "2026-11-20T00:00:00Z", "cost_event_id": "hit", "repeat": 3,
                                        "interval": "20m"})
    misses = FixtureEvent.model_validate({"ts": "2026-11-20T00:10:00Z", "cost_event_id": "miss", "repeat": 3,
                                          "interval": "20m"})
    assert [obj["cost_event_id"] for _, obj in _in_time_order([hits, misses])] == [
        "hit-0", "miss-0", "hit-1", "miss-1", "hit-2", "miss-2"]
    undated = FixtureEvent.model_validate({"cost_event_id": "x"})
    assert [obj["cost_event_id"] for _, obj in _in_time_order([misses, undated, hits])][:4] == [
        "miss-0", "miss-1", "miss-2", "x"]


def test_repeated_copies_number_their_traces_and_outcome_ids() -> None:
    """`{i}` in a repeated line's text becomes the copy's number, in its id too (no suffix then),
    so event lines and outcome lines can pair up copy by copy."""
    events = list(expand(FixtureEvent.model_validate(
        {"ts": "2026-11-25T10:00:00+00:00", "tenant_id": "acme", "trace_id": "case-{i}", "repeat": 2,
         "interval": "1m"}), "event0"))
    assert [(e["cost_event_id"], e["trace_id"]) for e in events] == [("event0-0", "case-0"), ("event0-1", "case-1")]
    outcomes = list(expand(FixtureOutcome.model_validate(
        {"ts": "2026-11-25T10:05:00+00:00", "tenant_id": "acme", "trace_id": "case-{i}", "outcome": "resolved",
         "business_outcome_id": "won-{i}", "repeat": 2, "interval": "1m"}), "outcome0", "business_outcome_id"))
    assert [(o["business_outcome_id"], o["trace_id"]) for o in outcomes] == [("won-0", "case-0"), ("won-1", "case-1")]
    with pytest.raises(ValueError, match="unknown outcome field 'kind'"):
        FixtureOutcome.model_validate({"kind": "resolved"})
