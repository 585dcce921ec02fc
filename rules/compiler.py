"""Compile validated rule files into a RuleSet: CEL programs, numeric guards, safety checks.

Why guards: a CEL evaluation with fresh figures costs several microseconds, far more than the
rest of an event's work. Each top-level ``&&`` conjunct of the form ``budget.used_ratio >= 0.7``
is a necessary condition, checked natively first; CEL runs only when every guard passes.
That is exact (the same truth value as the full expression), not a sampling trick.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import cel
import orjson

from spendwarden.detectors import RULE_DETECTORS
from spendwarden.exceptions import RuleFileError
from spendwarden.rules.schema import Budget, Rule, RuleFile, TenantSpec, UnitSpec
from spendwarden.streams.money import usd_to_nanos
from spendwarden.streams.unit import FIGURES as UNIT_FIGURES, WINDOWS as UNIT_WINDOWS

# Variables a `when` may use, and the fields each offers (documented in docs/rules.md).
VARIABLES: dict[str, tuple[str, ...]] = {
    "budget": ("spend_usd", "limit_usd", "used_ratio", "remaining_usd", "name", "period", "period_id"),
    "period": ("elapsed_ratio", "hours_left"),
    "local": ("hour", "minute", "weekday", "day", "month"),
    "tenant": ("id", "tier"),
    "scope": (),
    "window": ("spend_usd_5m", "spend_usd_1h", "calls_5m", "calls_1h"),
    # The budget's own period end, also under its kind (`forecast.day.end_ratio` on a day budget).
    "forecast": ("end_ratio", "end_usd", "low_usd", "high_usd", "hours_to_exhaustion", "day", "week", "month"),
    # Online detectors over this instance's last 60 minutes (docs/detectors.md).
    "anomaly": tuple(RULE_DETECTORS),
    # Unit economics of this instance over rolling windows (docs/unit-economics.md).
    "unit": tuple(UNIT_WINDOWS),
}
# Roots the clock alone can change (re-checked on ticks while the guards hold).
CLOCK_ROOTS = frozenset({"local", "period", "window", "forecast", "anomaly", "unit"})
FORECAST_FIELDS = ("end_ratio", "end_usd", "low_usd", "high_usd", "hours_to_exhaustion")
# Dimensions a gateway decision field can express (tenant hash, use_case:risk_tier[:model]).
DECISION_DIMENSIONS = frozenset({"tenant_id", "use_case_id", "risk_tier", "model_or_service"})
# Numeric fields a guard may compare natively (the rest are text and stay in CEL).
GUARD_FIELDS: dict[str, frozenset[str]] = {
    "budget": frozenset({"spend_usd", "limit_usd", "used_ratio", "remaining_usd"}),
    "window": frozenset(VARIABLES["window"]),
    "anomaly": frozenset(f"{name}.score" for name in RULE_DETECTORS),
    "unit": frozenset(f"{window}.{name}" for window in UNIT_WINDOWS for name in UNIT_FIGURES),
}
# Roots of rules whose answers are kept at minute resolution (CompiledBudget.minute_resolution).
MINUTE_ROOTS = frozenset({"unit", "local", "period", "tenant", "scope"})
# Roots whose values change only with the clock, never with spend: memoised per minute.
TIME_ONLY_ROOTS = frozenset({"local", "period", "tenant", "scope"})
_GUARD = re.compile(
    r"^\(?\s*(budget|window|anomaly|unit)\.([a-z_0-9]+(?:\.[a-z_0-9]+)?)\s*(>=|>)\s*([0-9]+(?:\.[0-9]+)?)\s*\)?$"
)
_FIELD_REF = re.compile(r"\b([a-z_]+)\.([a-z_0-9]+)")
# What the conjunct scanner does not read: comments, raw and triple-quoted strings (an
# expression holding one is not split at all, so no guard or warm gate is taken from it).
_UNSCANNED = re.compile(r"//|'''|\"\"\"|(?<![A-Za-z0-9_])(?:[rR][bB]?|[bB][rR])['\"]")
_WARM_CONJUNCT = re.compile(r"^\(?\s*anomaly\.([a-z_0-9]+)\.warm\s*\)?$")
_GUARD_REVERSED = re.compile(
    r"^\(?\s*([0-9]+(?:\.[0-9]+)?)\s*(<=|<)\s*(budget|window|anomaly|unit)\.([a-z_0-9]+(?:\.[a-z_0-9]+)?)\s*\)?$"
)


@dataclass(frozen=True, slots=True)
class Guard:
    """A necessary condition ``root.name >= threshold`` (or ``>``) of a rule."""

    root: str
    name: str
    strict: bool
    threshold: float


@dataclass(slots=True)
class CompiledRule:
    spec: Rule
    file: str
    line: int | None
    program: Any
    guards: tuple[Guard, ...]
    residual: Any | None
    residual_time_only: bool
    roots: frozenset[str]
    decide_tiers: tuple[str, ...]
    # Coarsest clock step at which the answer can change on its own: 0 (never), 3600 (reads
    # only local hour/weekday/day/month, which change at local hour starts) or 60 (minutes).
    clock_step_s: int = 60
    # Variables the residual (the CEL left after guards) reads: decides how widely its
    # time-only answer can be shared (engine memo).
    residual_roots: frozenset[str] = frozenset()
    keep_firing_s: float = 0.0  # the rule's keep_firing_for in seconds
    # What its CEL reads of unit.*: window -> figures (None: the whole window); see unit_fields_read.
    unit_reads: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def spans_periods(self) -> bool:
        """Whether a firing alert carries over a period end instead of resolving: it reads no
        figure of the period (budget, period, forecast) and publishes no decision (a decision
        expires with its period). Anomaly rules: a loop that runs past midnight is one alert."""
        return not self.roots & {"budget", "period", "forecast"} and self.spec.decide is None

    @property
    def time_dependent(self) -> bool:
        """Whether the clock alone can turn the rule on (instances waiting for it are re-checked on
        ticks). Not for `anomaly.*`: the last 60 minutes only grow with events, which evaluate
        anyway; a firing anomaly is still re-checked every minute (clock_step_s) to resolve."""
        return bool(self.roots & (CLOCK_ROOTS - {"anomaly"}))


@dataclass(slots=True)
class CompiledBudget:
    spec: Budget
    index: int
    file: str
    rules: list[CompiledRule] = field(default_factory=list)
    needs_window: bool = False  # keeps one-minute window buckets
    reads_unit: bool = False  # some rule reads unit.*: its instances keep unit-economics buckets
    # Every rule reads unit.* and nothing that moves with each event's spend (budget, window,
    # forecast, anomaly): the engine evaluates its instances at most once per engine minute.
    minute_resolution: bool = False
    reads_window: bool = False  # some rule reads window.* (its figures are computed per evaluation)
    # The detectors its rules read (anomaly.<name>.*): only these learn and score.
    detectors: frozenset[str] = frozenset()
    # Those of them some rule reads without requiring `anomaly.<name>.warm` (a top-level conjunct).
    read_cold: frozenset[str] = frozenset()
    # The others: every rule reading them requires warm, so while one warms up no rule of the
    # budget can pass on it and it is not scored (learning goes on). Set once compiled.
    warm_gated: frozenset[str] = frozenset()
    # Scope matchers as (dimension, allowed values) for fast event matching.
    matchers: tuple[tuple[str, frozenset[str]], ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def needs_detectors(self) -> bool:
        """Some rule reads anomaly.*."""
        return bool(self.detectors)

    @property
    def per_tenant(self) -> bool:
        """True when each instance belongs to one tenant (stage one in the service)."""
        values = self.spec.scope_values("tenant_id")
        return "tenant_id" in self.spec.for_each or (values is not None and len(values) == 1)


@dataclass(slots=True)
class SourceFile:
    """A parsed rule file and a way to find the line and column of a field path in it."""

    path: str
    model: RuleFile
    locate: Callable[[tuple[Any, ...]], tuple[int | None, int | None]]
    raw: bytes = b""


@dataclass(slots=True)
class RuleSet:
    """Everything the engine needs from a rules directory, compiled once."""

    tenants: dict[str, TenantSpec]
    default_tenant: TenantSpec
    budgets: list[CompiledBudget]
    rules: list[CompiledRule]
    version: str
    files: list[str]
    # Detector parameters from a `detectors:` section (checked at load); {} = defaults.
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    unit: UnitSpec = field(default_factory=UnitSpec)

    def tenant(self, tenant_id: str) -> TenantSpec:
        return self.tenants.get(tenant_id, self.default_tenant)

    def budget(self, name: str) -> CompiledBudget:
        for budget in self.budgets:
            if budget.name == name:
                return budget
        raise KeyError(name)

    def limit_nanos(self, budget: CompiledBudget, tenant_id: str | None) -> int | None:
        """The budget's limit for a tenant, or None when the tenant's tier has none."""
        spec = budget.spec
        if spec.limit_usd is not None:
            return usd_to_nanos(spec.limit_usd)
        tier = self.tenant(tenant_id).tier if tenant_id is not None else self.default_tenant.tier
        usd = spec.limit_by_tier.get(tier) if spec.limit_by_tier else None
        return usd_to_nanos(usd) if usd is not None else None


def split_conjuncts(expression: str) -> list[str]:
    """Split a CEL expression on ``&&`` at parenthesis depth 0, outside string literals. An
    expression with ``||`` or a ternary at depth 0 is no conjunction (``a || b && c`` is
    ``a || (b && c)``): it comes back whole, as does one with a comment, a raw or a
    triple-quoted string (the scan below does not read those)."""
    if _UNSCANNED.search(expression):
        return [expression.strip()]
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and (ch == "?" or expression.startswith("||", i)):
            return [expression.strip()]
        elif ch == "&" and expression.startswith("&&", i) and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 2
            i += 1
        i += 1
    parts.append(expression[start:].strip())
    return parts


def clock_step(expression: str, roots: frozenset[str]) -> int:
    """How often the clock alone can change an expression's answer (see CompiledRule)."""
    if not roots & CLOCK_ROOTS:
        return 0
    # unit.* windows are UTC hours: only an hour's turn moves them (events and outcomes re-evaluate
    # on their own); local.* without minutes turns at the local hour.
    if roots & (CLOCK_ROOTS - {"local", "unit"}) or "minute" in expression:  # textual: any mention counts
        return 60
    return 3600


