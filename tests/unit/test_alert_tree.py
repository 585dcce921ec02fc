"""The routing tree: matchers, Alertmanager's matching (inheritance, continue, fallback), group keys."""

from __future__ import annotations

import textwrap

import pytest

from spendwarden.streams.alerting.config import parse_routing
from spendwarden.streams.alerting.tree import Matcher, MatcherError, RoutingTree, compile_tree, group_key, group_labels

TREE = textwrap.dedent("""\
    route:
      receiver: default
      group_by: [tenant, rule]
      routes:
        - matchers: ["severity=~high|critical"]    # root/0
          receiver: pager
          group_wait: 10s
          continue: true
          routes:
            - matchers: [tenant=acme]               # root/0/0
              receiver: acme-pager
            - matchers: [team=billing]              # root/0/1: receiver inherited
        - matchers: [tenant=acme]                   # root/1
          receiver: acme
          group_by: ["..."]
          group_wait: 1m
        - matchers: ["env!=prod"]                   # root/2
          receiver: nonprod
        - matchers: ["model!~gpt-4.*", tenant=beta] # root/3
          receiver: cheap
    receivers:
      - name: default
      - name: pager
      - name: acme-pager
      - name: acme
      - name: nonprod
      - name: cheap
""")


@pytest.fixture(scope="module")
def tree() -> RoutingTree:
    return compile_tree(parse_routing(TREE.encode(), "tree.yaml"))


@pytest.mark.parametrize(("labels", "expected"), [
    # no child matches: the root itself
    ({"tenant": "zeta", "env": "prod"}, [("root", "default")]),
    # != matches a missing label (it is the empty string)
    ({"tenant": "zeta"}, [("root/2", "nonprod")]),
    # continue on root/0: its deepest match, then the next matching sibling, which stops the walk
    ({"severity": "high", "tenant": "acme", "env": "prod"}, [("root/0/0", "acme-pager"), ("root/1", "acme")]),
    # a child without receiver inherits its parent's
    ({"severity": "critical", "team": "billing", "tenant": "zeta", "env": "prod"}, [("root/0/1", "pager")]),
    # a route none of whose children match is the match
    ({"severity": "critical", "tenant": "zeta", "env": "prod"}, [("root/0", "pager")]),
    # regexes are anchored: "highest" and "not-high" are not high|critical
    ({"severity": "highest", "tenant": "zeta", "env": "prod"}, [("root", "default")]),
    ({"severity": "not-high", "tenant": "zeta", "env": "prod"}, [("root", "default")]),
    # the first matching child without continue stops its siblings (root/2 would match too)
    ({"tenant": "acme", "env": "staging"}, [("root/1", "acme")]),
    # !~ : an excluded model, another model, a missing model label ("" does not match gpt-4.*)
    ({"tenant": "beta", "env": "prod", "model": "gpt-4o"}, [("root", "default")]),
    ({"tenant": "beta", "env": "prod", "model": "claude-3"}, [("root/3", "cheap")]),
    ({"tenant": "beta", "env": "prod"}, [("root/3", "cheap")]),
    # all matchers of a route must hold
    ({"tenant": "gamma", "env": "prod", "model": "claude-3"}, [("root", "default")]),
])
def test_match(tree: RoutingTree, labels: dict[str, str], expected: list[tuple[str, str]]) -> None:
    assert [(r.path, r.receiver) for r in tree.match(labels)] == expected


@pytest.mark.parametrize(("path", "receiver", "group_by", "wait", "interval", "repeat", "all_labels"), [
    ("root", "default", ("tenant", "rule"), 30, 300, 14400, False),
    ("root/0", "pager", ("tenant", "rule"), 10, 300, 14400, False),
    ("root/0/0", "acme-pager", ("tenant", "rule"), 10, 300, 14400, False),
    ("root/0/1", "pager", ("tenant", "rule"), 10, 300, 14400, False),
    ("root/1", "acme", (), 60, 300, 14400, True),
    ("root/2", "nonprod", ("tenant", "rule"), 30, 300, 14400, False),
])
def test_inherited_settings(tree: RoutingTree, path: str, receiver: str, group_by: tuple[str, ...], wait: float,
                            interval: float, repeat: float, all_labels: bool) -> None:
    route = tree.route(path)
    assert route is not None
    assert (route.receiver, route.group_by, route.group_wait_s, route.group_interval_s, route.repeat_interval_s,
            route.group_by_all) == (receiver, group_by, wait, interval, repeat, all_labels)


