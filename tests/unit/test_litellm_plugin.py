"""The LiteLLM plugin without a proxy: scope mapping, what each verdict does to a request, the cost
event it builds (checked against the real CostEvent model), and the tenant-batching producer."""

from __future__ import annotations

import asyncio
import json
import os
import time
import typing
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm must not go online

import pytest

from spendwarden.embedded import free_port
from spendwarden.gateway import Verdict
from spendwarden.gateway.kafka_batcher import TenantBatcher
from spendwarden.gateway.litellm_events import ScopeMapping, build_cost_event, decimal_text, resolve_scope
from spendwarden.gateway.litellm_plugin import SpendwardenLogger, apply_degrade, settings_from_env
from spendwarden.streams.events import CostEvent

litellm_types = pytest.importorskip("litellm.types.utils")
fastapi = pytest.importorskip("fastapi")


class FakeClient:
    """Stands in for AsyncGatewayClient: returns a fixed verdict, records the questions."""

    def __init__(self, verdict: Verdict | Exception) -> None:
        self.verdict = verdict
        self.calls: list[tuple[Any, ...]] = []

    async def check(self, tenant: str, use_case: str, risk_tier: str, model: str | None = None,
                    estimated_cost: float | None = None) -> Verdict:
        self.calls.append((tenant, use_case, risk_tier, model))
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


class FakeProducer:
    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_on = fail_on or set()
        self.attempts = 0
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.attempts += 1
        if self.attempts in self.fail_on:
            raise ConnectionError("broker went away")
        self.sent.append((topic, key, value))


def logger(verdict: Verdict | Exception = Verdict("allow", "L0"), **kw: Any) -> SpendwardenLogger:
    batcher = TenantBatcher("unused:1", "t", producer_factory=FakeProducer, flush_at_exit=False)
    return SpendwardenLogger(client=FakeClient(verdict), batcher=batcher, environ={}, **kw)


def body(**metadata: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "metadata": dict(metadata)}


# --- mapping ------------------------------------------------------------------------------------

KEY = SimpleNamespace(team_id="team-42", team_alias="acme-team", key_alias=None)
NO_KEY = SimpleNamespace(team_id=None, team_alias=None)


@pytest.mark.parametrize("metadata, key, tags, expected", [
    ({"tenant_id": "acme", "use_case_id": "support", "risk_tier": "low"}, KEY, [], ("acme", "support", "low")),
    ({"use_case_id": "support"}, KEY, [], ("acme-team", "support", "high")),  # team alias before team id
    ({}, SimpleNamespace(team_id="team-42", team_alias=None), [], ("team-42", "unknown", "high")),
    ({"user_api_key_team_alias": "logged-team"}, None, [], ("logged-team", "unknown", "high")),  # after the call
    ({}, NO_KEY, ["tenant:globex", "use_case:drafting", "risk_tier:medium"], ("globex", "drafting", "medium")),
    ({"tenant_id": "Acme Corp"}, NO_KEY, [], ("default", "unknown", "high")),  # unusable id: next source, default
    ({"tenant_id": "acme", "risk_tier": "LOW"}, NO_KEY, [], ("acme", "unknown", "low")),
    ({"tenant_id": "acme", "risk_tier": "critical"}, NO_KEY, [], ("acme", "unknown", "high")),  # unknown tier: high
    ({"tenant_id": 1234, "use_case_id": "a:b"}, NO_KEY, [], ("1234", "unknown", "high")),  # colon breaks a field
])
def test_default_mapping(metadata: dict[str, Any], key: Any, tags: list[str], expected: tuple[str, str, str]) -> None:
    scope, _ = resolve_scope(ScopeMapping(), metadata, key, tags)
    assert (scope.tenant, scope.use_case, scope.risk_tier) == expected


