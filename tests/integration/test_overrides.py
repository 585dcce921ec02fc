"""Manual overrides on the embedded stack: `spendwarden override` -> topic -> worker -> Redis."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from harness import WorkerRun, encode, event, http, new_run, produce
from spendwarden.cli import main
from test_worker import decisions, wait_for

# Below the harness's block at 100% of the use case's day: L1 from 50%, so more spend escalates
# a verdict while an override holds the field.
DEGRADE = """
rules:
  - name: uc-degrade
    budget: uc-daily
    when: budget.used_ratio >= 0.5
    decide: {level: L1, only_risk_tiers: [low, medium], model_alias: cheaper-model}
"""


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path, **{"degrade.yaml": DEGRADE})
    worker.extra_env["SPENDWARDEN_OVERRIDES_TOPIC"] = topic_names("overrides")["overrides"]
    yield worker
    worker.kill()


def override(run: WorkerRun, *args: str) -> str:
    env = {"SPENDWARDEN_KAFKA_BOOTSTRAP": run.bootstrap,
           "SPENDWARDEN_OVERRIDES_TOPIC": run.extra_env["SPENDWARDEN_OVERRIDES_TOPIC"]}
    result = CliRunner().invoke(main, ["override", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def metrics(run: WorkerRun) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_block_reaches_redis_within_a_second_and_lifts_at_expiry(run: WorkerRun, redis_url: str) -> None:
    """A tenant that never sent an event is blocked on every tier, then the block ends by itself."""
    run.start()
    run.wait_ready()
    status, ready = http(run.port, "/readyz")
    assert status == 200 and ready["overrides"] is True
    output = override(run, "set", "tenant=newco", "--block", "--for", "6s", "--reason", "card declined",
                      "--author", "alice")
    assert "covers high-risk traffic" in output
    found = wait_for(lambda: decisions(redis_url, "newco"), timeout_s=1.0, what="the override in Redis")
    assert set(found) == {"*:low", "*:medium", "*:high"}
    verdict = found["*:high"]
    assert verdict["level"] == "block" and verdict["rule"] == "manual-override"
    assert verdict["reason"].startswith("manual override by alice: card declined")
    assert "high-risk" in verdict["reason"] and verdict["override"]["author"] == "alice"
    assert 'spendwarden_overrides_active{action="block"} 1.0' in metrics(run)

    # Lifted on the tick after its end (SPENDWARDEN_TICK_S, 1 s): not before, and within ~2 s.
    expires_at = datetime.fromisoformat(verdict["expires_at"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, expires_at - 0.5 - time.time()))
    assert decisions(redis_url, "newco"), "lifted before its expiry"
    while decisions(redis_url, "newco") and time.time() < expires_at + 10:
        time.sleep(0.05)
    lifted_after_s = time.time() - expires_at
    assert not decisions(redis_url, "newco") and lifted_after_s <= 2.0, f"lifted {lifted_after_s:.2f} s after expiry"
    assert 'spendwarden_overrides_active{action="block"} 0.0' in metrics(run)


def test_unblock_wins_over_a_rule_block_survives_traffic_and_restart_and_clear_restores_it(
        run: WorkerRun, redis_url: str) -> None:
    run.start()
    run.wait_ready()
    produce(run.bootstrap, run.topics["events"], encode(event(i, "30") for i in range(2)))
    assert wait_for(lambda: decisions(redis_url).get("chat:low"), what="the rule's L1")["level"] == "L1"

    override(run, "set", "tenant=acme", "use_case=chat", "--unblock", "--tiers", "low", "--for", "1h",
             "--reason", "launch day", "--author", "bob")
    lifted = wait_for(lambda: decisions(redis_url).get("chat:low", {}).get("level") == "L0" and decisions(redis_url),
                      timeout_s=5, what="the unblock")
    assert lifted["chat:low"]["action"] == "allow" and "manual override by bob" in lifted["chat:low"]["reason"]
    assert lifted["chat:medium"]["level"] == "L1"  # not covered: the rule still decides

    # More spend escalates the rules' verdict to block on both tiers: the covered field keeps the
    # override, the other one follows the rules.
    produce(run.bootstrap, run.topics["events"], encode(event(i, "30", prefix="more") for i in range(2)))
    escalated = wait_for(lambda: decisions(redis_url).get("chat:medium", {}).get("level") == "block"
                         and decisions(redis_url), timeout_s=10, what="the rule's block on chat:medium")
    assert escalated["chat:low"]["level"] == "L0" and escalated["chat:low"]["rule"] == "manual-override"
    time.sleep(1.0)
    assert decisions(redis_url)["chat:low"]["level"] == "L0"

    # A restart reads the topic before publishing.
    run.kill()
    override(run, "set", "tenant=acme", "use_case=search", "--degrade", "small-model", "--tiers", "low",
             "--for", "1h", "--reason", "set while no worker ran")
    run.start()
    run.wait_ready()
    after = wait_for(lambda: "search:low" in decisions(redis_url) and decisions(redis_url), timeout_s=5,
                     what="the override set while the worker was down")
    assert after["search:low"]["model_alias"] == "small-model" and after["chat:low"]["level"] == "L0"

    listed = override(run, "list", "tenant=acme")
    assert "unblock  tenant=acme use_case=chat" in listed and "by bob: launch day" in listed
    as_json = [json.loads(line) for line in override(run, "list", "--json").splitlines()]
    assert {o["action"] for o in as_json} == {"unblock", "degrade"} and all(o["state"] == "active" for o in as_json)

    override(run, "clear", "tenant=acme", "use_case=chat", "--reason", "launch over", "--author", "carol")
    wait_for(lambda: decisions(redis_url).get("chat:low", {}).get("level") == "block", timeout_s=5,
             what="the rule's block to return")
    assert "cleared" in override(run, "list", "tenant=acme", "--all")


def test_a_bad_override_record_is_refused_and_the_worker_goes_on(run: WorkerRun, redis_url: str) -> None:
    run.start()
    run.wait_ready()
    topic = run.extra_env["SPENDWARDEN_OVERRIDES_TOPIC"]
    produce(run.bootstrap, topic, [(b"acme|*|*", b"{not json"), (b"acme|*|*", b'{"tenant_id": "acme"}')])
    wait_for(lambda: 'spendwarden_override_records_total{outcome="refused"} 2.0' in metrics(run), timeout_s=10,
             what="both records refused")
    override(run, "set", "tenant=acme", "--block", "--tiers", "low", "--for", "1h", "--reason", "after bad ones")
    assert wait_for(lambda: decisions(redis_url).get("*:low"), timeout_s=5, what="a good override")["level"] == "block"
