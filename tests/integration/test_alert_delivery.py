"""One delivery attempt against real HTTP servers on 127.0.0.1, and against a real Alertmanager.

Each test server is an aiohttp app that records what it was sent and answers as a receiver
would (2xx, 429, 5xx, 4xx, too slow, Slack's ``ok: false``); the webhook server checks the
HMAC signature itself from the documented scheme.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from spendwarden.embedded import free_port
from spendwarden.streams.alerting.delivery import DeliveryResult, Sender
from spendwarden.streams.alerting.model import Alert, Notification, alert_from_firing
from spendwarden.streams.alerting.payloads import rfc3339
from spendwarden.streams.alerting.receiver_config import (
    AlertmanagerReceiver, PagerDutyReceiver, ReceiverSpec, SecretRef, SlackReceiver, WebhookReceiver,
)
from tooling import require_tool

pytestmark = pytest.mark.integration

EXTERNAL = "http://spendwarden.test"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def firing(i: int = 0, at: str = "2026-01-15T15:30:00.000Z", tenant: str = "acme") -> Alert:
    """The Alert of a worker ``alert_firing`` record (streams/effects.py AlertFiring)."""
    return alert_from_firing({
        "kind": "alert_firing", "fingerprint": f"{i:016x}", "rule": "daily-burn", "severity": "high",
        "summary": f"drafting at 82% of its daily limit #{i}", "tenant_id": tenant,
        "scope": {"use_case_id": "drafting"}, "budget": "drafting-daily", "period": "day", "period_id": "2026-01-15",
        "period_end": "2026-01-16T05:00:00.000Z", "spend_usd": "123.4", "limit_usd": "150", "used_ratio": 0.822,
        "expected_usd": "81.25", "contributors": {"models": [["gpt-4o", "100"]]}, "sample_trace_ids": ["t-1"],
        "notify": [], "runbook": "https://runbooks.test/burn", "decision": None, "shadow": False,
        "rules_version": "v1", "rule_file": "rules/acme.yaml", "rule_line": 3, "at": at, "labels": {},
    })


def note(*alerts: Alert) -> Notification:
    return Notification(receiver="oncall", group_key='{}:{tenant="acme"}', group_labels={"tenant": "acme"},
                        alerts=list(alerts or [firing()]), sequence=1, created_at=time.time())


class Recorder:
    """Requests a test server received: method, path, headers and raw body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return body


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def answering(status: int, recorder: Recorder, body: Any = "", headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        await recorder.record(request)
        if isinstance(body, (dict, list)):
            return web.json_response(body, status=status, headers=headers)
        return web.Response(status=status, text=body, headers=headers)
    return handler


def send_once(handler: Handler, spec_for: Callable[[str], ReceiverSpec], n: Notification | None = None,
              timeout_s: float = 5.0) -> DeliveryResult:
    """Start a server with ``handler``, send ``n`` to the spec built from the server's URL."""
    async def run() -> DeliveryResult:
        async with serve(handler) as server, Sender(timeout_s=timeout_s, external_url=EXTERNAL) as sender:
            return await sender.send(n or note(), spec_for(str(server.make_url("/hook"))))
    return asyncio.run(run())


def webhook_at(monkeypatch: pytest.MonkeyPatch, key: str | None = None) -> Callable[[str], ReceiverSpec]:
    def spec(url: str) -> ReceiverSpec:
        monkeypatch.setenv("SW_TEST_HOOK_URL", url)
        if key is None:
            return WebhookReceiver(url=SecretRef(env="SW_TEST_HOOK_URL"))
        monkeypatch.setenv("SW_TEST_HOOK_KEY", key)
        return WebhookReceiver(url=SecretRef(env="SW_TEST_HOOK_URL"), hmac_key=SecretRef(env="SW_TEST_HOOK_KEY"))
    return spec


def test_webhook_is_sent_signed_and_the_receiver_verifies_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2xx is ``sent``; the server recomputes the HMAC from the raw body and refuses a wrong key with 401."""
    server_key, recorder = b"shared-hmac-key-1", Recorder()

    async def verifying(request: web.Request) -> web.Response:
        body = await recorder.record(request)
        timestamp = request.headers["X-Spendwarden-Timestamp"]
        want = hmac.new(server_key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(request.headers["X-Spendwarden-Signature"], "sha256=" + want)
        fresh = abs(time.time() - int(timestamp)) < 300
        return web.Response(status=200 if ok and fresh else 401)

    n = note()
    result = send_once(verifying, webhook_at(monkeypatch, server_key.decode()), n)
    assert (result.outcome, result.status) == ("sent", 200), result.reason
    sent = recorder.requests[0]
    assert sent["path"] == "/hook" and sent["headers"]["Idempotency-Key"] == n.idempotency_key
    assert sent["headers"]["Content-Type"].startswith("application/json")
    body = json.loads(sent["body"])
    assert body["version"] == "4" and body["groupKey"] == n.group_key and body["alerts"][0]["labels"]["tenant"] == "acme"

    wrong = send_once(verifying, webhook_at(monkeypatch, "not-the-shared-key"), n)
    assert (wrong.outcome, wrong.status) == ("failed", 401)
    assert recorder.requests[1]["headers"]["Idempotency-Key"] == n.idempotency_key  # same notification, same key


@pytest.mark.parametrize("status, headers, outcome, retry_after", [
    (500, None, "retry", None),
    (503, {"Retry-After": "12"}, "retry", 12.0),
    (429, {"Retry-After": "7"}, "retry", 7.0),
    (400, None, "failed", None),
    (404, None, "failed", None),
    (408, None, "retry", None),
    (204, None, "sent", None),
])
def test_webhook_status_classification(monkeypatch: pytest.MonkeyPatch, status: int, headers: dict[str, str] | None,
                                       outcome: str, retry_after: float | None) -> None:
    recorder = Recorder()
    result = send_once(answering(status, recorder, headers=headers), webhook_at(monkeypatch))
    assert (result.outcome, result.status, result.retry_after_s) == (outcome, status, retry_after)
    assert len(recorder.requests) == 1  # one attempt per call, no hidden retry loop


def test_retry_after_as_an_http_date(monkeypatch: pytest.MonkeyPatch) -> None:
    from email.utils import formatdate

    later = formatdate(time.time() + 60, usegmt=True)
    result = send_once(answering(429, Recorder(), headers={"Retry-After": later}), webhook_at(monkeypatch))
    assert result.outcome == "retry" and result.retry_after_s is not None and 55 <= result.retry_after_s <= 60


def test_a_receiver_slower_than_the_timeout_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(status=200)

    started = time.monotonic()
    result = send_once(slow, webhook_at(monkeypatch), timeout_s=0.5)
    assert (result.outcome, result.status) == ("retry", None) and "0.5 s" in result.reason
    assert time.monotonic() - started < 2.5


def test_connection_refused_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("SW_TEST_HOOK_URL", f"http://127.0.0.1:{port}/hook")

    async def run() -> DeliveryResult:
        async with Sender(timeout_s=5, external_url=EXTERNAL) as sender:
            return await sender.send(note(), WebhookReceiver(url=SecretRef(env="SW_TEST_HOOK_URL")))
    result = asyncio.run(run())
    assert (result.outcome, result.status) == ("retry", None)
    assert str(port) not in result.reason


def slack_bot(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ReceiverSpec]:
    monkeypatch.setenv("SW_TEST_SLACK_TOKEN", "xoxb-test-token-123")
    return lambda url: SlackReceiver(bot_token=SecretRef(env="SW_TEST_SLACK_TOKEN"), channel="#spend", api_url=url)


@pytest.mark.parametrize("answer, outcome", [
    ({"ok": True, "ts": "1.2"}, "sent"),
    ({"ok": False, "error": "ratelimited"}, "retry"),
    ({"ok": False, "error": "internal_error"}, "retry"),
    ({"ok": False, "error": "channel_not_found"}, "failed"),
])
def test_slack_bot_reads_ok_false_in_a_200(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any], outcome: str) -> None:
    recorder = Recorder()
    result = send_once(answering(200, recorder, answer), slack_bot(monkeypatch))
    assert (result.outcome, result.status) == (outcome, 200)
    if not answer["ok"]:
        assert answer["error"] in result.reason
    sent = recorder.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer xoxb-test-token-123"
    body = json.loads(sent["body"])
    assert body["channel"] == "#spend" and body["blocks"][0]["type"] == "header" and body["text"]


def test_slack_webhook_and_pagerduty_202(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setenv("SW_TEST_PD_KEY", "pd-routing-key-42")

    def slack(url: str) -> ReceiverSpec:
        monkeypatch.setenv("SW_TEST_SLACK_URL", url)
        return SlackReceiver(webhook_url=SecretRef(env="SW_TEST_SLACK_URL"))

    assert send_once(answering(200, recorder, "ok"), slack).outcome == "sent"
    pd = send_once(answering(202, recorder, {"status": "success", "dedup_key": "x"}),
                   lambda url: PagerDutyReceiver(routing_key=SecretRef(env="SW_TEST_PD_KEY"), url=url))
    assert (pd.outcome, pd.status) == ("sent", 202)
    event = json.loads(recorder.requests[1]["body"])
    assert event["routing_key"] == "pd-routing-key-42" and event["event_action"] == "trigger"
    refused = send_once(answering(400, recorder, {"status": "invalid event"}),
                        lambda url: PagerDutyReceiver(routing_key=SecretRef(env="SW_TEST_PD_KEY"), url=url))
    assert refused.outcome == "failed" and "invalid event" in refused.reason


def test_alertmanager_receiver_posts_to_the_v2_api_with_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setenv("SW_TEST_AM_PASSWORD", "am-pass-99")
    result = send_once(answering(200, recorder), lambda url: AlertmanagerReceiver(
        url=url.rsplit("/", 1)[0] + "/", basic_auth_user="sw", basic_auth_password=SecretRef(env="SW_TEST_AM_PASSWORD")))
    assert result.outcome == "sent"
    sent = recorder.requests[0]
    assert sent["path"] == "/api/v2/alerts"
    import base64
    assert sent["headers"]["Authorization"] == "Basic " + base64.b64encode(b"sw:am-pass-99").decode()


def test_a_missing_secret_fails_naming_where_it_is_read_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SW_TEST_ABSENT_URL", raising=False)
    recorder = Recorder()
    result = send_once(answering(200, recorder), lambda url: WebhookReceiver(url=SecretRef(env="SW_TEST_ABSENT_URL")))
    assert result.outcome == "failed" and result.status is None
    assert "SW_TEST_ABSENT_URL" in result.reason and recorder.requests == []


def test_canary_secrets_never_reach_a_log_line_or_a_reason(monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """Secret URLs and keys, echoed back by a refusing server or in a refused connection, are never printed."""
    canary_path, canary_key = "/hooks/T000/B000/canary-secret-path-5c1e", "canary-hmac-key-8d2f"
    port = free_port()

    async def echo(request: web.Request) -> web.Response:
        return web.Response(status=500, text=f"no such hook {request.url} (key {canary_key})")

    async def run() -> list[DeliveryResult]:
        results = []
        async with serve(echo) as server, Sender(timeout_s=2, external_url=EXTERNAL) as sender:
            for url in (str(server.make_url(canary_path)), f"http://127.0.0.1:{port}{canary_path}"):
                monkeypatch.setenv("SW_TEST_CANARY_URL", url)
                monkeypatch.setenv("SW_TEST_CANARY_KEY", canary_key)
                spec = WebhookReceiver(url=SecretRef(env="SW_TEST_CANARY_URL"),
                                       hmac_key=SecretRef(env="SW_TEST_CANARY_KEY"))
                results.append(await sender.send(note(), spec))
                results.append(await sender.send(note(), SlackReceiver(webhook_url=SecretRef(env="SW_TEST_CANARY_URL"))))
        return results

    with structlog.testing.capture_logs() as logs:
        results = asyncio.run(run())
    assert [r.outcome for r in results] == ["retry"] * 4 and len(logs) == 4
    assert "no such hook" in results[0].reason  # the body is kept, with the secrets masked
    everything = repr(logs) + "".join(r.reason for r in results)
    assert "SW_TEST_CANARY_URL" in everything
    assert "canary-secret-path" not in everything and canary_key not in everything
    asyncio.run(run())  # again through the configured renderer and its masker, to the real stderr/stdout
    out, err = capfd.readouterr()
    assert "canary-secret-path" not in out + err and canary_key not in out + err


def test_a_server_echoing_only_the_secret_path_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Express-style "Cannot POST /hooks/<token>": the path alone is a secret too."""
    async def echo_path(request: web.Request) -> web.Response:
        return web.Response(status=404, text=f"Cannot POST {request.path}")

    async def run() -> DeliveryResult:
        async with serve(echo_path) as server, Sender(timeout_s=2, external_url=EXTERNAL) as sender:
            monkeypatch.setenv("SW_TEST_PATH_URL", str(server.make_url("/hooks/T0/B0/path-canary-77aa")))
            return await sender.send(note(), WebhookReceiver(url=SecretRef(env="SW_TEST_PATH_URL")))

    result = asyncio.run(run())
    assert result.outcome == "failed" and "Cannot POST" in result.reason
    assert "path-canary" not in result.reason


def test_a_notification_that_cannot_be_built_is_refused_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = note()
    broken.alerts[0].starts_at = "yesterday"  # cannot be turned into RFC 3339

    async def run() -> DeliveryResult:
        async with Sender(timeout_s=2, external_url=EXTERNAL) as sender:
            return await sender.send(broken, webhook_at(monkeypatch)("http://127.0.0.1:9/hook"))

    result = asyncio.run(run())
    assert result.outcome == "failed" and "could not be built" in result.reason


# ---------------------------------------------------------------------------- a real Alertmanager

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read() or b"null")


