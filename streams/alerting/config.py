"""The routing file: routes, inhibition rules and receivers, loaded with ``file:line:col`` errors.

Shaped like Alertmanager's configuration (routes with matchers, group_by, the three timers,
``continue``; inhibit_rules with source/target matchers and equal) so it reads the same way.
Parsed with the rule loader's YAML reader, which keeps every node's position and refuses
duplicate keys, so each error points at the line to fix. A bad edit while running is reported
and the last good configuration stays (``RoutingStore``), as with rule files.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator

from spendwarden.exceptions import ConfigError, RuleFileError
from spendwarden.rules.loader import Locate, locator, read_config_bytes, validate_yaml
from spendwarden.streams.alerting.receiver_config import Receiver
from spendwarden.streams.alerting.tree import GROUP_BY_ALL, LABEL_NAME, Matcher, MatcherError

# Alertmanager's duration syntax: units largest first, each at most once, whole numbers ("1h30m").
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS_S = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def parse_duration(text: Any) -> float:
    """``30s``, ``5m``, ``4h``, ``1d``, ``1h30m``, ``0`` in seconds; ValueError with an example otherwise."""
    if not isinstance(text, str) or isinstance(text, bool):
        raise ValueError("a duration is text with a unit, e.g. 30s, 5m, 4h or 1d")
    value = text.strip()
    if value == "0":
        return 0.0
    found = _DURATION.match(value)
    if not value or not found:
        raise ValueError(f"duration {text!r}: write a whole number and a unit ms, s, m, h, d, w or y, "
                         "largest unit first (e.g. 30s, 5m, 1h30m, 1d)")
    return sum(int(part) * size for part, size in zip(found.groups(), _UNITS_S) if part)


def _positive_duration(text: Any) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be more than 0")
    return seconds


def _matcher(text: str) -> str:
    try:
        Matcher.parse(text)
    except MatcherError as exc:
        raise ValueError(str(exc)) from None
    return text


def _label_name(name: str) -> str:
    if name != GROUP_BY_ALL and not LABEL_NAME.match(name):
        raise ValueError(f"label name {name!r}: a letter or _ then letters, digits, _ (or '...' alone in group_by)")
    return name


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
MatcherText = Annotated[str, AfterValidator(_matcher)]
LabelName = Annotated[str, AfterValidator(_label_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteSpec(_Strict):
    """One node of the routing tree as written; unset settings are inherited from the parent."""

    receiver: Optional[str] = None
    matchers: list[MatcherText] = Field(default_factory=list)
    group_by: Optional[list[LabelName]] = None
    group_wait: Optional[Duration] = None
    group_interval: Optional[PositiveDuration] = None
    repeat_interval: Optional[PositiveDuration] = None
    continue_: bool = Field(False, alias="continue")
    routes: list["RouteSpec"] = Field(default_factory=list)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, names: Optional[list[str]]) -> Optional[list[str]]:
        if names is None:
            return None
        if GROUP_BY_ALL in names and len(names) > 1:
            raise ValueError("'...' (group by all labels) must be the only entry of group_by")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"group_by names {', '.join(repeated)} more than once")
        return names


class InhibitRuleSpec(_Strict):
    """While an alert matching ``source_matchers`` fires, mute alerts matching ``target_matchers``
    that have the same values of the ``equal`` labels."""

    source_matchers: list[MatcherText] = Field(min_length=1)
    target_matchers: list[MatcherText] = Field(min_length=1)
    equal: list[LabelName] = Field(default_factory=list)


class RoutingConfig(_Strict):
    """A whole routing file. ``source``, ``version`` and ``route_lines`` say where it came from."""

    external_url: Optional[str] = Field(None, pattern=r"^https?://\S+$")
    route: RouteSpec
    inhibit_rules: list[InhibitRuleSpec] = Field(default_factory=list)
    receivers: list[Receiver] = Field(min_length=1)

    _source: str = PrivateAttr("(default)")
    _version: str = PrivateAttr("default")
    _route_lines: dict[str, int] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    @property
    def version(self) -> str:
        """Hash of the file's bytes: changes whenever the file does."""
        return self._version

    @property
    def route_lines(self) -> dict[str, int]:
        """Line of each route (by path: "root", "root/0", ...) in the file; empty for the default."""
        return dict(self._route_lines)

    def external_url_or(self, default: str) -> str:
        """The file's external_url, else ``default`` (the setting alerts_external_url)."""
        return (self.external_url or default).rstrip("/")

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


