"""Group lifecycle on a controlled clock: grouping, group_wait/interval, repeat, resolve, muting."""

from __future__ import annotations

from typing import Any

from spendwarden.streams.alerting.groups import AlertGroup, Timers
from spendwarden.streams.alerting.model import Alert, Notification, alert_from_firing
from spendwarden.streams.alerting.outbox import Outbox, Pending

T0 = 1_800_000_000.0
TIMERS = Timers(group_wait_s=30, group_interval_s=300, repeat_interval_s=3600)


def firing_record(n: int, tenant: str = "acme", rule: str = "daily-burn", **extra: Any) -> dict[str, Any]:
    record = {
        "kind": "alert_firing", "fingerprint": f"fp{n:04d}", "rule": rule, "severity": "high",
        "summary": "daily budget at 95%", "tenant_id": tenant, "scope": {"use_case_id": f"uc{n}"},
        "budget": "use-case-daily", "period": "day", "period_id": "2026-11-30", "period_end": "2026-12-01T00:00:00Z",
        "spend_usd": "95.000000", "limit_usd": "100.000000", "used_ratio": 0.95, "expected_usd": "60.000000",
        "contributors": {"model": [["gpt-4o", "80.0"]]}, "sample_trace_ids": ["t1"], "notify": ["finops"],
        "runbook": "https://runbooks.example/daily-burn", "decision": None, "shadow": False,
        "rules_version": "v1", "rule_file": "rules/ladder.yaml", "rule_line": 12, "at": "2026-11-30T10:00:00Z",
        "labels": {"team": "search"},
    }
    record.update(extra)
    return record


def firing(n: int, **extra: Any) -> Alert:
    return alert_from_firing(firing_record(n, **extra))


def resolved(n: int, at: str = "2026-11-30T11:00:00Z") -> Alert:
    alert = firing(n)
    alert.status, alert.ends_at = "resolved", at
    return alert


def new_group() -> AlertGroup:
    return AlertGroup(key='root/0:{tenant="acme"}', route="root/0", receiver="finops",
                      group_labels={"tenant": "acme"}, timers=TIMERS)


def run_until(group: AlertGroup, end: float, step: float = 1.0, start: float = T0,
              muted: Any = lambda a: False) -> list[tuple[float, Notification]]:
    sent = []
    now = start
    while now <= end:
        if group.due(now):
            found = group.flush(now, muted)
            if found is not None:
                sent.append((now, found))
        now += step
    return sent


def test_twenty_alerts_of_one_group_make_one_notification_after_group_wait() -> None:
    group = new_group()
    for n in range(20):
        group.add(firing(n), T0 + n * 0.5)  # all within the group_wait
    assert not group.due(T0 + 29)
    sent = run_until(group, T0 + 299)
    assert len(sent) == 1
    at, notification = sent[0]
    assert at == T0 + 30
    assert notification.status == "firing"
    assert sorted(a.fingerprint for a in notification.alerts) == [f"fp{n:04d}" for n in range(20)]


def test_a_new_alert_waits_for_the_group_interval_then_repeats_only_after_repeat_interval() -> None:
    group = new_group()
    group.add(firing(1), T0)
    first = run_until(group, T0 + 100)
    assert [at for at, _ in first] == [T0 + 30]
    group.add(firing(2), T0 + 100)
    second = run_until(group, T0 + 3000, start=T0 + 101)
    assert [at for at, _ in second] == [T0 + 330]  # the next group_interval tick, not at once
    assert {a.fingerprint for a in second[0][1].alerts} == {"fp0001", "fp0002"}
    # nothing changed: silence until repeat_interval after the last notification
    repeats = run_until(group, T0 + 330 + 3600 + 300, start=T0 + 3001)
    assert len(repeats) == 1
    at, notification = repeats[0]
    assert T0 + 330 + 3600 <= at <= T0 + 330 + 3600 + 300
    assert notification.sequence == 3
    assert notification.status == "firing"


def test_a_repeated_firing_record_is_not_news() -> None:
    group = new_group()
    group.add(firing(1), T0)
    run_until(group, T0 + 40)
    assert group.add(firing(1), T0 + 50) is False
    assert run_until(group, T0 + 3000, start=T0 + 41) == []


def test_resolution_is_sent_once_then_the_group_ends() -> None:
    group = new_group()
    group.add(firing(1), T0)
    group.add(firing(2), T0)
    run_until(group, T0 + 40)
    group.add(resolved(1), T0 + 60)
    sent = run_until(group, T0 + 400, start=T0 + 41)
    assert len(sent) == 1
    notification = sent[0][1]
    assert notification.status == "firing"  # fp0002 still fires
    assert {a.fingerprint: a.status for a in notification.alerts} == {"fp0002": "firing", "fp0001": "resolved"}
    group.add(resolved(2), T0 + 500)
    last = run_until(group, T0 + 1000, start=T0 + 401)
    assert len(last) == 1 and last[0][1].status == "resolved"
    assert [a.fingerprint for a in last[0][1].alerts] == ["fp0002"]
    assert group.empty and not group.due(T0 + 10_000)