def test_mapping_from_env_and_bad_sources_refused() -> None:
    settings = settings_from_env({"SPENDWARDEN_LITELLM_TENANT_FROM": "metadata.customer, key.user_id",
                                  "SPENDWARDEN_LITELLM_DEFAULT_USE_CASE": "general",
                                  "SPENDWARDEN_COST_TOPIC": "costs", "SPENDWARDEN_LITELLM_BATCH_MS": "20"})
    mapping = settings["mapping"]
    assert settings["topic"] == "costs" and settings["linger_s"] == pytest.approx(0.02)
    assert settings_from_env({})["topic"] == "ai.cost-events"
    scope, named = resolve_scope(mapping, {"tenant_id": "ignored"}, SimpleNamespace(user_id="u7"))
    assert (scope.tenant, scope.use_case, named) == ("u7", "general", True)
    assert resolve_scope(mapping, {"customer": "c1"}, None)[0].tenant == "c1"
    with pytest.raises(ValueError, match="metadata.<field>"):
        ScopeMapping(tenant_from=("headers.x-tenant",))
    with pytest.raises(ValueError, match="default_tenant"):
        ScopeMapping(default_tenant="no tenant")


# --- before the call ----------------------------------------------------------------------------

def test_allow_asks_with_the_scope_and_stamps_a_fresh_id() -> None:
    plugin = logger()
    data = body(tenant_id="acme", use_case_id="support", risk_tier="low", cost_event_id="client-chosen")
    out = asyncio.run(plugin.async_pre_call_hook(KEY, None, data, "completion"))
    assert plugin._client.calls == [("acme", "support", "low", "gpt-4o")]
    stamped = out["metadata"]["cost_event_id"]
    assert stamped != "client-chosen" and len(stamped) == 36  # a reused id would be dropped as a duplicate
    assert out["model"] == "gpt-4o" and "max_tokens" not in out
    assert plugin.stats.allowed == 1


@pytest.mark.parametrize("request_tokens, expected", [
    ({"max_tokens": 1000}, {"max_tokens": 64}),
    ({"max_tokens": 10}, {"max_tokens": 10}),  # already below the cap
    ({}, {"max_tokens": 64}),
    ({"max_completion_tokens": 500}, {"max_completion_tokens": 64}),  # o-series: no max_tokens added
    ({"max_tokens": 100, "max_completion_tokens": 30}, {"max_tokens": 64, "max_completion_tokens": 30}),
])
def test_degrade_rewrites_model_and_caps_output(request_tokens: dict[str, int], expected: dict[str, int]) -> None:
    verdict = Verdict("degrade", "L1", model_alias="gpt-4o-mini", max_output_tokens=64, rule="burn", reason="70%")
    plugin = logger(verdict)
    data = {**body(tenant_id="acme", risk_tier="low"), **request_tokens}
    out = asyncio.run(plugin.async_pre_call_hook(KEY, None, data, "completion"))
    assert out["model"] == "gpt-4o-mini"
    assert {k: out[k] for k in ("max_tokens", "max_completion_tokens") if k in out} == expected
    assert plugin.stats.degraded == 1


def test_degrade_without_alias_keeps_the_model() -> None:
    data = body()
    apply_degrade(data, Verdict("degrade", "L3", reason="incident"))
    assert data["model"] == "gpt-4o" and "max_tokens" not in data


@pytest.mark.parametrize("action, retry_after, header", [
    ("block", 3600.2, "3601"), ("throttle", 12.0, "12"), ("block", None, "60"), ("block", 0.3, "1"),
])
def test_block_and_throttle_answer_429_naming_the_rule(action: str, retry_after: float | None, header: str) -> None:
    verdict = Verdict(action, action, reason="uc-daily (day 2026-11-30) at 100% of its limit (rule uc-cap)",  # type: ignore[arg-type]
                      rule="uc-cap", retry_after=retry_after, rate=10 if action == "throttle" else None)
    plugin = logger(verdict)
    with pytest.raises(fastapi.HTTPException) as caught:
        asyncio.run(plugin.async_pre_call_hook(KEY, None, body(tenant_id="acme", use_case_id="chat",
                                                                risk_tier="low"), "completion"))
    exc = caught.value
    assert exc.status_code == 429
    assert exc.headers == {"Retry-After": header}
    assert "'uc-cap'" in exc.detail and "uc-daily" in exc.detail and "'acme'" in exc.detail
    assert ("blocked" if action == "block" else "throttled") in exc.detail


