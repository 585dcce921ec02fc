"""Load rule files from disk with line and column for every error, lint them, keep the last good set.

Why not ``yaml.safe_load``: it forgets where values came from and silently keeps the last of
duplicate keys. We compose the node tree first (every node has a start mark), check it, then
build plain data from it, so a pydantic or compiler error can point at ``file:line:col``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spendwarden.exceptions import ConfigError, RuleFileError
from spendwarden.rules.compiler import RuleSet, SourceFile, compile_ruleset
from spendwarden.rules.schema import RuleFile

YAML_SUFFIXES = (".yaml", ".yml")
_GOT_MAX = 60

Locate = Callable[..., tuple[int | None, int | None]]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _walk(root: yaml.Node, loc: tuple[Any, ...], key: bool = False) -> tuple[yaml.Node, tuple[Any, ...]]:
    """The deepest node reached by ``loc`` and the steps that matched the file.

    A string step met on a sequence or scalar is a pydantic union tag (``str``, ``list[str]``)
    and is skipped; ``[key]`` marks a dict-key error. ``key`` stops on the last mapping key.
    """
    steps = loc[:-1] if loc and loc[-1] == "[key]" else loc
    key = key or len(steps) < len(loc)
    node, walked = root, []
    for index, step in enumerate(steps):
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(step):
                    found = key_node if key and index == len(steps) - 1 else value_node
                    break
        elif isinstance(step, str):
            continue
        elif isinstance(node, yaml.SequenceNode) and 0 <= step < len(node.value):
            found = node.value[step]
        if found is None:
            break
        node = found
        walked.append(step)
    return node, tuple(walked)


def _check_duplicates(root: yaml.Node, path: str) -> None:
    """Refuse a mapping that repeats a key: PyYAML would silently keep the last one."""
    seen_nodes: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    first = keys.get(key_node.value)
                    if first is not None:
                        line, column = _mark(key_node)
                        raise RuleFileError(
                            path, line, column,
                            f"duplicate key {key_node.value!r} (first at line {_mark(first)[0]})",
                        )
                    keys[key_node.value] = key_node
                stack.extend((key_node, value_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def parse_yaml(raw: bytes, path: str) -> tuple[Any, yaml.Node | None]:
    """Plain data of one YAML document and its node tree (None for an empty file)."""
    loader = yaml.SafeLoader(raw)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_duplicates(root, path)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise RuleFileError(path, line, column, f"YAML: {problem}") from None
    except yaml.YAMLError as exc:  # reader errors: bad encoding or control characters
        raise RuleFileError(path, None, None, f"YAML: {exc}") from None
    finally:
        loader.dispose()

    return data, root


def read_config_bytes(file: str | os.PathLike[str], what: str) -> bytes:
    """A configuration file's bytes; ConfigError in one line when it cannot be read."""
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file}: {exc.strerror or exc}") from None


M = TypeVar("M", bound=BaseModel)


def validate_yaml(raw: bytes, path: str, model: type[M], shape: str) -> tuple[M, yaml.Node] | None:
    """One YAML mapping validated into ``model``; None for an empty file (the caller decides what
    that means). Every error is a RuleFileError naming ``path:line:col``; ``shape`` says what the
    top level must hold."""
    data, root = parse_yaml(raw, path)
    if data is None or root is None:
        return None
    if not isinstance(data, dict):
        raise RuleFileError(path, 1, None, f"top level must be a mapping {shape}, not {type(data).__name__}")
    try:
        return model.model_validate(data), root
    except ValidationError as exc:
        raise _validation_error(exc, path, root) from None


def locator(root: yaml.Node | None) -> Locate:
    """``locate(loc, key=False)``: 1-based line/column of the deepest node ``loc`` reaches."""

    def locate(loc: tuple[Any, ...], key: bool = False) -> tuple[int | None, int | None]:
        return _mark(_walk(root, tuple(loc), key)[0]) if root is not None else (None, None)

    return locate


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _GOT_MAX else text[: _GOT_MAX - 3] + "..."