def extract_guards(expression: str) -> tuple[tuple[Guard, ...], str | None]:
    """Numeric guards of a conjunction and the residual expression (None if nothing is left)."""
    guards: list[Guard] = []
    rest: list[str] = []
    for part in split_conjuncts(expression):
        match = _GUARD.match(part)
        if match and match.group(2) in GUARD_FIELDS[match.group(1)]:
            guards.append(Guard(match.group(1), match.group(2), match.group(3) == ">", float(match.group(4))))
            continue
        match = _GUARD_REVERSED.match(part)
        if match and match.group(4) in GUARD_FIELDS[match.group(3)]:
            guards.append(Guard(match.group(3), match.group(4), match.group(2) == "<", float(match.group(1))))
            continue
        rest.append(part)
    if not rest:
        return tuple(guards), None
    if len(rest) == 1:
        return tuple(guards), rest[0]
    return tuple(guards), " && ".join(f"({part})" for part in rest)


def _compile_cel(expression: str, source: SourceFile, loc: tuple[Any, ...]) -> Any:
    try:
        return cel.compile(expression)
    except ValueError as exc:
        line, column = source.locate(loc)
        detail = str(exc).split("\n")[0]
        found = re.search(r"<input>:(\d+):(\d+): (.*)", str(exc))
        if found and line is not None:
            line, column = _inside_value(source, line, column, int(found.group(1)), int(found.group(2)))
            detail = found.group(3)
        raise RuleFileError(source.path, line, column, f"{'.'.join(map(str, loc))}: CEL: {detail}") from None