def test_a_refused_call_is_not_reported_as_a_failed_call() -> None:
    """LiteLLM calls the failure hook for the 429 the pre-call hook raised; no model ran, no event."""
    plugin = logger(Verdict("block", "block", rule="r", reason="x", retry_after=5))
    data = body(tenant_id="acme", risk_tier="low")

    async def run() -> None:
        with pytest.raises(fastapi.HTTPException):
            await plugin.async_pre_call_hook(KEY, None, data, "completion")
        kwargs = logging_kwargs(0.0, status="failure")
        kwargs["litellm_params"] = {"metadata": data["metadata"]}
        await plugin.async_log_failure_event(kwargs, None, None, None)
        await plugin.async_log_failure_event(logging_kwargs(0.0, status="failure"), None, None, None)

    asyncio.run(run())
    assert (plugin.stats.refusals_not_reported, plugin.stats.events) == (1, 1)


def test_shadow_mode_and_own_failures_let_the_call_through() -> None:
    shadow = logger(Verdict("block", "block", rule="r", reason="x", retry_after=5), enforce=False)
    data = asyncio.run(shadow.async_pre_call_hook(KEY, None, body(tenant_id="acme"), "completion"))
    assert data["model"] == "gpt-4o" and shadow.stats.blocked == 1
    broken = logger(RuntimeError("bug"))
    data = asyncio.run(broken.async_pre_call_hook(KEY, None, body(tenant_id="acme"), "completion"))
    assert data["model"] == "gpt-4o" and broken.stats.check_errors == 1 and "bug" in broken.last_error


# --- after the call -----------------------------------------------------------------------------

def logging_kwargs(cost: Any = 1.35e-05, *, status: str = "success", cached: int = 4) -> dict[str, Any]:
    """Shape of LiteLLM 1.108.7's logging kwargs, as its proxy passed them for a mocked call."""
    metadata = {
        "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "user_api_key_alias": None, "user_api_key_team_id": "team-42", "user_api_key_team_alias": "acme-team",
        "user_api_key_user_id": "default_user_id", "user_api_key_org_id": None, "spend_logs_metadata": None,
        "requester_ip_address": "127.0.0.1", "user_agent": "python-urllib/3.11",
        "requester_metadata": {"tenant_id": "acme", "use_case_id": "support", "risk_tier": "low",
                               "workflow_step": "draft-reply"},
        "usage_object": {"completion_tokens": 20, "prompt_tokens": 10, "total_tokens": 30,
                         "prompt_tokens_details": {"cached_tokens": cached}},
        "team_alias": "acme-team", "team_id": "team-42", "applied_guardrails": [],
    }
    payload = {
        "id": "chatcmpl-f9e0f990", "trace_id": "729ed6eb-dad0-40c3-902e-708ba20db4a7", "session_id": "",
        "litellm_call_id": "97b16d72-c5f8-460c-b50d-d11a75c8e40e", "call_type": "acompletion", "stream": False,
        "response_cost": cost or 0.0, "cost_breakdown": None, "status": status,
        "status_fields": {"llm_api_status": status, "guardrail_status": "not_run"},
        "custom_llm_provider": "openai", "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20,
        "startTime": 1796032027.666958, "endTime": 1796032027.682195, "completionStartTime": 1796032027.682195,
        "response_time": 0.0152, "model_map_information": {}, "model": "openai/gpt-4o-mini",
        "model_id": "e1416364", "model_group": "gpt-4o-mini", "api_base": "", "metadata": metadata,
        "cache_hit": None, "cache_key": None, "saved_cache_cost": 0.0, "request_tags": ["use_case:other"],
        "end_user": None, "requester_ip_address": "127.0.0.1", "user_agent": "python-urllib/3.11",
        "messages": [], "response": None, "error_str": None, "error_information": None,
        "model_parameters": {"max_tokens": 64}, "hidden_params": {}, "guardrail_information": None,
    }
    return {"litellm_call_id": payload["litellm_call_id"], "model": "gpt-4o-mini", "response_cost": cost,
            "standard_logging_object": payload,
            "litellm_params": {"metadata": {**metadata, "cost_event_id": "3f1e2d4c-stamped",
                                            "spendwarden_tenant_id": "acme", "spendwarden_use_case_id": "support",
                                            "spendwarden_risk_tier": "low"}}}


