"""Rule tests in the spirit of ``promtool test rules``: fixture events in, expected alerts out.

Why: a rule that never fires, or fires on high-risk traffic, is only caught by running it.
Each ``*.test.yaml`` (in a ``tests/`` directory beside the rules) lists cases of cost events
that go through the real ingest path (validate + price) into a fresh Engine, then states the
alerts firing at the end, the verdict per gateway field, and rules that fired on the way.
The file format is the ``TestFile`` model below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from spendwarden.exceptions import ConfigError, RejectedEvent, RuleFileError
from spendwarden.rules.compiler import RuleSet
from spendwarden.rules.loader import Locate, load_ruleset, locator, parse_yaml
from spendwarden.rules.schema import Level
from spendwarden.streams.effects import AlertFiring
from spendwarden.streams.engine import Engine, position
from spendwarden.streams.events import CostEvent, Outcome
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

TEST_SUFFIX = ".test.yaml"
_INTERVAL = r"^[1-9][0-9]*[smhd]$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FixtureLine(BaseModel):
    """Record fields plus ``repeat``/``interval`` to write bursts in one line. The record models
    ignore unknown keys; in a fixture a typo (`tenant:`) must not pass silently."""

    model_config = ConfigDict(extra="allow")
    _known: ClassVar[frozenset[str]]
    _what: ClassVar[tuple[str, str]]  # (item, record kind) for the error message

    repeat: int = Field(default=1, ge=1, le=100_000)
    interval: Optional[str] = Field(default=None, pattern=_INTERVAL)

    @model_validator(mode="after")
    def _known_fields(self) -> "_FixtureLine":
        unknown = sorted(set(self.model_extra or {}) - self._known)
        if unknown:
            item, kind = self._what
            raise ValueError(f"unknown {item} field {unknown[0]!r} ({kind} fields: {', '.join(sorted(self._known))})")
        if self.repeat > 1 and self.interval is None:
            raise ValueError("repeat needs an interval such as 30s, 5m, 1h or 1d")
        return self


class FixtureEvent(_FixtureLine):
    """A cost event (CostEvent fields) plus ``repeat``/``interval``."""

    _known = frozenset(CostEvent.model_fields)
    _what = ("event", "cost event")


class FixtureOutcome(_FixtureLine):
    """A business outcome (Outcome fields) plus ``repeat``/``interval``, like a fixture event."""

    _known = frozenset(Outcome.model_fields)
    _what = ("outcome", "outcome")


class FiringExpectation(_Strict):
    """A firing alert: the rule and a subset of its scope (``{}`` matches any scope)."""

    rule: str
    scope: dict[str, str] = Field(default_factory=dict)


class TestCase(_Strict):
    __test__ = False  # not a pytest class

    name: str = Field(min_length=1)
    events: list[FixtureEvent] = Field(default_factory=list)
    outcomes: list[FixtureOutcome] = Field(default_factory=list)
    advance_to: Optional[AwareDatetime] = None
    expect_firing: Optional[list[FiringExpectation]] = None
    expect_decisions: Optional[dict[str, dict[str, Level]]] = None
    expect_fired: Optional[list[str]] = None

    @model_validator(mode="after")
    def _expects_something(self) -> "TestCase":
        if self.expect_firing is None and self.expect_decisions is None and self.expect_fired is None:
            raise ValueError("a test needs expect_firing, expect_decisions or expect_fired")
        return self


class TestFile(_Strict):
    __test__ = False

    rules: Optional[str] = None
    tests: list[TestCase] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "TestFile":
        names = [case.name for case in self.tests]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"test name {twice[0]!r} is used twice")
        return self


@dataclass
class TestResult:
    """Outcome of one test case; ``problems`` are sentences a rule author can act on."""

    __test__ = False

    file: str
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"{'PASS' if self.passed else 'FAIL'} {self.file}: {self.name}"
        return "\n".join([head, *(f"  - {problem}" for problem in self.problems)])


def _scope_text(scope: dict[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(scope.items())) + "}"


def _parse_ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None  # Ingest.validate reports it with the field name


def expand(event: FixtureEvent | FixtureOutcome, default_id: str, id_field: str = "cost_event_id"
           ) -> Iterator[dict[str, Any]]:
    """The raw objects of one fixture line: ``repeat`` copies stepping ``interval``.

    Copies get ids ``<id or default_id>-<i>`` (i from 0), a single line without an id gets
    ``default_id``. In text values ``{i}`` becomes the copy's number, so copies can name their
    own traces (``trace_id: case-{i}``) for outcomes to join.
    """
    raw = dict(event.model_extra or {})
    base_id = str(raw.get(id_field) or default_id)
    if event.repeat == 1:
        yield {**_numbered(raw, 0), id_field: base_id.replace("{i}", "0")}
        return
    numbered_id = "{i}" in base_id  # `case-{i}` names each copy itself, no suffix
    step = timedelta(seconds=int(event.interval[:-1]) * _UNIT_S[event.interval[-1]])  # type: ignore[index]
    start = _parse_ts(raw.get("ts"))
    for i in range(event.repeat):
        times = {} if start is None else {"ts": (start + i * step).isoformat()}
        yield {**_numbered(raw, i), **times,
               id_field: base_id.replace("{i}", str(i)) if numbered_id else f"{base_id}-{i}"}


def _numbered(raw: dict[str, Any], i: int) -> dict[str, Any]:
    return {k: v.replace("{i}", str(i)) if isinstance(v, str) else v for k, v in raw.items()}


def _in_time_order(events: list[FixtureEvent], outcomes: list[FixtureOutcome] = ()  # type: ignore[assignment]
                   ) -> list[tuple[int, dict[str, Any]]]:
    """Every fixture line's events (then outcomes, marked ``_outcome``) with the line's index, in
    time order: lines that write two streams (hits every 20 minutes from 00:00, misses from
    00:10) interleave as a gateway would send them. The sort is stable, so records at the same
    instant keep the file's order, events before outcomes; when a record has no readable ``ts``
    the file's order is kept (validation reports the bad field)."""
    expanded = [(index, obj) for index, event in enumerate(events) for obj in expand(event, f"event{index}")]
    expanded += [(index, {**obj, "_outcome": True}) for index, outcome in enumerate(outcomes)
                 for obj in expand(outcome, f"outcome{index}", "business_outcome_id")]
    times = [_parse_ts(obj.get("ts")) for _, obj in expanded]
    if any(t is None or t.tzinfo is None for t in times):
        return expanded
    order = sorted(range(len(expanded)), key=times.__getitem__)
    return [expanded[i] for i in order]