def test_an_alert_resolved_before_anyone_was_told_is_never_sent() -> None:
    group = new_group()
    group.add(firing(1), T0)
    group.add(resolved(1), T0 + 10)
    assert run_until(group, T0 + 400) == []
    assert group.empty


def test_a_resolution_of_an_unknown_alert_is_ignored() -> None:
    group = new_group()
    assert group.add(resolved(7), T0) is False
    assert group.empty and not group.due(T0 + 100)


def test_muted_alerts_are_left_out_and_an_all_muted_group_sends_nothing() -> None:
    group = new_group()
    group.add(firing(1), T0)
    group.add(firing(2), T0)
    sent = run_until(group, T0 + 40, muted=lambda a: a.fingerprint == "fp0001")
    assert [a.fingerprint for a in sent[0][1].alerts] == ["fp0002"]
    quiet = new_group()
    quiet.add(firing(3), T0)
    assert run_until(quiet, T0 + 7200, muted=lambda a: True) == []
    # the silence ends: the alert is news now
    assert [at for at, _ in run_until(quiet, T0 + 7200 + 300, start=T0 + 7201)] != []


def test_the_state_survives_a_json_round_trip_mid_life() -> None:
    group = new_group()
    group.add(firing(1), T0)
    run_until(group, T0 + 40)
    group.add(firing(2), T0 + 50)
    restored = AlertGroup.from_dict(group.to_dict())
    assert run_until(restored, T0 + 400, start=T0 + 41)[0][1].sequence == run_until(group, T0 + 400, start=T0 + 41)[0][1].sequence
    assert restored.to_dict() == group.to_dict()


def test_idempotency_key_is_stable_for_one_notification_and_differs_per_sequence() -> None:
    group = new_group()
    group.add(firing(1), T0)
    first = run_until(group, T0 + 40)[0][1]
    again = Notification.from_dict(first.to_dict())
    assert again.idempotency_key == first.idempotency_key
    group.add(firing(2), T0 + 50)
    second = run_until(group, T0 + 400, start=T0 + 41)[0][1]
    assert second.idempotency_key != first.idempotency_key


def _pending(group: str, seq: int, created: float, receiver: str = "hook", dest: str = "d0") -> Pending:
    return Pending(Notification(receiver, group, {}, [firing(seq)], seq, created), dest)


def test_outbox_keeps_each_destination_in_order_and_backs_off_a_failing_one() -> None:
    box = Outbox(backoff=lambda failures, retry_after: retry_after or 10.0 * 2 ** failures)
    box.add(_pending("g1", 2, T0 + 5))
    box.add(_pending("g1", 1, T0))
    box.add(_pending("g2", 1, T0 + 1, receiver="pager"))
    queues = box.queues(T0 + 10)
    assert [[p.notification.sequence for p in q] for q in queues] == [[1, 2], [1]]
    head = queues[0][0]
    assert box.retry(head, T0 + 10, "500") == 10.0
    assert [q[0].notification.receiver for q in box.queues(T0 + 15)] == ["pager"]
    assert box.retry(head, T0 + 20, "429", retry_after_s=60.0) == 60.0
    assert [q[0].notification.receiver for q in box.queues(T0 + 79)] == ["pager"]
    assert [p.notification.sequence for p in box.queues(T0 + 80)[0]] == [1, 2]
    assert head.attempts == 2
    box.sent(head)
    hook = {q[0].notification.receiver: q for q in box.queues(T0 + 81)}["hook"]
    assert [p.notification.sequence for p in hook] == [2]
    assert box.retry(hook[0], T0 + 81, "503") == 10.0  # backoff starts over after a success
    box.failed(hook[0])
    assert [q[0].notification.receiver for q in box.queues(T0 + 100)] == ["pager"]
    assert box.oldest_age(T0 + 101) == 100


def test_a_group_that_ends_and_forms_again_does_not_reuse_an_idempotency_key() -> None:
    group = new_group()
    group.add(firing(1), T0)
    first = run_until(group, T0 + 40)[0][1]
    group.add(resolved(1), T0 + 50)
    run_until(group, T0 + 400, start=T0 + 41)
    assert group.empty
    again = new_group()  # the router makes a new group for the same key
    again.add(firing(1, at="2026-11-30T12:00:00Z"), T0 + 500)
    second = run_until(again, T0 + 540, start=T0 + 500)[0][1]
    assert second.sequence == first.sequence == 1
    assert second.idempotency_key != first.idempotency_key