def test_fixture_matches_litellms_standard_logging_payload() -> None:
    keys = typing.get_type_hints(litellm_types.StandardLoggingPayload, include_extras=False)
    payload = logging_kwargs()["standard_logging_object"]
    assert set(payload) <= set(keys), set(payload) - set(keys)
    assert set(payload["metadata"]) <= set(typing.get_type_hints(litellm_types.StandardLoggingMetadata))


def test_success_event_validates_against_the_cost_event_model() -> None:
    event = build_cost_event(logging_kwargs(), None, ScopeMapping())
    parsed = CostEvent.model_validate_json(json.dumps(event))
    assert parsed.cost_event_id == "3f1e2d4c-stamped"  # the pre-call stamp, reservations key on it
    assert parsed.allocated_cost_usd == Decimal("0.0000135") and event["allocated_cost_usd"] == "0.0000135"
    assert (parsed.tenant_id, parsed.use_case_id, parsed.risk_tier) == ("acme", "support", "low")
    assert (parsed.input_tokens, parsed.output_tokens, parsed.cached_tokens) == (10, 20, 4)
    assert parsed.trace_id == "729ed6eb-dad0-40c3-902e-708ba20db4a7"
    assert (parsed.model_or_service, parsed.provider, parsed.workflow_step) == ("gpt-4o-mini", "openai", "draft-reply")
    assert parsed.ts.isoformat().startswith("2026-11-30T") and parsed.ts.utcoffset().total_seconds() == 0


def test_without_a_stamp_the_event_is_mapped_again() -> None:
    kwargs = logging_kwargs()
    kwargs["litellm_params"] = {}
    event = CostEvent.model_validate(build_cost_event(kwargs, None, ScopeMapping()))
    assert (event.tenant_id, event.use_case_id) == ("acme", "support")
    assert event.cost_event_id == "97b16d72-c5f8-460c-b50d-d11a75c8e40e"


def test_failure_event_has_its_own_id_and_zero_cost() -> None:
    event = CostEvent.model_validate(build_cost_event(logging_kwargs(None, status="failure"), None,
                                                      ScopeMapping(), failed=True))
    assert event.cost_event_id.startswith("3f1e2d4c-stamped:failed:")
    assert event.allocated_cost_usd == Decimal(0)


def test_unknown_cost_is_left_to_the_pricebook() -> None:
    kwargs = logging_kwargs(None)
    kwargs["standard_logging_object"]["response_cost"] = None
    assert "allocated_cost_usd" not in build_cost_event(kwargs, None, ScopeMapping())
    assert [decimal_text(v) for v in (0.000225, 0.00022500000000000002, 0, "1e-9", float("nan"), -1.0, True)] == [
        "0.000225", "0.000225", "0", "0.000000001", None, None, None]


def test_logging_hooks_queue_and_never_raise() -> None:
    plugin = logger()

    async def run() -> None:
        await plugin.async_log_success_event(logging_kwargs(), None, None, None)
        await plugin.async_log_failure_event(logging_kwargs(0.0, status="failure"), None, None, None)
        await plugin.async_log_success_event(None, None, None, None)  # garbage: counted, not raised
        await plugin.aclose()

    asyncio.run(run())
    assert (plugin.stats.events, plugin.stats.event_errors) == (2, 1)
    assert plugin.batcher().sent_events == 2