def _inside_value(source: SourceFile, line: int, column: int | None, inner_line: int,
                  inner_col: int) -> tuple[int, int | None]:
    """File position of CEL's (line, column) inside a YAML scalar starting at (line, column)."""
    text = source.raw.decode("utf-8", "replace").splitlines() if source.raw else []
    start = text[line - 1][column - 1:] if column is not None and line - 1 < len(text) else ""
    if start[:1] in ("|", ">"):  # block scalar: content begins on the next line, indented
        target = line + inner_line
        body = text[target - 1] if target - 1 < len(text) else ""
        return target, len(body) - len(body.lstrip()) + inner_col
    if inner_line > 1:
        return line + inner_line - 1, inner_col
    if column is None:
        return line, None
    quoted = 1 if start[:1] in ("'", '"') else 0
    return line, column + quoted + inner_col - 1


def _check_detectors(source: SourceFile) -> dict[str, dict[str, Any]]:
    """Build each configured detector once so a bad parameter is refused at load, with file:line."""
    spec = source.model.detectors
    assert spec is not None
    params = {name: dict(getattr(spec, name)) for name in RULE_DETECTORS}
    for name, cls in RULE_DETECTORS.items():
        if "tz" in params[name]:
            line, column = source.locate(("detectors", name, "tz"))
            raise RuleFileError(source.path, line, column, f"detectors.{name}.tz: the zone is each tenant's own")
        try:
            cls(**params[name])
        except (TypeError, ValueError) as exc:  # DetectorParameterError is a ValueError
            line, column = source.locate(("detectors", name))
            raise RuleFileError(source.path, line, column, f"detectors.{name}: {exc}") from None
    return params


