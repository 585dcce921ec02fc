"""Receiver payloads (webhook, Slack, PagerDuty, Alertmanager), the HMAC scheme and the retry backoff."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import orjson
import pytest

from spendwarden.streams.alerting import payloads
from spendwarden.streams.alerting.delivery import RETRY_AFTER_MAX_S, backoff_delay, parse_retry_after
from spendwarden.streams.alerting.model import Alert, Notification, alert_from_firing

EXTERNAL = "https://spendwarden.example.com"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def firing_record(i: int = 0, *, tenant: str = "acme", severity: str = "high", rule: str = "daily-burn",
                  decision: dict[str, Any] | None = None, runbook: str | None = "https://runbooks.example.com/burn",
                  **extra: Any) -> dict[str, Any]:
    """An ``alert_firing`` record as the worker writes it (streams/effects.py AlertFiring)."""
    record = {
        "kind": "alert_firing", "fingerprint": f"{i:016x}", "rule": rule, "severity": severity,
        "summary": f"drafting ({'day'} 2026-01-15) at 82% of its limit #{i}", "tenant_id": tenant,
        "scope": {"use_case_id": f"drafting-{i}", "risk_tier": "low"}, "budget": "drafting-daily",
        "period": "day", "period_id": "2026-01-15", "period_end": "2026-01-16T05:00:00.000Z",
        "spend_usd": "123.456", "limit_usd": "150", "used_ratio": 0.82304, "expected_usd": "81.25",
        "contributors": {"models": [["gpt-4o", "100.5"], ["gpt-4o-mini", "20"], ["o3", "2.9"], ["tiny", "0.05"]],
                         "workflow_steps": [["draft", "110"], ["review", "13.456"]]},
        "sample_trace_ids": ["trace-aaa", "trace-bbb", "trace-ccc", "trace-ddd", "trace-eee"],
        "notify": ["oncall"], "runbook": runbook, "decision": decision, "shadow": False,
        "rules_version": "v7", "rule_file": "rules/acme.yaml", "rule_line": 12,
        "at": "2026-01-15T15:30:00.000Z", "labels": {"team": "ai-platform"}, "anomaly": None,
    }
    record.update(extra)
    return record


DEGRADE = {"level": "degrade", "action": "degrade", "model_alias": "gpt-4o-mini", "reason": "r", "rule": "daily-burn",
           "rules_version": "v7", "expires_at": "2026-01-16T05:00:00.000Z", "since": "2026-01-15T15:30:00.000Z"}


def notification(alerts: list[Alert], group_labels: dict[str, str] | None = None) -> Notification:
    return Notification(receiver="oncall", group_key='{}:{tenant="acme"}', group_labels=group_labels or {"tenant": "acme"},
                        alerts=alerts, sequence=3, created_at=1768491000.0)


def one(**kw: Any) -> Notification:
    return notification([alert_from_firing(firing_record(**kw), generator_url=f"{EXTERNAL}/alerts/x")])


def resolved(alert: Alert, at: str = "2026-01-15T16:00:00.000Z") -> Alert:
    alert.status, alert.ends_at = "resolved", at
    return alert


# ---------------------------------------------------------------------------- webhook

def test_webhook_body_has_every_alertmanager_field_with_its_type() -> None:
    n = notification([alert_from_firing(firing_record(0)), resolved(alert_from_firing(firing_record(1)))])
    body = orjson.loads(orjson.dumps(payloads.webhook_body(n, EXTERNAL)))
    assert body["version"] == "4" and body["groupKey"] == n.group_key and body["truncatedAlerts"] == 0
    assert body["status"] == "firing" and body["receiver"] == "oncall" and body["externalURL"] == EXTERNAL
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        assert isinstance(body[key], dict) and all(isinstance(v, str) for v in body[key].values())
    assert body["commonLabels"]["tenant"] == "acme" and "use_case" not in body["commonLabels"]
    assert len(body["alerts"]) == 2
    for alert in body["alerts"]:
        assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
        assert all(isinstance(alert[k], str) for k in ("status", "startsAt", "endsAt", "generatorURL", "fingerprint"))
        assert RFC3339.match(alert["startsAt"]) and RFC3339.match(alert["endsAt"])
    first, second = body["alerts"]
    assert first["status"] == "firing" and first["endsAt"] == "0001-01-01T00:00:00Z"
    assert second["status"] == "resolved" and second["endsAt"] == "2026-01-15T16:00:00.000Z"
    assert first["labels"]["alertname"] == "daily-burn" and first["annotations"]["runbook_url"].startswith("https://")


def test_webhook_body_truncates_to_max_alerts_but_keeps_the_group_status() -> None:
    alerts = [resolved(alert_from_firing(firing_record(i))) for i in range(4)]
    alerts.append(alert_from_firing(firing_record(9)))
    body = payloads.webhook_body(notification(alerts), EXTERNAL, max_alerts=2)
    assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == 3 and body["status"] == "firing"
    assert payloads.webhook_body(notification(alerts[:4]), EXTERNAL)["status"] == "resolved"


def test_signature_verifies_independently_and_tampering_fails() -> None:
    key, body = b"k3y-for-tests", orjson.dumps(payloads.webhook_body(one(), EXTERNAL))
    headers = payloads.signature_headers(key, body, now=1768491000.7)
    timestamp = headers["X-Spendwarden-Timestamp"]
    assert timestamp == "1768491000"
    scheme, _, digest = headers["X-Spendwarden-Signature"].partition("=")

    def expected(ts: str, raw: bytes) -> str:  # the documented scheme, recomputed here
        return hmac.new(key, ts.encode() + b"." + raw, hashlib.sha256).hexdigest()

    assert scheme == "sha256" and hmac.compare_digest(digest, expected(timestamp, body))
    assert not hmac.compare_digest(digest, expected(timestamp, body.replace(b"acme", b"acmf")))
    assert not hmac.compare_digest(digest, expected("1768491001", body))
    assert payloads.sign(b"other key", timestamp, body) != digest


# ---------------------------------------------------------------------------- Slack

def _check_block_kit(message: dict[str, Any]) -> None:
    """The structural rules and limits Slack refuses a message for."""
    assert isinstance(message["text"], str) and message["text"]
    blocks = message["blocks"]
    assert blocks[0]["type"] == "header" and blocks[-1]["type"] == "actions" and len(blocks) <= 50
    for block in blocks:
        kind = block["type"]
        assert kind in {"header", "section", "divider", "context", "actions"}
        if kind == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        elif kind == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in {"mrkdwn", "plain_text"} and 0 < len(block["text"]["text"]) <= 3000
            for f in block.get("fields", []):
                assert f["type"] in {"mrkdwn", "plain_text"} and 0 < len(f["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        elif kind == "context":  # one line saying receiver, counts and notification number
            assert [e["type"] for e in block["elements"]] == ["mrkdwn"] and "receiver" in block["elements"][0]["text"]
        elif kind == "actions":
            assert 1 <= len(block["elements"]) <= 25
            ids = [b["action_id"] for b in block["elements"]]
            assert len(ids) == len(set(ids))
            for button in block["elements"]:
                assert button["type"] == "button" and button["text"]["type"] == "plain_text"
                assert len(button["text"]["text"]) <= 75
                assert button["url"].startswith("http") and len(button["url"]) <= 3000


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    actions = [b for b in message["blocks"] if b["type"] == "actions"]
    return {b["text"]["text"]: b["url"] for b in actions[0]["elements"]}


def _all_text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def test_slack_message_shows_the_evidence_an_oncall_needs() -> None:
    message = payloads.slack_message(one(decision=DEGRADE), EXTERNAL, channel="#spend")
    _check_block_kit(message)
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "divider", "context", "actions"]
    assert message["channel"] == "#spend"
    header = message["blocks"][0]
    assert header["type"] == "header" and "FIRING" in header["text"]["text"]
    text = _all_text(message)
    for expected in ("tenant `acme`", "$123.46 spent", "$81.25 expected", "limit $150.00", "82.3%",
                     "gpt-4o $100.50", "draft $110.00", "`trace-aaa`", "rules/acme.yaml:12",
                     "degrade (degrade) → gpt-4o-mini", "https://runbooks.example.com/burn"):
        assert expected in text, expected
    assert "trace-eee" not in text and "tiny" not in text  # only a few of each
    buttons = _buttons(message)
    assert buttons["Runbook"] == "https://runbooks.example.com/burn"
    assert buttons["View in spendwarden"] == f"{EXTERNAL}/alerts/x"


def test_slack_silence_button_carries_the_group_matchers() -> None:
    n = notification([alert_from_firing(firing_record(0))], group_labels={"tenant": "acme", "alertname": "daily-burn"})
    url = urlparse(_buttons(payloads.slack_message(n, EXTERNAL))["Silence"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{EXTERNAL}/silences/new"
    matchers = parse_qs(url.query)["matchers"][0]
    assert matchers == '{alertname="daily-burn",tenant="acme"}'
    assert "%22" in url.query and unquote(url.query.split("=", 1)[1]) == matchers  # url-encoded


def test_slack_thirty_alert_group_stays_within_limits_and_counts_the_rest() -> None:
    alerts = [alert_from_firing(firing_record(i, decision=DEGRADE)) for i in range(30)]
    message = payloads.slack_message(notification(alerts, {"alertname": "daily-burn"}), EXTERNAL)
    _check_block_kit(message)
    # header, five alerts shown in full (two sections and a divider each), one section counting the
    # rest, the context line and the buttons
    assert len(message["blocks"]) == 1 + 5 * 3 + 1 + 2
    text = _all_text(message)
    assert "…and 25 more alerts" in text and "drafting-29" in text
    assert "30 alerts" in message["blocks"][0]["text"]["text"]
    assert "30 firing" in message["text"]


def test_slack_message_truncates_oversized_text() -> None:
    huge = "x" * 5000
    n = notification([alert_from_firing(firing_record(0, summary=huge, runbook="https://r.example.com/" + "a" * 4000))])
    message = payloads.slack_message(n, EXTERNAL)
    _check_block_kit(message)
    assert "Runbook" not in _buttons(message)  # a URL over 3000 characters cannot be cut: it is left out
    assert message["blocks"][0]["text"]["text"].endswith("…")


def test_slack_resolved_notification_says_resolved_and_escapes_markup() -> None:
    alert = resolved(alert_from_firing(firing_record(0, tenant="a<b>&c")))
    message = payloads.slack_message(notification([alert], {"tenant": "a<b>&c"}), EXTERNAL)
    _check_block_kit(message)
    assert "RESOLVED" in message["blocks"][0]["text"]["text"] and message["text"].startswith("RESOLVED")
    assert "Resolved" in message["blocks"][1]["text"]["text"]
    assert "a&lt;b&gt;&amp;c" in _all_text(message) and "a<b>" not in message["blocks"][2]["fields"][0]["text"]
    assert "none (alert only)" in _all_text(message)


# ---------------------------------------------------------------------------- PagerDuty

def test_pagerduty_trigger_has_the_events_api_v2_fields() -> None:
    n = one(decision=DEGRADE)
    event = payloads.pagerduty_event(n, "R0UTINGKEY", EXTERNAL)
    assert event["routing_key"] == "R0UTINGKEY" and event["event_action"] == "trigger"
    assert event["dedup_key"] == hashlib.sha256(n.group_key.encode()).hexdigest() and len(event["dedup_key"]) <= 255
    p = event["payload"]
    assert p["source"] == "spendwarden" and p["severity"] == "error" and len(p["summary"]) <= 1024
    assert p["component"] == "drafting-daily" and p["group"] == "acme" and p["class"] == "daily-burn"
    assert datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).isoformat().startswith("2026-01-15T15:30")
    details = p["custom_details"]["alerts"][0]
    assert details["actual_usd"] == "123.456" and details["expected_usd"] == "81.25" and details["limit_usd"] == "150"
    assert details["decision"]["model_alias"] == "gpt-4o-mini" and details["sample_trace_ids"][0] == "trace-aaa"
    assert details["contributors"]["models"][0] == ["gpt-4o", "100.5"]
    assert {link["text"]: link["href"] for link in event["links"]} == {
        "Runbook": "https://runbooks.example.com/burn", "View in spendwarden": f"{EXTERNAL}/alerts/x"}
    assert event["client"] == "spendwarden" and event["client_url"] == EXTERNAL
    long = payloads.pagerduty_event(one(summary="s" * 3000), "k")
    assert len(long["payload"]["summary"]) == 1024


@pytest.mark.parametrize("severity, expected", [("critical", "critical"), ("high", "error"), ("medium", "warning"),
                                                ("low", "info"), ("info", "info")])
def test_pagerduty_severity_mapping(severity: str, expected: str) -> None:
    assert payloads.pagerduty_event(one(severity=severity), "k")["payload"]["severity"] == expected


def test_pagerduty_group_takes_its_highest_firing_severity_and_resolves_with_the_same_key() -> None:
    low = alert_from_firing(firing_record(0, severity="low"))
    crit = alert_from_firing(firing_record(1, severity="critical"))
    n = notification([low, crit])
    trigger = payloads.pagerduty_event(n, "k")
    assert trigger["payload"]["severity"] == "critical"
    resolved(low), resolved(crit)
    resolve = payloads.pagerduty_event(n, "k")
    assert resolve == {"routing_key": "k", "event_action": "resolve", "dedup_key": trigger["dedup_key"]}


# ---------------------------------------------------------------------------- Alertmanager API

def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_alertmanager_alerts_end_after_the_hold_while_firing_and_at_resolution_after() -> None:
    now = _epoch("2026-01-15T16:00:00Z")
    firing = alert_from_firing(firing_record(0), generator_url=f"{EXTERNAL}/alerts/x")
    done = resolved(alert_from_firing(firing_record(1)), at="2026-01-15T15:45:00.000Z")
    just_resolved = alert_from_firing(firing_record(2))
    just_resolved.status = "resolved"
    body = payloads.alertmanager_alerts(notification([firing, done, just_resolved]), hold_s=600, now=now)
    assert [set(a) for a in body] == [{"labels", "annotations", "startsAt", "endsAt", "generatorURL"},
                                      {"labels", "annotations", "startsAt", "endsAt"},
                                      {"labels", "annotations", "startsAt", "endsAt"}]
    assert _epoch(body[0]["startsAt"]) == _epoch("2026-01-15T15:30:00Z")
    assert _epoch(body[0]["endsAt"]) == now + 600
    assert _epoch(body[1]["endsAt"]) == _epoch("2026-01-15T15:45:00Z")
    assert _epoch(body[2]["endsAt"]) == now  # resolved without a time: now
    assert body[0]["labels"]["tenant"] == "acme" and body[0]["labels"]["severity"] == "high"


def test_alertmanager_labels_are_sanitised() -> None:
    record = firing_record(0, labels={"team.name": "ai", "9lives": "cat", "ok_label": "x", "empty": "",
                                      "kube/ns": "a", "kube_ns": "b"})
    body = payloads.alertmanager_alerts(notification([alert_from_firing(record)]), hold_s=60, now=1768491000.0)
    labels, annotations = body[0]["labels"], body[0]["annotations"]
    valid = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    assert all(valid.match(k) for k in [*labels, *annotations])
    assert labels["team_name"] == "ai" and labels["_9lives"] == "cat" and labels["ok_label"] == "x"
    assert labels["kube_ns"] == "b"  # the name that was already valid wins a collision
    assert "empty" not in labels


# ---------------------------------------------------------------------------- backoff

def test_backoff_is_full_jitter_within_the_exponential_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(12):
        ceiling = min(300.0, 2.0 ** attempt)
        delays = [backoff_delay(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # spread, not a constant
    assert backoff_delay(10_000, rng=random.Random(1)) <= 300.0
    with pytest.raises(ValueError):
        backoff_delay(-1)


def test_backoff_never_comes_back_before_retry_after() -> None:
    rng = random.Random(99)
    assert all(backoff_delay(0, retry_after_s=7, rng=rng) >= 7 for _ in range(100))
    assert backoff_delay(0, retry_after_s=7, rng=random.Random(5)) == 7  # jitter below 1 s: the floor
    assert backoff_delay(2, cap_s=300, retry_after_s=900, rng=rng) == 900  # more than the cap when asked
    assert backoff_delay(2, retry_after_s=86400, rng=rng) == RETRY_AFTER_MAX_S
    assert backoff_delay(20, retry_after_s=3, rng=random.Random(2)) >= 3


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = _epoch("2026-01-15T16:00:00Z")
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 15 Jan 2026 16:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 15 Jan 2026 15:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None