def _firing(engine: Engine) -> list[tuple[str, dict[str, str]]]:
    found = [(key[2], dict(value["scope"])) for key, value in engine.state.items() if key[0] == "fire"]
    return sorted(found, key=lambda item: (item[0], sorted(item[1].items())))


def _check_firing(expected: list[FiringExpectation], engine: Engine, rule_names: set[str]) -> list[str]:
    """Exact set: every expectation matches its own firing alert, and nothing else fires."""
    firing = _firing(engine)
    listing = "[" + ", ".join(f"{rule} {_scope_text(scope)}" for rule, scope in firing) + "]"
    left = list(firing)
    problems = []
    # Most specific first, so a broad expectation cannot take the alert a narrow one needs.
    for want in sorted(expected, key=lambda w: -len(w.scope)):
        match = next((item for item in left if item[0] == want.rule
                      and all(item[1].get(k) == v for k, v in want.scope.items())), None)
        if match is not None:
            left.remove(match)
        elif want.rule not in rule_names:
            problems.append(f"expected firing {want.rule} {_scope_text(want.scope)} but there is no rule "
                            f"{want.rule} in the rule set; firing: {listing}")
        else:
            problems.append(f"expected firing {want.rule} {_scope_text(want.scope)} but it is not firing; "
                            f"firing: {listing}")
    problems.extend(f"unexpected firing {rule} {_scope_text(scope)}" for rule, scope in left)
    return problems


def _check_decisions(expected: dict[str, dict[str, str]], engine: Engine) -> list[str]:
    """Exact verdict levels per tenant; L0 and absent are the same, unlisted tenants must be L0."""
    tenants = set(expected) | {key[1] for key in engine.state if key[0] == "verdicts"}
    problems = []
    for tenant in sorted(tenants):
        actual = {name: verdict["level"] for name, verdict in engine.verdicts(tenant).items()}
        want = expected.get(tenant, {})
        for name in sorted(set(actual) | set(want)):
            got, wanted = actual.get(name, "L0"), want.get(name, "L0")
            if got != wanted:
                problems.append(f"decision {tenant} {name}: expected {wanted}, got {got}")
    return problems