_UNIT_REF = re.compile(r"\bunit\b(?:\s*\.\s*([a-z_0-9]+)(?:\s*\.\s*([a-z_0-9]+))?)?")


def unit_fields_read(expression: str) -> dict[str, tuple[str, ...] | None]:
    """What of ``unit`` an expression reads: window -> its figures, or None for the whole window
    (``unit.day`` used as a map, ``route_mix``); every window whole when ``unit`` itself is used
    as a map. CEL gets only these, so its context stays small and it never misses one."""
    found: dict[str, set[str] | None] = {}
    for window, figure in _UNIT_REF.findall(_strip_strings(expression)):
        if not window:
            return {w: None for w in UNIT_WINDOWS}
        if not figure or figure == "route_mix":
            found[window] = None
        elif found.get(window, set()) is not None:
            found.setdefault(window, set()).add(figure)  # type: ignore[union-attr]
    return {w: None if found[w] is None else tuple(sorted(found[w])) for w in UNIT_WINDOWS if w in found}  # type: ignore[arg-type]


def detectors_read(expression: str) -> frozenset[str]:
    """The detectors an expression reads (``anomaly.profile.score`` reads ``profile``); every
    detector when it names none (``anomaly`` used whole)."""
    found = {name for root, name in _FIELD_REF.findall(_strip_strings(expression)) if root == "anomaly"}
    known = set(VARIABLES["anomaly"])
    return frozenset(found & known) or frozenset(known)


def warm_required(expression: str) -> frozenset[str]:
    """The detectors whose ``anomaly.<name>.warm`` is a top-level conjunct of the expression: it
    is false while any of them warms up."""
    return frozenset(m.group(1) for part in split_conjuncts(expression) if (m := _WARM_CONJUNCT.match(part)))


def _keep_firing(rule: Rule, source: SourceFile, loc: tuple[Any, ...]) -> float:
    """``keep_firing_for`` in seconds (0 when absent); a bad duration is refused with file:line."""
    if rule.keep_firing_for is None:
        return 0.0
    from spendwarden.streams.overrides import OverrideError, parse_duration

    try:
        return parse_duration(rule.keep_firing_for)
    except OverrideError as exc:
        line, column = source.locate(loc + ("keep_firing_for",))
        raise RuleFileError(source.path, line, column, f"{'.'.join(map(str, loc))}.keep_firing_for: {exc}") from None


ANOMALY_FIELDS = ("score", "severity", "warm", "actual", "expected")
_NESTED_REF = re.compile(r"\b(forecast|anomaly|unit)\.([a-z_0-9]+)\.([a-z_0-9]+)")
_NESTED_FIELDS = {"forecast": FORECAST_FIELDS, "anomaly": ANOMALY_FIELDS, "unit": UNIT_FIGURES + ("route_mix",)}


def _check_nested_fields(expression: str, source: SourceFile, loc: tuple[Any, ...]) -> None:
    """`forecast.day.<field>` and `anomaly.spend.<field>` name known fields (else a run-time error)."""
    for root, middle, name in _NESTED_REF.findall(_strip_strings(expression)):
        known = _NESTED_FIELDS[root]
        if name not in known:
            line, column = source.locate(loc)
            raise RuleFileError(source.path, line, column,
                                f"{'.'.join(map(str, loc))}: {root}.{middle}.{name} is not a known field; "
                                f"{root}.{middle} offers: {', '.join(known)}")


def _check_forecast_period(expression: str, period: str, source: SourceFile, loc: tuple[Any, ...]) -> None:
    """`forecast.week` on a day budget has no meaning: refuse it at load, with file:line."""
    for root, name in _FIELD_REF.findall(_strip_strings(expression)):
        if root == "forecast" and name in ("day", "week", "month") and name != period:
            line, column = source.locate(loc)
            raise RuleFileError(source.path, line, column,
                                f"{'.'.join(map(str, loc))}: forecast.{name} on a {period} budget; use "
                                f"forecast.{period}.<field> or forecast.<field> (the budget's own period)")


