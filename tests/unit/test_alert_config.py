"""The routing file loader: a good file, each kind of bad file at its file:line, the last good config kept."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from spendwarden.exceptions import ConfigError, RuleFileError
from spendwarden.streams.alerting.config import (
    RoutingStore, default_routing, load_routing, parse_duration, parse_routing,
)
from spendwarden.streams.alerting.receiver_config import PagerDutyReceiver, SlackReceiver
from spendwarden.streams.alerting.tree import compile_tree

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "routing.example.yaml"

GOOD = textwrap.dedent("""\
    external_url: https://spendwarden.example.com
    route:
      receiver: finops-slack
      group_by: [tenant, rule]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - matchers: ["severity=~high|critical"]
          receiver: pager
          continue: true
        - matchers: [tenant=acme]
          receiver: finops-slack
          group_by: ["..."]
    inhibit_rules:
      - source_matchers: [decision=block]
        target_matchers: [decision!=block]
        equal: [tenant, use_case, budget]
    receivers:
      - name: finops-slack
        slack: [{webhook_url: {env: SLACK_FINOPS_URL}}]
      - name: pager
        pagerduty: [{routing_key: {file: /run/secrets/pd}}]
""")


def write(tmp_path: Path, text: str, name: str = "routing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, GOOD))
    assert config.external_url_or("http://localhost:6066") == "https://spendwarden.example.com"
    assert [r.name for r in config.receivers] == ["finops-slack", "pager"]
    assert isinstance(config.receiver("finops-slack").destinations()[0], SlackReceiver)
    assert isinstance(config.receiver("pager").destinations()[0], PagerDutyReceiver)
    assert config.route.routes[0].continue_ is True
    assert config.route.group_interval == 300 and config.route.repeat_interval == 4 * 3600
    assert config.inhibit_rules[0].equal == ["tenant", "use_case", "budget"]
    assert config.route_lines == {"root": 3, "root/0": 9, "root/1": 12}
    assert config.source.endswith("routing.yaml") and len(config.version) == 16


def test_external_url_defaults_to_the_setting(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, GOOD.replace("external_url: https://spendwarden.example.com\n", "")))
    assert config.external_url is None
    assert config.external_url_or("http://sw.internal:6066/") == "http://sw.internal:6066"


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    # a route names a receiver that is not defined: at that route's receiver
    ("      receiver: pager\n", "      receiver: pagr\n", 10, "receiver 'pagr' is not defined"),
    # the root's receiver too
    ("  receiver: finops-slack\n", "  receiver: nobody\n", 3, "receiver 'nobody' is not defined"),
    ("  group_wait: 30s\n", "  group_wait: 30 seconds\n", 5, "duration '30 seconds'"),
    ("  group_wait: 30s\n", "  group_wait: 30\n", 5, "a duration is text with a unit"),
    ("  repeat_interval: 4h\n", "  repeat_interval: 0s\n", 7, "must be more than 0"),
    ('["severity=~high|critical"]', '["severity=~(high|critical"]', 9, "bad regex"),
    ("[tenant=acme]", "[tenant==acme]", 12, None),  # '=acme' is fine as a value; see the next case
    ("[tenant=acme]", "['1tenant=acme']", 12, "matcher '1tenant=acme'"),
    ("      continue: true\n", "      continue: true\n      recevier: x\n", 12, "recevier: Extra inputs"),
    ("external_url:", "externl_url:", 1, "externl_url: Extra inputs"),
    ("[tenant=acme]", "[tenant=acme", 13, "YAML"),
    ("  - name: pager\n", "  - name: finops-slack\n", 22, "receiver 'finops-slack' is defined twice (first at line 20)"),
    ("    equal: [tenant", "    equal: [tenant-id", 18, "label name 'tenant-id'"),
    ("  group_by: [tenant, rule]", "  group_by: [tenant, '...']", 4, "must be the only entry"),
    ("      receiver: pager\n", "      receiver: pager\n      routes: [{receiver: ghost}]\n", 11,
     "route root/0/0: receiver 'ghost'"),
    ("route:\n", "route:\n  matchers: [tenant=acme]\n", 3, "the root route matches every alert"),
    ("  receiver: finops-slack\n", "", 3, "the root route needs a receiver"),
    ("    slack: [{webhook_url: {env: SLACK_FINOPS_URL}}]", "    slack: [{webhook_url: SLACK_FINOPS_URL}]",
     21, "receivers.0.slack.0.webhook_url"),
])
def test_bad_file_points_at_the_line(tmp_path: Path, old: str, new: str, line: int, words: str | None) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    if words is None:  # the control case: it must load, so the next one fails for the right reason
        load_routing(path)
        return
    with pytest.raises(RuleFileError) as caught:
        load_routing(path)
    assert caught.value.path == str(path)
    assert caught.value.line == line, str(caught.value)
    assert words in caught.value.message
    assert str(caught.value).startswith(f"{path}:{line}:")


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="empty"):
        load_routing(write(tmp_path, "# nothing\n"))
    with pytest.raises(RuleFileError, match="top level must be a mapping"):
        load_routing(write(tmp_path, "- a\n"))
    with pytest.raises(RuleFileError, match="route: Field required"):
        load_routing(write(tmp_path, "receivers: [{name: a}]\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read routing file"):
        load_routing(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("1w", 604800), ("1h30m", 5400), ("0", 0),
    ("0s", 0), ("500ms", 0.5), ("1y", 365 * 86400),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "1.5h", "-5m", "30m1h", "m", "5 m", "five minutes"])
def test_durations_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_store_keeps_last_good_config(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    store = RoutingStore(path)
    first = store.current
    path.write_text(GOOD.replace("receiver: pager", "receiver: ghost"))
    error = store.reload()
    assert isinstance(error, RuleFileError) and "ghost" in error.message
    assert store.current is first and store.version == first.version
    path.write_text(GOOD.replace("group_wait: 30s", "group_wait: 45s"))
    assert store.reload() is None
    assert store.current.route.group_wait == 45 and store.version != first.version
    path.unlink()
    assert isinstance(store.reload(), ConfigError)
    assert store.current.route.group_wait == 45


def test_store_without_file_uses_default() -> None:
    store = RoutingStore(None)
    assert store.current.route.receiver == "log"
    assert store.reload() is None


def test_default_routing_only_logs() -> None:
    config = default_routing()
    tree = compile_tree(config)
    assert [r.name for r in config.receivers] == ["log"]
    assert tree.receivers["log"].destinations() == []
    assert tree.root.group_by == ("tenant", "rule")
    assert [(r.path, r.receiver) for r in tree.match({"tenant": "acme", "rule": "x"})] == [("root", "log")]


def test_example_file_loads() -> None:
    config = load_routing(EXAMPLE)
    kinds = {type(d).__name__ for r in config.receivers for d in r.destinations()}
    assert kinds == {"SlackReceiver", "WebhookReceiver", "PagerDutyReceiver", "AlertmanagerReceiver"}
    assert any(d.hmac_key is not None for r in config.receivers for d in r.webhook)
    assert len(config.route.routes) >= 3
    rule = config.inhibit_rules[0]
    assert (rule.source_matchers, rule.target_matchers) == (["decision=block"], ["decision!=block"])
    tree = compile_tree(config)
    paged = [r.receiver for r in tree.match({"tenant": "acme", "severity": "critical", "rule": "x"})]
    assert paged[0] == "pager" and len(paged) == 2


def test_parse_routing_from_bytes() -> None:
    config = parse_routing(GOOD.encode(), "inline.yaml")
    assert config.source == "inline.yaml"
