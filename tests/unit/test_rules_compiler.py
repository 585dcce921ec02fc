"""The rule compiler: conjunct splitting, numeric guards exact against CEL, version hashing."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

import cel
import pytest

from spendwarden.rules.compiler import Guard, extract_guards, split_conjuncts
from spendwarden.rules.loader import load_ruleset


def test_split_ignores_ands_inside_strings_and_parentheses() -> None:
    """`&&` splits only at depth 0 and outside quoted strings (escapes included)."""
    assert split_conjuncts("a && 'x && y' && (b && c)") == ["a", "'x && y'", "(b && c)"]
    assert split_conjuncts('f("it\\" && s") && g([1, 2] && h)') == ['f("it\\" && s")', "g([1, 2] && h)"]
    assert split_conjuncts("  single  ") == ["single"]


def test_split_keeps_disjunctions_and_ternaries_whole() -> None:
    """`&&` binds tighter than `||` and `?:`: `a || b && c` is `a || (b && c)`, so `c` is no
    necessary condition and the expression is not split."""
    assert split_conjuncts("a || b && c") == ["a || b && c"]
    assert split_conjuncts("a ? b : c && d") == ["a ? b : c && d"]
    assert split_conjuncts("(a || b) && c") == ["(a || b)", "c"]
    assert split_conjuncts("a && 'x || y ?' && c") == ["a", "'x || y ?'", "c"]


@pytest.mark.parametrize("expression", [
    "anomaly.spend.warm && anomaly.spend.score > 6 // don't page cold\n || anomaly.spend.actual > 500",
    'true && "a" == r"a\\" || true',
    "a && '''it's''' == b || c",
    'a && """x""" == b || c',
])
def test_comments_raw_and_triple_quoted_strings_are_not_split(expression: str) -> None:
    """The scan does not read comments or raw strings: such an expression is kept whole, so
    no guard or warm gate is taken from a part that is not a conjunct."""
    from spendwarden.rules.compiler import warm_required

    assert split_conjuncts(expression) == [expression.strip()]
    assert warm_required(expression) == frozenset()


def test_guards_forward_reversed_and_parenthesised() -> None:
    """`x >= n`, `(x > n)`, `n <= x` and `n < x` become guards; the rest is the residual."""
    guards, residual = extract_guards("budget.used_ratio >= 0.8 && local.hour > 8")
    assert guards == (Guard("budget", "used_ratio", False, 0.8),) and residual == "local.hour > 8"
    guards, residual = extract_guards("(budget.used_ratio > 0.5)")
    assert guards == (Guard("budget", "used_ratio", True, 0.5),) and residual is None
    guards, residual = extract_guards("0.5 <= budget.used_ratio && 10 < window.calls_5m")
    assert guards == (Guard("budget", "used_ratio", False, 0.5), Guard("window", "calls_5m", True, 10.0))
    assert residual is None


def test_residual_of_several_parts_is_parenthesised() -> None:
    """Two or more non-guard conjuncts are rejoined, each in parentheses."""
    guards, residual = extract_guards("local.hour > 8 && budget.used_ratio >= 0.9 && (a || b)")
    assert guards == (Guard("budget", "used_ratio", False, 0.9),)
    assert residual == "(local.hour > 8) && ((a || b))"


@pytest.mark.parametrize(
    "expression",
    [
        "budget.used_ratio >= 0.9 || local.hour == 3",
        "budget.used_ratio <= 0.9",
        "budget.unknown_field >= 0.9",
        "local.hour >= 8",
        "'budget.used_ratio >= 0.5 && x' == local.weekday",
    ],
)
def test_no_guard_when_not_a_top_level_lower_bound(expression: str) -> None:
    """Disjunctions, upper bounds, unknown fields and quoted text give no guard."""
    assert extract_guards(expression) == ((), expression)


EXPRESSIONS = [
    "budget.used_ratio >= 0.8",
    "budget.used_ratio > 0.5 && local.hour >= 9",
    "0.5 <= budget.used_ratio && (local.hour < 6 || local.hour > 20)",
    "budget.used_ratio >= 0.7 && budget.spend_usd > 100.0 && local.weekday == 'monday'",
    "0.9 < budget.used_ratio && budget.used_ratio < 1.2",
    "budget.used_ratio >= 0.9 || local.hour == 3",
    "budget.spend_usd > 100.0 || local.hour == 3 && budget.used_ratio > 0.5",
    "local.hour == 3 ? budget.spend_usd > 100.0 : local.hour == 5 && budget.used_ratio >= 0.9",
]


def _guarded(guards: tuple[Guard, ...], residual: Any, context: dict[str, dict[str, Any]]) -> bool:
    for guard in guards:
        value = context[guard.root][guard.name]
        if not (value > guard.threshold if guard.strict else value >= guard.threshold):
            return False
    return residual is None or bool(residual.execute(context))


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_guard_and_residual_agree_with_full_cel(expression: str) -> None:
    """Guards checked natively then the residual give the full program's truth value everywhere."""
    program = cel.compile(expression)
    guards, residual_text = extract_guards(expression)
    residual = cel.compile(residual_text) if residual_text else None
    ratios = [0.0, 0.49, 0.5, 0.51, 0.7, 0.8, 0.9, 0.95, 1.0, 1.2, 1.5]
    spends = [0.0, 100.0, 100.01, 5000.0]
    hours = [0, 3, 5, 6, 9, 20, 21, 23]
    weekdays = ["monday", "sunday"]
    for ratio, spend, hour, weekday in itertools.product(ratios, spends, hours, weekdays):
        context = {
            "budget": {"used_ratio": ratio, "spend_usd": spend},
            "local": {"hour": hour, "weekday": weekday},
        }
        assert _guarded(guards, residual, context) == bool(program.execute(context)), (expression, context)


RULES = """\
# daily budget
budgets:
  - name: b1
    period: day
    for_each: [tenant_id]
    limit_usd: 5
rules:
  - name: r1
    budget: b1
    when: budget.used_ratio >= 0.5
"""


def _version(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text))
    return load_ruleset(path).version


def test_version_ignores_comments_and_layout_but_not_limits(tmp_path: Path) -> None:
    """The version hash depends on content only: comments/whitespace keep it, a new limit changes it."""
    base = _version(tmp_path, RULES)
    reformatted = RULES.replace("# daily budget", "# renamed comment\n\n").replace(
        "for_each: [tenant_id]", "for_each:\n      - tenant_id   # per tenant"
    )
    assert _version(tmp_path, reformatted) == base
    assert _version(tmp_path, RULES.replace("limit_usd: 5", "limit_usd: 6")) != base