# --- batching producer --------------------------------------------------------------------------

def ev(tenant: str, i: int) -> dict[str, Any]:
    return {"cost_event_id": f"{tenant}-{i}", "tenant_id": tenant}


def test_batches_by_tenant_at_most_50_per_record() -> None:
    producer = FakeProducer()
    batcher = TenantBatcher("unused:1", "costs", linger_s=0.02, producer_factory=lambda: producer,
                            flush_at_exit=False)

    async def run() -> None:
        for i in range(120):
            batcher.add(ev("acme", i))
            if i < 3:
                batcher.add(ev("globex", i))
        for _ in range(100):
            if batcher.sent_events == 123:
                break
            await asyncio.sleep(0.02)
        await batcher.aclose()

    asyncio.run(run())
    records = [(topic, key.decode(), json.loads(value)) for topic, key, value in producer.sent]
    assert {topic for topic, _, _ in records} == {"costs"}
    assert all(len(events) <= 50 for _, _, events in records)
    assert all(e["tenant_id"] == key for _, key, events in records for e in events)
    acme = [e["cost_event_id"] for _, key, events in records if key == "acme" for e in events]
    assert acme == [f"acme-{i}" for i in range(120)]  # all, once, in order
    assert sum(len(events) for _, key, events in records if key == "globex") == 3
    assert len(records) < 123 and batcher.sent_records == len(records)


def test_events_after_an_idle_spell_are_sent_without_a_flush() -> None:
    producer = FakeProducer()
    batcher = TenantBatcher("unused:1", "costs", linger_s=0.01, producer_factory=lambda: producer,
                            flush_at_exit=False)

    async def sent_within(count: int, seconds: float) -> int:
        for _ in range(int(seconds / 0.01)):
            if batcher.sent_events >= count:
                break
            await asyncio.sleep(0.01)
        return batcher.sent_events

    async def run() -> list[int]:
        batcher.add(ev("acme", 0))
        first = await sent_within(1, 1.0)
        await asyncio.sleep(0.1)  # the sender is now waiting on an empty buffer
        batcher.add(ev("acme", 1))
        second = await sent_within(2, 1.0)
        await batcher.aclose()
        return [first, second]

    assert asyncio.run(run()) == [1, 2]


def test_failed_send_keeps_unsent_events_in_order() -> None:
    producer = FakeProducer(fail_on={2})
    batcher = TenantBatcher("unused:1", "costs", max_batch=50, producer_factory=lambda: producer,
                            flush_at_exit=False)

    async def run() -> None:
        for i in range(60):
            batcher._buffer.append(("acme", ev("acme", i)))  # bypass add(): no sender task
        assert await batcher.send_pending() is False  # first record went, second failed
        assert batcher.buffered == 10 and batcher.send_errors == 1
        assert await batcher.send_pending() is True

    asyncio.run(run())
    ids = [e["cost_event_id"] for _, _, value in producer.sent for e in json.loads(value)]
    assert ids == [f"acme-{i}" for i in range(60)]


def test_unreachable_broker_keeps_a_bounded_buffer_and_counts_drops() -> None:
    batcher = TenantBatcher(f"127.0.0.1:{free_port()}", "costs", linger_s=0.01, buffer_max=100,
                            request_timeout_s=1.0, flush_at_exit=False)

    async def run() -> float:
        slowest = 0.0
        for i in range(250):
            started = time.perf_counter()
            batcher.add(ev("acme", i))
            slowest = max(slowest, time.perf_counter() - started)
            if i % 50 == 0:
                await asyncio.sleep(0.05)
        deadline = time.monotonic() + 10
        while batcher.send_errors == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await batcher.aclose(timeout_s=0.5)
        return slowest

    slowest = asyncio.run(run())
    assert slowest < 0.01  # add() never waits for the broker
    assert batcher.send_errors >= 1 and batcher.sent_events == 0
    assert batcher.buffered == 100 and batcher.dropped == 150
    kept = [event["cost_event_id"] for _, event in batcher._buffer]
    assert kept == [f"acme-{i}" for i in range(150, 250)]  # the oldest were dropped


