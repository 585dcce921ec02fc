"""The router's logic without Kafka: routing records to groups, flushing into the outbox,
what is persisted and in which order, and reading recovered state back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from spendwarden.streams.alerting.config import parse_routing
from spendwarden.streams.alerting.model import alert_from_firing
from spendwarden.streams.alerting.receiver_config import destination_id
from spendwarden.streams.alerting.router_app import split_matchers
from spendwarden.streams.alerting.router_core import GroupBook, merge_routed, resolution_of, route_firing
from spendwarden.streams.alerting.router_store import MARKER, recovered
from spendwarden.streams.alerting.tree import compile_tree
from spendwarden.streams.checkpoint import encode_key, encode_value

ROUTING = b"""
route:
  receiver: chat
  group_by: [tenant]
  group_wait: 10s
  group_interval: 1m
  repeat_interval: 1h
  routes:
    - matchers: ["severity=~high|critical"]
      receiver: pager
      group_by: [tenant, rule]
      continue: true
    - matchers: [tenant=acme]
      receiver: acme
receivers:
  - name: chat
    webhook: [{url: {env: CHAT_URL}}, {url: {env: CHAT_BACKUP_URL}}]
  - name: pager
    pagerduty: [{routing_key: {env: PD_KEY}}]
  - name: acme
    webhook: [{url: {env: ACME_URL}}]
"""
T0 = 1_800_000_000.0


def record(fp: str, tenant: str = "acme", severity: str = "high", **extra: Any) -> dict[str, Any]:
    base = {"kind": "alert_firing", "fingerprint": fp, "rule": "daily-burn", "severity": severity,
            "summary": "s", "tenant_id": tenant, "scope": {"use_case_id": "chat"}, "budget": "b", "period": "day",
            "period_id": "2026-11-30", "period_end": "2026-12-01T00:00:00Z", "spend_usd": "1", "limit_usd": "2",
            "used_ratio": 0.5, "expected_usd": "1", "contributors": {}, "sample_trace_ids": [], "notify": [],
            "runbook": None, "decision": None, "shadow": False, "rules_version": "v", "rule_file": "r.yaml",
            "rule_line": 3, "at": "2026-11-30T10:00:00Z", "labels": {}}
    base.update(extra)
    return base


@pytest.fixture
def tree() -> Any:
    return compile_tree(parse_routing(ROUTING, "routing.yaml"))


def test_a_firing_record_goes_to_one_group_per_matched_route(tree: Any) -> None:
    routed = route_firing(record("f1"), tree, "https://sw.example/")
    assert [(r.route, r.receiver, r.group_labels) for r in routed] == [
        ("root/0", "pager", {"tenant": "acme", "rule": "daily-burn"}),
        ("root/1", "acme", {"tenant": "acme"})]
    assert routed[0].timers.group_wait_s == 10 and routed[0].timers.repeat_interval_s == 3600
    assert routed[0].alert.generator_url == "https://sw.example/alerts/f1"
    assert len({r.group_key for r in routed}) == 2


def test_a_record_without_a_usable_time_is_refused(tree: Any) -> None:
    with pytest.raises(ValueError):
        alert_from_firing(record("f1", at="yesterday"))
    with pytest.raises(KeyError):
        route_firing({k: v for k, v in record("f1").items() if k != "rule"}, tree, "https://sw.example")


def test_a_repeated_firing_after_a_routing_edit_keeps_the_earlier_groups(tree: Any) -> None:
    before = route_firing(record("f1"), tree, "x")
    after = route_firing(record("f1", severity="low"), tree, "x")  # only the acme route now
    merged = merge_routed(before, after)
    assert sorted(r.route for r in merged) == ["root/0", "root/1"]
    resolutions = resolution_of({"at": "2026-11-30T11:00:00Z"}, merged)
    assert {r.alert.status for r in resolutions} == {"resolved"}
    assert {r.alert.ends_at for r in resolutions} == {"2026-11-30T11:00:00Z"}


def test_a_flush_makes_one_outbox_entry_per_destination_persisted_before_the_group(tree: Any) -> None:
    config = parse_routing(ROUTING, "routing.yaml")
    ids = {r.name: [destination_id(d) for d in r.destinations()] for r in config.receivers}
    book = GroupBook()
    routed = route_firing(record("f1", tenant="shop", severity="low"), tree, "x")  # root only: receiver chat
    assert [r.receiver for r in routed] == ["chat"]
    changes = book.apply(2, routed[0], T0)
    assert [(p, k[0]) for p, k, _ in changes] == [(2, "group")]
    assert book.flush(T0 + 5, lambda a: False, ids.__getitem__)[0] == []  # group_wait not over
    pending, changes, made = book.flush(T0 + 10, lambda a: False, ids.__getitem__)
    assert [(p, e.dest) for p, e in pending] == [(2, ids["chat"][0]), (2, ids["chat"][1])]
    assert [k[0] for _, k, _ in changes] == ["outbox", "outbox", "group"]  # the entries land first
    assert len(made) == 1 and made[0].alerts[0].fingerprint == "f1"
    resolution = resolution_of({"at": "2026-11-30T11:00:00Z"}, routed)[0]
    book.apply(2, resolution, T0 + 20)
    _, changes, made = book.flush(T0 + 70, lambda a: False, ids.__getitem__)
    assert made[0].status == "resolved"
    assert changes[-1] == (2, ("group", routed[0].group_key), None)  # the ended group is deleted
    assert len(book) == 0


def test_destination_ids_survive_reordering_and_ignore_secret_values() -> None:
    config = parse_routing(ROUTING, "routing.yaml")
    chat = next(r for r in config.receivers if r.name == "chat")
    first, second = (destination_id(d) for d in chat.destinations())
    reordered = parse_routing(ROUTING.replace(b"{url: {env: CHAT_URL}}, {url: {env: CHAT_BACKUP_URL}}",
                                              b"{url: {env: CHAT_BACKUP_URL}}, {url: {env: CHAT_URL}}"), "r.yaml")
    chat2 = next(r for r in reordered.receivers if r.name == "chat")
    assert [destination_id(d) for d in chat2.destinations()] == [second, first]


def test_recovered_state_reads_raw_and_decoded_keys_and_skips_markers_and_tombstones() -> None:
    items = [
        (encode_key(1, ("group", "g1")), encode_value({"key": "g1"})),
        ([1, "routed", "fp1"], [{"group_key": "g1"}]),  # as Faust's changelog reader hands them back
        (encode_key(1, MARKER), encode_value({"at": 1})),
        (encode_key(1, ("outbox", "x")), None),
        (encode_key(3, ("group", "g3")), encode_value({"key": "g3"})),
    ]
    found = recovered(items, {1})
    assert found == {1: {"group": [("g1", {"key": "g1"})], "routed": [("fp1", [{"group_key": "g1"}])]}}
    assert orjson.loads(encode_key(1, ("group", "g1"))) == [1, "group", "g1"]


def test_silence_links_split_matchers_at_commas_outside_quotes() -> None:
    assert split_matchers('rule="daily-burn",tenant=~"a,b"') == ['rule="daily-burn"', 'tenant=~"a,b"']
    assert split_matchers("") == []
