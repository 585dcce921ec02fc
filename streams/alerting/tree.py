"""The routing tree: label matchers, routes with inherited settings, and Alertmanager's matching.

Pure, no I/O. Semantics follow Alertmanager (prometheus.io/docs/alerting/latest/configuration/)
so a person who knows its routing file reads ours the same way:

- a matcher is ``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex``; a regex is
  anchored (it must match the whole value) and a missing label is the empty string;
- a child route inherits receiver, group_by and the three timers from its parent unless it
  sets them; ``continue`` is not inherited;
- matching is depth first: the first matching child wins unless it says ``continue: true``,
  and a route none of whose children match is itself the match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Optional

if TYPE_CHECKING:
    from spendwarden.streams.alerting.config import RouteSpec, RoutingConfig
    from spendwarden.streams.alerting.receiver_config import Receiver

Op = Literal["=", "!=", "=~", "!~"]

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GROUP_BY_ALL = "..."
_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


class MatcherError(ValueError):
    """A matcher that does not parse; the message says what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition. ``str()`` gives text that parses back to an equal matcher."""

    name: str
    op: Op
    value: str
    _regex: Optional[re.Pattern[str]] = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> "Matcher":
        """``name=value``, ``name!=value``, ``name=~re``, ``name!~re``; the value may be "quoted"."""
        found = _MATCHER.match(text)
        if not found:
            raise MatcherError(f"matcher {text!r}: write name=value, name!=value, name=~regex or name!~regex "
                               "(the name a letter or _ then letters, digits, _)")
        name, op, value = found.group(1), found.group(2), found.group(3)
        if value.startswith('"') or value.endswith('"'):
            try:
                unquoted = json.loads(value) if len(value) >= 2 else None
            except ValueError:
                unquoted = None
            if not isinstance(unquoted, str):
                raise MatcherError(f"matcher {text!r}: the value's quotes do not pair up (write \"...\", "
                                   "with \\\" for a quote inside)")
            value = unquoted
        return cls.make(name, op, value)  # type: ignore[arg-type]

    @classmethod
    def make(cls, name: str, op: Op, value: str) -> "Matcher":
        """A matcher from its parts (the regex compiled once, here)."""
        if not LABEL_NAME.match(name):
            raise MatcherError(f"matcher label name {name!r}: a letter or _ then letters, digits, _")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})")
            except re.error as exc:
                raise MatcherError(f"matcher {name}{op}{value}: bad regex: {exc.msg}") from None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(value) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def format_labels(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}``, sorted by name: the stable text of a label set."""
    return "{" + ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items())) + "}"


def format_duration(seconds: float) -> str:
    """``90`` -> ``1m30s``: Alertmanager's way to write a duration."""
    if seconds == 0:
        return "0s"
    rest, out = seconds, ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count = int(rest // size)
        if count:
            out += f"{count}{unit}"
            rest -= count * size
    if rest > 1e-9:
        out += f"{round(rest * 1000)}ms"
    return out


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its settings resolved against its ancestors; ``path`` names it ("root/1/0")."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    group_by_all: bool
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    continue_matching: bool = False
    routes: tuple["CompiledRoute", ...] = ()
    line: Optional[int] = None

    def match(self, labels: Mapping[str, str]) -> list["CompiledRoute"]:
        """The routes an alert with ``labels`` reaches below (and including) this one; [] if none."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[CompiledRoute] = []
        for child in self.routes:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_matching:
                break
        return found or [self]

    def walk(self) -> Iterator["CompiledRoute"]:
        """This route and all below it, depth first in file order."""
        yield self
        for child in self.routes:
            yield from child.walk()


def group_labels(route: CompiledRoute, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that name an alert's group on ``route``: its group_by labels the alert has (all with ``...``)."""
    if route.group_by_all:
        return dict(labels)
    return {name: labels[name] for name in route.group_by if name in labels}


def group_key(route: CompiledRoute, labels: Mapping[str, str]) -> str:
    """Stable, readable id of an alert's group: ``root/0:{rule="x",tenant="acme"}``."""
    return f"{route.path}:{format_labels(group_labels(route, labels))}"


@dataclass(frozen=True, slots=True)
class RoutingTree:
    """A compiled routing file: the root route and the receivers by name."""

    root: CompiledRoute
    receivers: dict[str, "Receiver"]

    def match(self, labels: Mapping[str, str]) -> list[CompiledRoute]:
        """Alertmanager's answer for ``labels``; never empty (the root matches every alert)."""
        return self.root.match(labels)

    def routes(self) -> list[CompiledRoute]:
        return list(self.root.walk())

    def route(self, path: str) -> Optional[CompiledRoute]:
        return next((r for r in self.root.walk() if r.path == path), None)


@dataclass(frozen=True, slots=True)
class _Inherited:
    receiver: str
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float


def _compile(spec: "RouteSpec", path: str, parent: _Inherited, lines: Mapping[str, int]) -> CompiledRoute:
    own = _Inherited(
        receiver=spec.receiver if spec.receiver is not None else parent.receiver,
        group_by=tuple(spec.group_by) if spec.group_by is not None else parent.group_by,
        group_wait_s=spec.group_wait if spec.group_wait is not None else parent.group_wait_s,
        group_interval_s=spec.group_interval if spec.group_interval is not None else parent.group_interval_s,
        repeat_interval_s=spec.repeat_interval if spec.repeat_interval is not None else parent.repeat_interval_s,
    )
    children = tuple(_compile(child, f"{path}/{i}", own, lines) for i, child in enumerate(spec.routes))
    return CompiledRoute(
        path=path, receiver=own.receiver, matchers=tuple(Matcher.parse(m) for m in spec.matchers),
        group_by=tuple(n for n in own.group_by if n != GROUP_BY_ALL), group_by_all=GROUP_BY_ALL in own.group_by,
        group_wait_s=own.group_wait_s, group_interval_s=own.group_interval_s,
        repeat_interval_s=own.repeat_interval_s, continue_matching=spec.continue_, routes=children,
        line=lines.get(path),
    )


DEFAULT_GROUP_BY = ("alertname",)
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


def compile_tree(config: "RoutingConfig") -> RoutingTree:
    """The tree the router walks; ``config`` has been validated (load_routing or default_routing)."""
    root = config.route
    assert root.receiver is not None, "the root route needs a receiver (checked when loading)"
    defaults = _Inherited(root.receiver, DEFAULT_GROUP_BY, DEFAULT_GROUP_WAIT_S, DEFAULT_GROUP_INTERVAL_S,
                          DEFAULT_REPEAT_INTERVAL_S)
    return RoutingTree(root=_compile(root, "root", defaults, config.route_lines),
                       receivers={r.name: r for r in config.receivers})