def _roots(program: Any, expression: str, source: SourceFile, loc: tuple[Any, ...]) -> frozenset[str]:
    roots = frozenset(program.variables())
    unknown = sorted(roots - VARIABLES.keys())
    if unknown:
        line, column = source.locate(loc)
        raise RuleFileError(
            source.path, line, column,
            f"{'.'.join(map(str, loc))}: unknown variable {unknown[0]!r} in {expression!r}; "
            f"available: {', '.join(VARIABLES)}",
        )
    for root, name in _FIELD_REF.findall(_strip_strings(expression)):
        if root in VARIABLES and VARIABLES[root] and name not in VARIABLES[root]:
            line, column = source.locate(loc)
            raise RuleFileError(
                source.path, line, column,
                f"{'.'.join(map(str, loc))}: {root}.{name} is not a known field; "
                f"{root} offers: {', '.join(VARIABLES[root])}",
            )
    return roots


def _strip_strings(expression: str) -> str:
    return re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", '""', expression)


def _decide_tiers(rule: Rule, budget: Budget, source: SourceFile, loc: tuple[Any, ...]) -> tuple[str, ...]:
    """Risk tiers a rule's decision applies to; refuse any that would touch high risk."""
    decide = rule.decide
    if decide is None or decide.level == "L0":
        return ()
    tiers = set(budget.risk_tiers())
    if decide.only_risk_tiers is not None:
        tiers &= set(decide.only_risk_tiers)
    line, column = source.locate(loc + ("decide",))
    where = f"rules.{loc[1]}.decide"
    if "high" in tiers:
        raise RuleFileError(
            source.path, line, column,
            f"{where}: rule {rule.name!r} would {decide.level} high-risk traffic: budget pressure may "
            "degrade low-risk routes, never high-risk ones. Add `only_risk_tiers: [low, medium]` "
            "or scope the budget to `risk_tier: low`; to reach high-risk traffic, alert only (drop decide).",
        )
    if not tiers:
        raise RuleFileError(source.path, line, column, f"{where}: only_risk_tiers excludes every tier of the budget's scope")
    unreachable = sorted((set(budget.scope) | set(budget.for_each)) - DECISION_DIMENSIONS)
    if unreachable:
        raise RuleFileError(
            source.path, line, column,
            f"{where}: budget {budget.name!r} is scoped by {', '.join(unreachable)}, which a gateway "
            "decision cannot express (decisions cover tenant, use case, risk tier and model), so it "
            "would also hit traffic outside the budget; alert only, or give that traffic its own tenant",
        )
    if not budget_is_per_tenant(budget):
        raise RuleFileError(
            source.path, line, column,
            f"{where}: budget {budget.name!r} spans tenants; decisions are published per tenant, "
            "so a cross-tenant budget can only alert (drop decide, or add tenant_id to for_each)",
        )
    order = ("low", "medium", "high")
    return tuple(t for t in order if t in tiers)


def budget_is_per_tenant(budget: Budget) -> bool:
    values = budget.scope_values("tenant_id")
    return "tenant_id" in budget.for_each or (values is not None and len(values) == 1)