def test_exit_flush_sends_what_no_loop_sent() -> None:
    """Events added outside a running loop wait; the atexit hook sends them on a fresh loop."""
    producer = FakeProducer()
    batcher = TenantBatcher("unused:1", "costs", producer_factory=lambda: producer, flush_at_exit=False)
    for i in range(3):
        batcher.add(ev("acme", i))
    assert batcher.buffered == 3 and producer.sent == []
    batcher._flush_at_exit()
    assert batcher.buffered == 0 and batcher.sent_events == 3 and producer.stopped == 1


# --- reservations ---------------------------------------------------------------------------------

class FakeHolds:
    """Stands in for AsyncReservations: allows until ``room`` USD is held, records releases."""

    def __init__(self, room: str) -> None:
        from decimal import Decimal

        self.room = Decimal(room)
        self.held: dict[str, Any] = {}
        self.released: list[tuple[str, str]] = []

    async def reserve(self, tenant: str, use_case: str, risk_tier: str, estimate: Any, call_id: str) -> Any:
        from spendwarden.gateway.reservations import Reservation

        if sum(self.held.values()) + estimate > self.room:
            return Reservation(False, False, call_id, "budget uc-daily has 0.000100 USD left", "support|uc-daily")
        self.held[call_id] = estimate
        return Reservation(True, True, call_id, "reserved")

    async def release(self, tenant: str, call_id: str) -> None:
        self.released.append((tenant, call_id))
        self.held.pop(call_id, None)


def test_with_reserve_on_a_call_holds_its_most_and_a_full_budget_answers_429() -> None:
    from decimal import Decimal

    from spendwarden.gateway.litellm_plugin import estimate_call

    plugin = logger(reserve=True)
    plugin._holds = FakeHolds("0.0003")
    plugin._client_loop = None
    first = body(tenant_id="acme", use_case_id="support", risk_tier="low") | {"max_tokens": 20}
    estimate = estimate_call(first, "0.01")
    assert Decimal("0.0002") < estimate < Decimal("0.00025")  # 20 output tokens at gpt-4o's price, a short prompt
    out = asyncio.run(plugin.async_pre_call_hook(KEY, None, first, "completion"))
    call_id = out["metadata"]["cost_event_id"]
    assert plugin._holds.held == {call_id: estimate} and plugin.stats.reserved == 1
    second = body(tenant_id="acme", use_case_id="support", risk_tier="low") | {"max_tokens": 20}
    with pytest.raises(Exception) as refused:
        asyncio.run(plugin.async_pre_call_hook(KEY, None, second, "completion"))
    assert refused.value.status_code == 429 and "uc-daily" in refused.value.detail
    assert refused.value.headers["Retry-After"] == "60" and plugin.stats.reservations_refused == 1
    # a failed attempt that the router retries keeps the hold; the request's final failure gives it back
    kwargs = {"litellm_params": {"metadata": out["metadata"]}, "response_cost": 0.0,
              "standard_logging_object": None}
    asyncio.run(plugin.async_log_failure_event(kwargs, None, None, None))
    assert plugin._holds.released == []
    asyncio.run(plugin.async_post_call_failure_hook(out, RuntimeError("upstream 500"), KEY))
    assert plugin._holds.released == [("acme", call_id)] and plugin._holds.held == {}
    asyncio.run(plugin.async_post_call_failure_hook(second, RuntimeError("refused by us"), KEY))
    assert len(plugin._holds.released) == 1  # the refused call held nothing
    assert estimate_call({"model": "no-such-model", "messages": []}, "0.01") == Decimal("0.01")
    no_cap = estimate_call({"model": "gpt-4o", "messages": []}, "0.01", output_tokens=1000)
    assert Decimal("0.01") <= no_cap < Decimal("0.0101")  # 1000 output tokens at $10 per million