def test_continue_is_not_inherited(tree: RoutingTree) -> None:
    assert tree.route("root/0").continue_matching  # type: ignore[union-attr]
    assert not tree.route("root/0/0").continue_matching  # type: ignore[union-attr]


def test_root_defaults_without_settings() -> None:
    config = parse_routing(b"route: {receiver: a}\nreceivers: [{name: a}]\n", "min.yaml")
    root = compile_tree(config).root
    assert (root.group_by, root.group_wait_s, root.group_interval_s, root.repeat_interval_s) == (
        ("alertname",), 30.0, 300.0, 14400.0)


def test_route_lines(tree: RoutingTree) -> None:
    assert [r.line for r in tree.routes()] == [2, 5, 10, 12, 13, 17, 19]


def test_group_key_readable_and_stable(tree: RoutingTree) -> None:
    root = tree.root
    labels = {"tenant": "acme", "rule": "daily-burn", "severity": "low"}
    assert group_key(root, labels) == 'root:{rule="daily-burn",tenant="acme"}'
    assert group_key(root, dict(reversed(list(labels.items())))) == group_key(root, labels)
    # labels outside group_by do not split groups; group_by values do
    assert group_key(root, {**labels, "severity": "high"}) == group_key(root, labels)
    assert group_key(root, {**labels, "tenant": "beta"}) != group_key(root, labels)
    assert group_key(root, {**labels, "rule": "other"}) != group_key(root, labels)
    # a group_by label the alert lacks is left out, not written empty
    assert group_labels(root, {"tenant": "acme"}) == {"tenant": "acme"}


def test_group_by_all(tree: RoutingTree) -> None:
    route = tree.route("root/1")
    assert route is not None
    labels = {"tenant": "acme", "rule": "r", "severity": "low"}
    assert group_labels(route, labels) == labels
    assert group_key(route, labels) == 'root/1:{rule="r",severity="low",tenant="acme"}'
    assert group_key(route, {**labels, "severity": "high"}) != group_key(route, labels)


def test_group_key_quotes_values() -> None:
    config = parse_routing(b"route: {receiver: a, group_by: [x]}\nreceivers: [{name: a}]\n", "q.yaml")
    root = compile_tree(config).root
    assert group_key(root, {"x": 'a"b,c'}) == 'root:{x="a\\"b,c"}'
    assert group_key(root, {"x": "a,b"}) != group_key(root, {"x": "a", "y": "b"})


@pytest.mark.parametrize(("text", "name", "op", "value"), [
    ("tenant=acme", "tenant", "=", "acme"),
    ("tenant = acme", "tenant", "=", "acme"),
    ('tenant="acme corp"', "tenant", "=", "acme corp"),
    ("tenant!=acme", "tenant", "!=", "acme"),
    ("severity=~high|critical", "severity", "=~", "high|critical"),
    ('severity!~"lo.*"', "severity", "!~", "lo.*"),
    ('note="a \\"quoted\\" word"', "note", "=", 'a "quoted" word'),
    ("empty=", "empty", "=", ""),
    ('x="a=b"', "x", "=", "a=b"),
])
def test_matcher_parse(text: str, name: str, op: str, value: str) -> None:
    matcher = Matcher.parse(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert Matcher.parse(str(matcher)) == matcher


@pytest.mark.parametrize("text", ["=acme", "1tenant=acme", "tenant", "tenant~acme", 'tenant="acme', "x=~(a",
                                  'x="a"b"'])
def test_matcher_rejects(text: str) -> None:
    with pytest.raises(MatcherError):
        Matcher.parse(text)


@pytest.mark.parametrize(("text", "labels", "hit"), [
    ("x=~a|b", {"x": "a"}, True),
    ("x=~a|b", {"x": "ab"}, False),
    ("x=~a.*", {"x": "abc\n"}, False),   # anchored at the very end, not before a trailing newline
    ("x=~.*", {}, True),                 # a missing label is ""
    ("x=~.+", {}, False),
    ("x!~.+", {}, True),
    ("x=", {}, True),
    ("x!=", {}, False),
    ("x!=a", {}, True),
])
def test_matcher_semantics(text: str, labels: dict[str, str], hit: bool) -> None:
    assert Matcher.parse(text).matches(labels) is hit
