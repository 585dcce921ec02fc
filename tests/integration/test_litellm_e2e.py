"""A real LiteLLM proxy (mock models, nothing leaves the machine) with spendwarden's plugin, a real
worker on the embedded broker and a real Redis: calls are counted, the worker's block decision
turns the next call into a 429 with Retry-After, and a degraded tenant is routed to the fallback."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import redis

from harness import WorkerRun, new_run
from test_worker import wait_for
from spendwarden.embedded import free_port
from spendwarden.streams.events import CostEvent

pytestmark = pytest.mark.integration

LITELLM = Path(sys.executable).with_name("litellm")
GPT_4O_CALL = Decimal("0.000225")  # 10 prompt + 20 completion tokens of a mocked gpt-4o call (local cost map)

# Budgets on top of the harness' uc-daily ($100 per tenant and use case, never reached here).
RULES = """
tenants:
  held: {tier: reserve-demo}
budgets:
  - name: held-daily
    for_each: [tenant_id, use_case_id]
    period: day
    limit_by_tier: {reserve-demo: 0.0022}
    reservations: true
  - name: tiny-daily
    scope: {tenant_id: tiny}
    period: day
    limit_usd: 0.0005
  - name: frugal-daily
    scope: {tenant_id: frugal}
    period: day
    limit_usd: 0.0001
rules:
  - name: tiny-cap
    budget: tiny-daily
    when: budget.used_ratio >= 1.0
    severity: high
    decide: {level: block, only_risk_tiers: [low, medium]}
  - name: frugal-degrade
    budget: frugal-daily
    when: budget.used_ratio >= 1.0
    decide: {level: L1, only_risk_tiers: [low], model_alias: gpt-4o-mini, max_output_tokens: 32}
"""

PROXY_CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "answer from gpt-4o", api_key: sk-not-used}
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, mock_response: "answer from gpt-4o-mini", api_key: sk-not-used}
litellm_settings:
  callbacks: spendwarden.gateway.litellm_plugin.proxy_handler
general_settings:
  master_key: MASTER_KEY
"""


class Proxy:
    """`litellm --config` as a process of its own, bound to 127.0.0.1."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.master_key = "sk-" + secrets.token_urlsafe(32)
        self.config = folder / "litellm.yaml"
        self.config.write_text(PROXY_CONFIG.replace("MASTER_KEY", self.master_key))
        self.log_path = folder / "litellm.log"
        self.env = env
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(LITELLM), "--config", str(self.config), "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.config.parent)

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/liveliness", timeout=2):
                    return
            except OSError:
                time.sleep(0.25)
        raise AssertionError(f"litellm not ready after {timeout_s}s\n{self.tail()}")

    def chat(self, tenant: str, risk_tier: str = "low", use_case: str = "support",
             model: str = "gpt-4o") -> tuple[int, dict[str, str], Any]:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200,
                "metadata": {"tenant_id": tenant, "use_case_id": use_case, "risk_tier": risk_tier}}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/chat/completions", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.master_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read() or b"null")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.process = None

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def stack(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[tuple[WorkerRun, Proxy]]:
    # The test extra pins litellm[proxy]; deploy/local.sh installs it, so its absence is a broken setup.
    assert LITELLM.exists(), f"{LITELLM} missing: install the test extra (litellm[proxy]==1.108.7)"
    worker = new_run(broker, redis_url, topic_names, tmp_path, **{"litellm.yaml": RULES})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "LITELLM_", "SPENDWARDEN_"))}
    env.update({
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "SPENDWARDEN_REDIS_URL": redis_url,
        "SPENDWARDEN_KAFKA_BOOTSTRAP": broker,
        "SPENDWARDEN_COST_TOPIC": worker.topics["events"],
        "SPENDWARDEN_LITELLM_BATCH_MS": "20",
        "SPENDWARDEN_LITELLM_RESERVE": "true",
    })
    proxy = Proxy(tmp_path, env)
    try:
        worker.start()
        proxy.start()
        worker.wait_ready()
        proxy.wait_ready()
        yield worker, proxy
    finally:
        proxy.stop()
        worker.stop()


def verdict(redis_url: str, tenant: str, field: str) -> Optional[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.hget(f"sw:{{{tenant}}}:decisions", field)
    finally:
        client.close()
    return json.loads(raw) if raw else None


def read_events(bootstrap: str, topic: str, expect: int, timeout_s: float = 20) -> list[Any]:
    """Every record of the topic (arrays of events) once it holds ``expect`` events, or at the timeout.

    No consumer group: a group's first join waits on the broker (FACTS.md), partitions are assigned."""
    async def run() -> list[Any]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(4)])
            await consumer.seek_to_beginning()
            found: list[Any] = []
            deadline = time.monotonic() + timeout_s
            while sum(len(r) for r in found) < expect and time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(json.loads(m.value) for m in messages)
            return found
        finally:
            await consumer.stop()

    return asyncio.run(run())