def default_routing() -> RoutingConfig:
    """What the router uses when no routing file is set: every alert to ``log``, which only logs."""
    return RoutingConfig(route=RouteSpec(receiver="log", group_by=["tenant", "rule"]),
                         receivers=[Receiver(name="log")])


def _route_paths(spec: RouteSpec, path: str, loc: tuple[Any, ...]) -> list[tuple[str, tuple[Any, ...], RouteSpec]]:
    out = [(path, loc, spec)]
    for index, child in enumerate(spec.routes):
        out.extend(_route_paths(child, f"{path}/{index}", (*loc, "routes", index)))
    return out


def _check(config: RoutingConfig, path: str, locate: Locate) -> dict[str, int]:
    """Checks across fields (names referenced, root rules); returns each route's line."""

    def fail(loc: tuple[Any, ...], message: str, key: bool = False) -> RuleFileError:
        line, column = locate(loc, key)
        return RuleFileError(path, line, column, message)

    root = config.route
    if root.receiver is None:
        raise fail(("route",), "route: the root route needs a receiver (where alerts no other route takes go)")
    if root.matchers:
        raise fail(("route", "matchers"), "route.matchers: the root route matches every alert; "
                   "put matchers on routes under it")
    if root.continue_:
        raise fail(("route", "continue"), "route.continue: the root route has no siblings to continue to")
    first: dict[str, int] = {}
    for index, receiver in enumerate(config.receivers):
        line = locate(("receivers", index, "name"))[0] or 0
        if receiver.name in first:
            raise fail(("receivers", index, "name"),
                       f"receivers.{index}.name: receiver {receiver.name!r} is defined twice "
                       f"(first at line {first[receiver.name]})")
        first[receiver.name] = line
    lines: dict[str, int] = {}
    for route_path, loc, spec in _route_paths(root, "root", ("route",)):
        lines[route_path] = locate(loc)[0] or 0
        if spec.receiver is not None and spec.receiver not in first:
            known = ", ".join(sorted(first))
            raise fail((*loc, "receiver"), f"route {route_path}: receiver {spec.receiver!r} is not defined "
                       f"in receivers (defined: {known})")
    return lines


def parse_routing(raw: bytes, path: str) -> RoutingConfig:
    """Validate a routing file's bytes; every error is a RuleFileError naming ``path:line:col``."""
    found = validate_yaml(raw, path, RoutingConfig, "with route and receivers")
    if found is None:
        raise RuleFileError(path, 1, None, "the routing file is empty: it needs route and receivers")
    config, root = found
    config._route_lines = _check(config, path, locator(root))
    config._source = path
    config._version = hashlib.sha256(raw).hexdigest()[:16]
    return config


def load_routing(path: str | os.PathLike[str]) -> RoutingConfig:
    """Load and check a routing file; RuleFileError with file:line:col, ConfigError if unreadable."""
    return parse_routing(read_config_bytes(path, "routing file"), str(path))


class RoutingStore:
    """The last good routing of a file (the default routing when ``path`` is None): a bad edit is
    reported by ``reload`` and the routing in use stays."""

    def __init__(self, path: Optional[str | os.PathLike[str]]) -> None:
        self.path = path
        self._current = load_routing(path) if path is not None else default_routing()

    @property
    def current(self) -> RoutingConfig:
        return self._current

    @property
    def version(self) -> str:
        return self._current.version

    def reload(self) -> RuleFileError | ConfigError | None:
        """Load again; on error keep the current routing and return the error, else swap and return None."""
        if self.path is None:
            return None
        try:
            fresh = load_routing(self.path)
        except (RuleFileError, ConfigError) as exc:
            return exc
        self._current = fresh
        return None