def run_case(case: TestCase, ruleset: RuleSet, ingest: Ingest, where: str) -> list[str]:
    """Problems of one test case against a loaded rule set (empty list: passed)."""
    engine = Engine(ruleset)
    fired: set[str] = set()
    count = 0
    for index, obj in _in_time_order(case.events, case.outcomes):
        if obj.pop("_outcome", False):
            try:
                outcome = Outcome.model_validate(obj)
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                return [f"{where}: outcomes[{index}] {obj.get('business_outcome_id')}: "
                        f"{'.'.join(map(str, error['loc']))}: {error['msg']}"]
            effects = engine.process_outcome(outcome, position(count))
            count += 1
            fired.update(e.rule for e in effects if isinstance(e, AlertFiring))
            continue
        try:
            priced = ingest.price(ingest.validate(obj))
        except RejectedEvent as exc:
            return [f"{where}: events[{index}] {obj.get('cost_event_id')}: {exc.reason}: {exc.detail}"]
        effects = engine.process(priced, position(count))
        count += 1
        fired.update(e.rule for e in effects if isinstance(e, AlertFiring))
    # What a busy last minute left for the next tick (the engine evaluates rules reading only
    # unit.* once a minute), evaluated now as the live service's tick would.
    fired.update(e.rule for e in engine.catch_up() if isinstance(e, AlertFiring))
    if case.advance_to is not None:
        effects = engine.advance(case.advance_to.timestamp())
        fired.update(e.rule for e in effects if isinstance(e, AlertFiring))
    names = {rule.name for rule in ruleset.rules}
    problems = [f"rule {name} failed to evaluate {n} time(s) (CEL runtime error)"
                for name, n in sorted(engine.stats.rule_errors.items())]
    if case.expect_firing is not None:
        problems += _check_firing(case.expect_firing, engine, names)
    if case.expect_decisions is not None:
        problems += _check_decisions(case.expect_decisions, engine)
    for name in case.expect_fired or ():
        if name not in fired:
            what = "there is no such rule" if name not in names else "it never fired"
            problems.append(f"expected {name} to fire during the test, but {what}; fired: {sorted(fired)}")
    return problems


def _schema_error(exc: ValidationError, path: str, locate: Locate) -> str:
    error = exc.errors(include_url=False)[0]
    line, column = locate(tuple(error["loc"]), error["type"] == "extra_forbidden")
    dotted = ".".join(map(str, error["loc"])) or "top level"
    return f"{path}:{line}:{column}: {dotted}: {error['msg'].removeprefix('Value error, ')}"


def load_test_file(path: Path) -> tuple[TestFile, Locate]:
    """Parse and validate a test file; ConfigError naming ``file:line:col`` when it is wrong."""
    try:
        data, root = parse_yaml(path.read_bytes(), str(path))
    except RuleFileError as exc:
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read test file {path}: {exc.strerror or exc}") from None
    locate = locator(root)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: top level must be a mapping with `tests:`")
    try:
        return TestFile.model_validate(data), locate
    except ValidationError as exc:
        raise ConfigError(_schema_error(exc, str(path), locate)) from None


def run_test_file(path: Path, ingest: Ingest, cache: dict[Path, RuleSet] | None = None) -> list[TestResult]:
    """Results of every case in one test file (one failed result when the file or rules are bad)."""
    cache = {} if cache is None else cache
    try:
        spec, locate = load_test_file(path)
        default = path.parent.parent if path.parent.name == "tests" else path.parent
        rules = (path.parent / spec.rules).resolve() if spec.rules else default.resolve()
        if rules not in cache:
            cache[rules] = load_ruleset(rules)
    except (ConfigError, RuleFileError) as exc:
        return [TestResult(str(path), "(test file)", False, [str(exc)])]
    results = []
    for index, case in enumerate(spec.tests):
        line = locate(("tests", index))[0]
        problems = run_case(case, cache[rules], ingest, f"{path}:{line}")
        results.append(TestResult(str(path), case.name, not problems, problems))
    return results


def find_test_files(path: Path) -> list[Path]:
    """``dir/tests/*.test.yaml`` of a rules directory, recursing into subdirectories (packs)."""
    if path.is_file():
        return [path]
    tests = path / "tests"
    found = sorted(tests.glob(f"*{TEST_SUFFIX}")) if tests.is_dir() else []
    for sub in sorted(path.iterdir()):
        if sub.is_dir() and sub.name != "tests" and not sub.name.startswith("."):
            found += find_test_files(sub)
    return found


def run_rule_tests(path: str | Path, pricebook: Pricebook | None = None) -> list[TestResult]:
    """Run the rule tests of a rules directory, a pack root or one test file."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"rule tests path {root} does not exist")
    files = find_test_files(root)
    if not files:
        raise ConfigError(f"no *{TEST_SUFFIX} files under {root} (expected them in a tests/ directory)")
    ingest = Ingest(pricebook or Pricebook.default())
    cache: dict[Path, RuleSet] = {}
    return [result for file in files for result in run_test_file(file, ingest, cache)]