def content(answer: Any) -> str:
    return answer["choices"][0]["message"]["content"]


def test_budget_blocks_and_degrades_through_a_real_litellm_proxy(stack: tuple[WorkerRun, Proxy],
                                                                redis_url: str) -> None:
    worker, proxy = stack
    started = time.monotonic()

    # Three $0.000225 calls spend tiny's $0.0005: each goes through before the worker has counted it.
    for _ in range(3):
        status, _, answer = proxy.chat("tiny")
        assert status == 200, (answer, proxy.tail())
        assert content(answer) == "answer from gpt-4o"
    status, _, answer = proxy.chat("frugal")
    assert status == 200 and content(answer) == "answer from gpt-4o"

    # The cost events reach the broker as per-tenant array records the worker counts.
    records = read_events(worker.bootstrap, worker.topics["events"], expect=4)
    assert sum(len(r) for r in records) == 4, (records, proxy.tail())
    events = [CostEvent.model_validate(e) for record in records for e in record]
    by_tenant = {t: [e for e in events if e.tenant_id == t] for t in ("tiny", "frugal")}
    assert [len(by_tenant["tiny"]), len(by_tenant["frugal"])] == [3, 1], events
    assert all(isinstance(record, list) and len({e["tenant_id"] for e in record}) == 1 for record in records)
    assert {(e.use_case_id, e.risk_tier, e.model_or_service, e.provider) for e in events} == {
        ("support", "low", "gpt-4o", "openai")}
    assert {e.allocated_cost_usd for e in events} == {GPT_4O_CALL}
    assert all(e.input_tokens == 10 and e.output_tokens == 20 and e.trace_id for e in events)
    assert len({e.cost_event_id for e in events}) == 4

    # The worker's block lands in Redis; the next low-risk call is refused with Retry-After.
    block = wait_for(lambda: verdict(redis_url, "tiny", "*:low"), what="tiny's block in Redis")
    assert block["level"] == "block" and block["rule"] == "tiny-cap"
    spend = [value for (budget, _, _), value in worker.totals().items() if budget == "tiny-daily"]
    assert spend == [3 * GPT_4O_CALL]
    status, headers, answer = proxy.chat("tiny")
    assert status == 429, (answer, proxy.tail())
    retry_after = int(headers["retry-after"])
    now = datetime.now(timezone.utc)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    assert abs(retry_after - (midnight - now).total_seconds()) <= 5  # until the end of tiny's UTC day
    message = json.dumps(answer)
    assert "tiny-cap" in message and "tiny-daily" in message
    status, _, answer = proxy.chat("tiny", risk_tier="high")  # the block spares high-risk traffic
    assert status == 200 and content(answer) == "answer from gpt-4o"

    # frugal spent twice its budget: the L1 decision routes its low-risk calls to the fallback model.
    degrade = wait_for(lambda: verdict(redis_url, "frugal", "*:low"), what="frugal's L1 in Redis")
    assert degrade["level"] == "L1" and degrade["model_alias"] == "gpt-4o-mini"
    status, headers, answer = proxy.chat("frugal")
    assert status == 200 and content(answer) == "answer from gpt-4o-mini"
    assert headers.get("x-litellm-model-group") == "gpt-4o-mini"

    # That call's cost event names the model that answered.
    records = read_events(worker.bootstrap, worker.topics["events"], expect=6)
    assert sum(len(r) for r in records) == 6, ([(e["tenant_id"], e["cost_event_id"], e.get("model_or_service"),
                                                 e["risk_tier"], e.get("allocated_cost_usd")) for r in records for e in r],
                                               proxy.tail())
    late = [CostEvent.model_validate(e) for record in records for e in record]
    assert not [e for e in late if ":failed:" in e.cost_event_id]  # the refused call cost nothing, sent nothing
    minis = [e for e in late if e.tenant_id == "frugal" and e.model_or_service == "gpt-4o-mini"]
    assert len(minis) == 1 and minis[0].allocated_cost_usd < GPT_4O_CALL

    # Reservations: tenant held's budget ($0.0022) has room for one call's most (200 output tokens
    # at gpt-4o's price, $0.002025), so the next call is refused before any cost is counted, and
    # also after (0.000225 spent + 0.002025 > 0.0022). The worker then releases the first hold.
    status, _, answer = proxy.chat("held")
    assert status == 200, answer
    status, headers, answer = proxy.chat("held")
    assert status == 429 and "held-daily" in json.dumps(answer) and headers.get("retry-after") == "60", answer
    import redis as redis_sync

    client = redis_sync.Redis.from_url(redis_url)
    wait_for(lambda: client.hlen("sw:{held}:reservations") == 0, what="the worker to settle held's first call")
    spent = json.loads(client.hget("sw:{held}:spend", "support|held-daily"))
    client.close()
    assert spent["spend"] == int(GPT_4O_CALL * 10**9) and spent["limit"] == 2_200_000
    print(f"\nLiteLLM E2E: calls and decisions took {time.monotonic() - started:.1f}s")
