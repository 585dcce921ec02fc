"""The alert router as a real process on the embedded broker and a real Redis, delivering to
real HTTP receivers on localhost: grouping, signing, resolve, inhibition, silences, retries,
a receiver that is down, permanent refusals and a kill between a send and its record."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from harness import produce, read_topic
from router_harness import RecordingReceiver, RouterRun, verify_signature

from spendwarden.embedded import TopicSpec, create_topics

pytestmark = pytest.mark.integration

HMAC_KEY = "test-hmac-key-0123456789"
ROUTING = """
route:
  receiver: hook
  group_by: [tenant, rule]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - matchers: [tenant=flaky]
      receiver: flaky
    - matchers: [tenant=gone]
      receiver: gone
inhibit_rules:
  - source_matchers: [decision=block]
    target_matchers: [decision!=block]
    equal: [tenant, use_case]
receivers:
  - name: hook
    webhook: [{url: {env: SW_TEST_HOOK_URL}, hmac_key: {env: SW_TEST_HMAC_KEY}}]
  - name: flaky
    webhook: [{url: {env: SW_TEST_FLAKY_URL}}]
  - name: gone
    webhook: [{url: {env: SW_TEST_GONE_URL}}]
"""


def firing(fp: str, tenant: str, rule: str = "daily-burn", use_case: str = "chat", action: str | None = None) -> dict[str, Any]:
    decision = {"level": "block", "action": action, "rule": rule} if action else None
    return {
        "kind": "alert_firing", "fingerprint": fp, "rule": rule, "severity": "high",
        "summary": f"{rule} for {tenant}/{use_case}", "tenant_id": tenant, "scope": {"use_case_id": use_case},
        "budget": "uc-daily", "period": "day", "period_id": "2026-11-30", "period_end": "2026-12-01T00:00:00Z",
        "spend_usd": "101.000000", "limit_usd": "100.000000", "used_ratio": 1.01, "expected_usd": "42.000000",
        "contributors": {"model": [["gpt-4o", "90.0"]]}, "sample_trace_ids": ["trace-1"], "notify": [],
        "runbook": "https://runbooks.example/uc-cap", "decision": decision, "shadow": False,
        "rules_version": "v1", "rule_file": "rules/rules.yaml", "rule_line": 9, "at": "2026-11-30T10:00:00Z",
        "labels": {},
    }


def resolved(fp: str, tenant: str, rule: str = "daily-burn") -> dict[str, Any]:
    return {"kind": "alert_resolved", "fingerprint": fp, "rule": rule, "tenant_id": tenant,
            "scope": {"use_case_id": "chat"}, "budget": "uc-daily", "period_id": "2026-11-30",
            "reason": "cleared", "at": "2026-11-30T11:00:00Z"}


def send(bootstrap: str, topic: str, records: list[dict[str, Any]]) -> None:
    produce(bootstrap, topic, [(r["fingerprint"].encode(), orjson.dumps(r)) for r in records])


@pytest.fixture
def deployment(broker: str, redis_url: str, topic_names: Callable[..., dict[str, str]], tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Any:
    """A router deployment and its three receivers; the routing file names them through env."""
    import asyncio

    topics = topic_names("alerts", "dead")
    asyncio.run(create_topics(broker, [TopicSpec(name, 4) for name in topics.values()]))
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING)
    receivers = {"hook": RecordingReceiver(), "flaky": RecordingReceiver(), "gone": RecordingReceiver(lambda n: 404)}
    run = RouterRun(broker, redis_url, topics, routing, tmp_path / "data", tmp_path / "router.log", extra_env={
        "SW_TEST_HOOK_URL": receivers["hook"].url, "SW_TEST_FLAKY_URL": receivers["flaky"].url,
        "SW_TEST_GONE_URL": receivers["gone"].url, "SW_TEST_HMAC_KEY": HMAC_KEY})
    yield run, receivers
    run.kill()
    for receiver in receivers.values():
        receiver.close()


def alerts_of(request: Any) -> list[dict[str, Any]]:
    return request.json["alerts"]


def test_grouping_signing_resolve_inhibition_and_silences(deployment: Any, broker: str, redis_url: str) -> None:
    run, receivers = deployment
    hook = receivers["hook"]
    run.start()
    run.wait_ready()
    # 20 alerts of one group arrive as one signed message
    send(broker, run.topics["alerts"], [firing(f"a{i:02d}", "acme", use_case=f"uc{i}") for i in range(20)])
    hook.wait(lambda r: len(r.accepted()) >= 1, what="the grouped notification")
    time.sleep(3)  # a second message would have come by now (group_interval 2s)
    assert len(hook.accepted()) == 1
    first = hook.accepted()[0]
    assert verify_signature(first, HMAC_KEY.encode())
    assert not verify_signature(type(first)(first.path, first.headers, first.body + b" ", 200), HMAC_KEY.encode())
    body = first.json
    assert body["status"] == "firing" and body["receiver"] == "hook"
    assert body["groupLabels"] == {"rule": "daily-burn", "tenant": "acme"}
    assert sorted(a["fingerprint"] for a in body["alerts"]) == [f"a{i:02d}" for i in range(20)]
    assert first.headers["Idempotency-Key"]

    # the condition clears: each alert is reported resolved once (in one message, or a few when the
    # resolutions straddle a group_interval), and the last message says the group resolved
    send(broker, run.topics["alerts"], [resolved(f"a{i:02d}", "acme") for i in range(20)])

    def resolutions(r: Any) -> list[str]:
        return [a["fingerprint"] for q in r.accepted()[1:] for a in alerts_of(q) if a["status"] == "resolved"]
    hook.wait(lambda r: len(set(resolutions(r))) == 20, what="the resolved notifications")
    assert sorted(resolutions(hook)) == [f"a{i:02d}" for i in range(20)]
    assert hook.accepted()[-1].json["status"] == "resolved" and len(hook.accepted()) <= 3

    # a scope's block alert mutes its burn alert; a silence mutes a tenant; a later marker alert proves both held
    from spendwarden.redis_client import redis_target, sync_client
    from spendwarden.settings import load_settings
    from spendwarden.streams.alerting.silences import SilenceStore

    client = sync_client(redis_target(load_settings(redis_url=redis_url)), timeout_s=5)
    SilenceStore(client).add(["tenant=quiet"], 3600, "maintenance", "test")
    send(broker, run.topics["alerts"], [firing("b-block", "shop", rule="hard-cap", action="block"),
                                        firing("b-burn", "shop", rule="daily-burn"),
                                        firing("q-1", "quiet")])
    time.sleep(4)
    send(broker, run.topics["alerts"], [firing("marker", "marker")])
    hook.wait(lambda r: any(a["fingerprint"] == "marker" for q in r.accepted() for a in alerts_of(q)),
              what="the marker alert")
    seen = {a["fingerprint"] for q in hook.accepted() for a in alerts_of(q)}
    assert "b-block" in seen
    assert "b-burn" not in seen, "the block alert of the scope should mute its burn alert"
    assert "q-1" not in seen, "the silence should mute tenant quiet"
    assert "spendwarden_alerts_muted_total" in run.metrics()

    # the links of a notification lead somewhere: the alert's evidence, and how to silence its group
    import urllib.parse
    import urllib.request

    from harness import http

    status, page = http(run.port, "/alerts/b-block/")
    assert status == 200 and page["labels"]["tenant"] == "shop" and page["evidence"]["sample_trace_ids"] == ["trace-1"]
    assert http(run.port, "/alerts/a00/")[0] == 404  # resolved
    query = urllib.parse.quote('{rule="daily-burn",tenant="acme"}')
    with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/silences/new?matchers={query}", timeout=5) as response:
        text = response.read().decode()
    assert "spendwarden silence add 'rule=\"daily-burn\"' 'tenant=\"acme\"' --for 2h" in text


def test_retries_until_2xx_and_dead_letters_a_permanent_refusal(deployment: Any, broker: str) -> None:
    run, receivers = deployment
    flaky = receivers["flaky"]
    flaky.answer = lambda n: 500 if n < 3 else 200
    run.start()
    run.wait_ready()
    produce(broker, run.topics["alerts"], [(b"x", b"not json"),
                                           (b"y", orjson.dumps(firing("bad-time", "flaky") | {"at": "yesterday"}))])
    send(broker, run.topics["alerts"], [firing("f-1", "flaky"), firing("g-1", "gone")])
    flaky.wait(lambda r: len(r.accepted()) >= 1, what="the notification after three 500s")
    time.sleep(2)
    assert [r.status for r in flaky.requests] == [500, 500, 500, 200]
    assert len({r.headers["Idempotency-Key"] for r in flaky.requests}) == 1
    assert [a["fingerprint"] for a in alerts_of(flaky.requests[-1])] == ["f-1"]
    dead = {d["reason"]: d for d in read_topic(broker, run.topics["dead"], expect=3)}
    assert set(dead) == {"decode", "invalid", "notification_refused"}
    assert "not json" in dead["decode"]["raw"] and "at" in dead["invalid"]["detail"]
    refused = dead["notification_refused"]
    assert refused["receiver"] == "gone" and "404" in refused["detail"]
    assert receivers["gone"].url not in orjson.dumps(refused).decode()  # a receiver URL is a secret
    assert len(receivers["gone"].requests) == 1  # refused for good: not retried
    log = run.log_path.read_text()
    assert "flaky" in log and all(r.url not in log and f":{r.port}" not in log for r in receivers.values())


def test_a_receiver_down_while_100_alerts_fire_gets_all_100_when_it_returns(deployment: Any, broker: str) -> None:
    run, receivers = deployment
    hook = receivers["hook"]
    down = threading.Event()
    down.set()
    hook.answer = lambda n: 503 if down.is_set() else 200
    run.start()
    run.wait_ready()
    send(broker, run.topics["alerts"], [firing(f"d{i:03d}", f"tenant{i:03d}") for i in range(100)])
    hook.wait(lambda r: len(r.requests) >= 5, what="attempts while down")
    time.sleep(2)
    assert hook.accepted() == []
    down.clear()
    hook.wait(lambda r: len(r.accepted()) >= 100, timeout_s=90, what="all 100 notifications")
    time.sleep(2)
    delivered = [a["fingerprint"] for q in hook.accepted() for a in alerts_of(q)]
    assert sorted(delivered) == [f"d{i:03d}" for i in range(100)]  # every one, once
    assert len({q.headers["Idempotency-Key"] for q in hook.accepted()}) == 100


def test_a_router_killed_between_send_and_record_resends_with_the_same_idempotency_key(
        deployment: Any, broker: str) -> None:
    run, receivers = deployment
    hook = receivers["hook"]
    hook.hold_s = 30.0  # the first request is recorded, its answer never reaches the router
    run.start()
    run.wait_ready()
    send(broker, run.topics["alerts"], [firing(f"k{i}", "acme", use_case=f"uc{i}") for i in range(3)])
    hook.wait(lambda r: len(r.requests) >= 1, what="the first attempt")
    run.kill()
    hook.hold_s = 0.0
    run.start()
    run.wait_ready()
    hook.wait(lambda r: len(r.requests) >= 2, timeout_s=90, what="the resend after the restart")
    time.sleep(3)
    keys = {r.headers["Idempotency-Key"] for r in hook.requests}
    assert len(keys) == 1, "a resend must carry the same idempotency key"
    assert len(hook.requests) == 2  # at most one duplicate
    assert sorted(a["fingerprint"] for a in alerts_of(hook.requests[-1])) == ["k0", "k1", "k2"]


def test_restarts_neither_resend_what_was_delivered_nor_lose_where_alerts_went(deployment: Any, broker: str) -> None:
    """Fire, deliver, kill -9, restart (nothing re-sent), resolve (the resolution finds its group),
    kill -9 and restart again (still nothing re-sent)."""
    run, receivers = deployment
    hook = receivers["hook"]
    run.start()
    run.wait_ready()
    send(broker, run.topics["alerts"], [firing("r1", "acme", use_case="a"), firing("r2", "acme", use_case="b")])
    hook.wait(lambda r: len(r.accepted()) >= 1, what="the firing notification")
    time.sleep(1.5)
    run.kill()
    run.start()
    run.wait_ready()
    time.sleep(4)
    assert len(hook.requests) == 1, "a delivered notification must not be sent again after a restart"
    send(broker, run.topics["alerts"], [resolved("r1", "acme"), resolved("r2", "acme")])

    def resolved_ones(r: Any) -> set[str]:  # the two may land in one notification or in two
        return {a["fingerprint"] for q in r.accepted()[1:] for a in alerts_of(q) if a["status"] == "resolved"}
    hook.wait(lambda r: resolved_ones(r) == {"r1", "r2"}, what="both resolutions after a restart")
    assert hook.accepted()[-1].json["status"] == "resolved"
    sent = len(hook.requests)
    assert sent <= 3 and len({q.headers["Idempotency-Key"] for q in hook.requests}) == sent
    time.sleep(1.5)
    run.kill()
    run.start()
    run.wait_ready()
    time.sleep(4)
    assert len(hook.requests) == sent


def test_two_routers_share_the_groups_and_each_notification_is_sent_once(
        deployment: Any, broker: str, redis_url: str) -> None:
    """Exactly one sender per group with several routers: the group topic's partitions are split
    between the two processes of one consumer group, and every group is notified once."""
    from dataclasses import replace as clone

    from spendwarden.embedded import free_port

    run, receivers = deployment
    hook = receivers["hook"]
    other = clone(run, port=free_port(), log_path=run.log_path.with_name("router-2.log"),
                  data_dir=run.data_dir.with_name("data-2"), process=None)
    run.start()
    other.start()
    try:
        run.wait_ready()
        other.wait_ready()
        time.sleep(3)  # both in the group, partitions split
        send(broker, run.topics["alerts"], [firing(f"t{i:02d}", f"tenant{i:02d}") for i in range(20)])
        hook.wait(lambda r: len(r.accepted()) >= 20, what="20 notifications")
        time.sleep(3)
        delivered = sorted(a["fingerprint"] for q in hook.accepted() for a in alerts_of(q))
        assert delivered == [f"t{i:02d}" for i in range(20)]  # each group once, by one of the two
        owners = [b"router partitions recovered" in path.read_bytes() for path in (run.log_path, other.log_path)]
        assert all(owners)
        groups = [orjson.loads(urlopen_json(r.port))["groups"] for r in (run, other)]
        assert sum(groups) == 20 and min(groups) > 0, groups  # both own some groups
    finally:
        other.kill()


def urlopen_json(port: int) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        return response.read()