def _validation_error(exc: ValidationError, path: str, root: yaml.Node) -> RuleFileError:
    """The first pydantic error as file:line:col with the field path, pydantic's text and the input.

    Of a union's alternatives (same place in the file) the deepest is kept: ``[low, 3]`` is
    reported at item 1, not as "should be a valid string".
    """
    errors = exc.errors(include_url=False)
    walks = [_walk(root, tuple(e["loc"]), e["type"] == "extra_forbidden") for e in errors]
    first = walks[0][1]
    best = max(
        (i for i, (_, steps) in enumerate(walks) if steps[: len(first)] == first),
        key=lambda i: (len(walks[i][1]), -i),
    )
    error, (node, steps) = errors[best], walks[best]
    line, column = _mark(node)
    message = error["msg"].removeprefix("Value error, ")
    dotted = ".".join(str(step) for step in steps) or "top level"
    if error["type"] == "missing":
        return RuleFileError(path, line, column, f"{dotted}.{error['loc'][-1]}: {message}")
    return RuleFileError(path, line, column, f"{dotted}: {message} (got {_short(error.get('input'))})")


def read_source(file: str | os.PathLike[str]) -> SourceFile:
    """Parse and validate one rule file (not yet compiled or merged)."""
    path = str(file)
    raw = read_config_bytes(file, "rule file")
    found = validate_yaml(raw, path, RuleFile, "with tenants/budgets/rules")
    model, root = found if found is not None else (RuleFile(), yaml.MappingNode("tag:yaml.org,2002:map", []))
    return SourceFile(path=path, model=model, locate=locator(root), raw=raw)


def rule_files(path: str | os.PathLike[str]) -> list[Path]:
    """The YAML files a path stands for: the file itself, or a directory's own *.yaml/*.yml by name."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"rules path {root} does not exist")
    if not root.is_dir():
        return [root]
    # Not recursive: subdirectories hold rule tests and packs. Dotfiles are editor leftovers.
    files = sorted(
        (p for p in root.iterdir() if p.is_file() and p.suffix in YAML_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not files:
        raise ConfigError(f"rules directory {root} has no *.yaml or *.yml files")
    return files


def _load(path: str | os.PathLike[str]) -> tuple[list[SourceFile], RuleSet]:
    sources = [read_source(file) for file in rule_files(path)]
    return sources, compile_ruleset(sources)


def load_ruleset(path: str | os.PathLike[str]) -> RuleSet:
    """Load, validate and compile a rules directory or file; errors name file:line:col."""
    return _load(path)[1]


@dataclass(frozen=True, slots=True)
class LintMessage:
    severity: Literal["error", "warning", "info"]
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.severity}: {self.message}"


def lint(path: str | os.PathLike[str]) -> list[LintMessage]:
    """Problems that do not stop loading but cost CPU or hint at a mistake; one error if it fails."""
    try:
        sources, ruleset = _load(path)
    except RuleFileError as exc:
        return [LintMessage("error", exc.path, exc.line, exc.message)]
    except ConfigError as exc:
        return [LintMessage("error", str(path), None, str(exc))]
    messages: list[LintMessage] = []
    for rule in ruleset.rules:
        if not rule.guards:
            messages.append(LintMessage(
                "warning", rule.file, rule.line,
                f"rule {rule.name} has no numeric guard term, so CEL runs on every event touching budget "
                f"{rule.spec.budget}; add a top-level `&& budget.used_ratio >= ...` term if you can",
            ))
        if rule.spec.mode == "shadow" and rule.spec.decide is not None:
            messages.append(LintMessage(
                "info", rule.file, rule.line, f"rule {rule.name}: shadow: decisions are reported, not published"
            ))
    by_path = {source.path: source for source in sources}
    for budget in ruleset.budgets:
        if not budget.rules:
            source = by_path[budget.file]
            index = next(i for i, b in enumerate(source.model.budgets) if b.name == budget.name)
            messages.append(LintMessage(
                "warning", budget.file, source.locate(("budgets", index))[0],
                f"budget {budget.name} is not used by any rule; it is counted but never alerts",
            ))
    messages.sort(key=lambda m: (m.file, m.line or 0))
    return messages


class RuleStore:
    """The last good RuleSet of a path: a bad edit is reported and the running rules stay."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._current = load_ruleset(path)

    @property
    def current(self) -> RuleSet:
        return self._current

    @property
    def version(self) -> str:
        return self._current.version

    def reload(self) -> RuleFileError | ConfigError | None:
        """Load again; on error keep the current set and return the error, else swap and return None."""
        try:
            fresh = load_ruleset(self.path)
        except (RuleFileError, ConfigError) as exc:
            return exc
        self._current = fresh
        return None