def _wait(check: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


@pytest.fixture
def alertmanager(tmp_path: Path) -> Any:
    binary = require_tool("prometheus-alertmanager", "SPENDWARDEN_TEST_REQUIRE_ALERTMANAGER", "prometheus-alertmanager",
                          ALERTMANAGER)
    config = tmp_path / "am.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    log_file = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                            stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"alertmanager exited: {(tmp_path / 'alertmanager.log').read_text()[-2000:]}")
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                return response.status == 200
        _wait(ready, "alertmanager /-/ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def test_a_real_alertmanager_shows_the_alert_then_resolves_it(alertmanager: str) -> None:
    now = time.time()
    alert = firing(7, at=rfc3339(now - 120))
    spec = AlertmanagerReceiver(url=alertmanager)

    async def send(n: Notification) -> DeliveryResult:
        async with Sender(timeout_s=5, external_url=EXTERNAL) as sender:
            return await sender.send(n, spec)

    def ours() -> list[dict[str, Any]]:
        return [a for a in _get(f"{alertmanager}/api/v2/alerts")
                if a["labels"].get("tenant") == "acme" and a["labels"].get("rule") == "daily-burn"]

    result = asyncio.run(send(note(alert)))
    assert (result.outcome, result.status) == ("sent", 200), result.reason
    listed = _wait(lambda: [a for a in ours() if a["status"]["state"] == "active"], "the alert active in Alertmanager")
    assert len(listed) == 1
    shown = listed[0]
    assert shown["labels"]["severity"] == "high" and shown["labels"]["alertname"] == "daily-burn"
    assert shown["annotations"]["summary"] == alert.annotations["summary"]
    ends = datetime.fromisoformat(shown["endsAt"].replace("Z", "+00:00")).timestamp()
    assert ends > time.time() + 4 * 3600  # held past the next repeat (hold: 4 h 5 min)

    alert.status, alert.ends_at = "resolved", rfc3339(time.time() - 1)
    result = asyncio.run(send(note(alert)))
    assert result.outcome == "sent", result.reason
    _wait(lambda: ours() == [], "the alert gone from Alertmanager's alerts")
    assert _get(f"{alertmanager}/api/v2/alerts?active=true") == []