def compile_ruleset(sources: Iterable[SourceFile]) -> RuleSet:
    """Merge and compile rule files; raise RuleFileError naming file:line:column on the first problem."""
    sources = list(sources)
    tenants: dict[str, TenantSpec] = {}
    budgets: dict[str, CompiledBudget] = {}
    pending: list[tuple[SourceFile, int, Rule]] = []
    detector_params: dict[str, dict[str, Any]] = {}
    detectors_file: str | None = None
    unit_spec, unit_file = UnitSpec(), None
    for source in sources:
        if source.model.unit is not None:
            if unit_file is not None:
                line, column = source.locate(("unit",))
                raise RuleFileError(source.path, line, column, f"unit is configured twice (also in {unit_file})")
            unit_file, unit_spec = source.path, source.model.unit
        if source.model.detectors is not None:
            if detectors_file is not None:
                line, column = source.locate(("detectors",))
                raise RuleFileError(source.path, line, column, f"detectors are configured twice (also in {detectors_file})")
            detectors_file = source.path
            detector_params = _check_detectors(source)
        for tenant_id, spec in source.model.tenants.items():
            if tenant_id in tenants:
                line, column = source.locate(("tenants", tenant_id))
                raise RuleFileError(source.path, line, column, f"tenant {tenant_id!r} is described twice")
            tenants[tenant_id] = spec
        for i, budget in enumerate(source.model.budgets):
            if budget.name in budgets:
                line, column = source.locate(("budgets", i, "name"))
                raise RuleFileError(
                    source.path, line, column,
                    f"budget {budget.name!r} is defined twice (also in {budgets[budget.name].file})",
                )
            matchers = tuple(
                (dim, frozenset(budget.scope_values(dim) or ())) for dim in budget.scope  # type: ignore[arg-type]
            )
            budgets[budget.name] = CompiledBudget(budget, len(budgets), source.path, matchers=matchers)
        pending.extend((source, i, rule) for i, rule in enumerate(source.model.rules))

    rules: list[CompiledRule] = []
    seen: dict[str, str] = {}
    for source, i, rule in pending:
        loc = ("rules", i)
        if rule.name in seen:
            line, column = source.locate(loc + ("name",))
            raise RuleFileError(source.path, line, column, f"rule {rule.name!r} is defined twice (also in {seen[rule.name]})")
        seen[rule.name] = source.path
        budget = budgets.get(rule.budget)
        if budget is None:
            line, column = source.locate(loc + ("budget",))
            known = ", ".join(sorted(budgets)) or "none defined"
            raise RuleFileError(source.path, line, column, f"rules.{i}.budget: unknown budget {rule.budget!r}; known: {known}")
        program = _compile_cel(rule.when, source, loc + ("when",))
        roots = _roots(program, rule.when, source, loc + ("when",))
        if "forecast" in roots:
            _check_forecast_period(rule.when, budget.spec.period, source, loc + ("when",))
        if roots & {"forecast", "anomaly", "unit"}:
            _check_nested_fields(rule.when, source, loc + ("when",))
        if "unit" in roots and not budget.per_tenant:
            line, column = source.locate(loc + ("when",))
            raise RuleFileError(source.path, line, column,
                                f"rules.{i}.when: unit.* needs a budget per tenant ({budget.name!r} spans "
                                "tenants; outcomes join within a tenant)")
        if "anomaly" in roots and not budget.per_tenant:
            line, column = source.locate(loc + ("when",))
            raise RuleFileError(source.path, line, column,
                                f"rules.{i}.when: anomaly.* needs a budget per tenant ({budget.name!r} spans "
                                "tenants, whose instances keep no detectors)")
        guards, residual_text = extract_guards(rule.when)
        residual = _compile_cel(residual_text, source, loc + ("when",)) if residual_text else None
        residual_roots = frozenset(residual.variables()) if residual is not None else frozenset()
        compiled = CompiledRule(
            spec=rule,
            file=source.path,
            line=source.locate(loc)[0],
            program=program,
            guards=guards,
            residual=residual,
            residual_time_only=residual is not None and residual_roots <= TIME_ONLY_ROOTS,
            roots=roots,
            decide_tiers=_decide_tiers(rule, budget.spec, source, loc),
            clock_step_s=clock_step(rule.when, roots),
            residual_roots=residual_roots,
            keep_firing_s=_keep_firing(rule, source, loc),
            unit_reads=unit_fields_read(rule.when) if "unit" in roots else {},
        )
        budget.rules.append(compiled)
        if "anomaly" in roots:
            read = detectors_read(rule.when)
            budget.detectors |= read
            budget.read_cold |= read - warm_required(rule.when)
            budget.warm_gated = budget.detectors - budget.read_cold
        budget.reads_window = budget.reads_window or "window" in roots
        budget.reads_unit = budget.reads_unit or "unit" in roots
        budget.minute_resolution = all("unit" in r.roots and r.roots <= MINUTE_ROOTS for r in budget.rules)
        # minute buckets kept for window.* and for the detectors scored on the last 60 minutes
        budget.needs_window = budget.reads_window or bool(budget.detectors & {"spend", "unit_cost"})
        rules.append(compiled)

    default = tenants.pop("defaults", TenantSpec())
    digest = hashlib.sha256()
    for source in sorted(sources, key=lambda s: s.path):
        digest.update(orjson.dumps(source.model.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))
    return RuleSet(
        tenants=tenants,
        default_tenant=default,
        budgets=list(budgets.values()),
        rules=rules,
        version=digest.hexdigest()[:12],
        files=[s.path for s in sources],
        detector_params=detector_params,
        unit=unit_spec,
    )
