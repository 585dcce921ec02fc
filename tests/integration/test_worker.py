"""The live worker on a real broker and Redis: decisions, dead letters, duplicates, crashes, reloads."""

from __future__ import annotations

import json
import random
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

from harness import RULES, WorkerRun, encode, end_offsets, event, http, new_run, produce, read_topic


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path)
    yield worker
    worker.kill()


def decisions(redis_url: str, tenant: str = "acme") -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.hgetall(f"sw:{{{tenant}}}:decisions")
    finally:
        client.close()
    return {k.decode(): json.loads(v) for k, v in raw.items() if not k.startswith(b"_")}


def wait_for(check: Any, timeout_s: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def test_events_in_decision_hash_out(run: WorkerRun, redis_url: str) -> None:
    """Spend past a use case's limit puts a block verdict with rule, version and expiry in the tenant's hash."""
    run.start()
    run.wait_ready()
    produce(run.bootstrap, run.topics["events"], encode(event(i, "30") for i in range(4)))
    found = wait_for(lambda: decisions(redis_url), what="a decision in Redis")
    assert set(found) == {"chat:low", "chat:medium"}
    verdict = found["chat:low"]
    assert verdict["level"] == "block" and verdict["action"] == "block" and verdict["rule"] == "uc-cap"
    assert verdict["rules_version"] == run.budgets()["rules_version"]
    assert verdict["expires_at"].endswith("T00:00:00.000Z")
    client = redis.Redis.from_url(redis_url)
    expires = float(client.hget("sw:{acme}:decisions", "_expires_at"))
    on_stale = client.hget("sw:{acme}:decisions", "_on_stale")
    client.close()
    assert expires > time.time()
    assert on_stale == b"closed"  # the tenant's policy from the rules, for gateways once the state goes stale


def test_malformed_record_goes_to_dead_letter_and_good_ones_count(run: WorkerRun) -> None:
    """A bad record becomes a dead letter with reason and source offset; the records around it are counted."""
    run.start()
    run.wait_ready()
    records = encode([event(1, "1.5")]) + [(b"acme", b"{not json")] + encode([event(2, "2.25")])
    ends = produce(run.bootstrap, run.topics["events"], records)
    run.wait_offsets(ends)
    (letter,) = read_topic(run.bootstrap, run.topics["dead"], expect=1)
    assert letter["reason"] == "decode" and letter["raw"] == "{not json"
    assert letter["source"]["topic"] == run.topics["events"] and letter["source"]["offset"] >= 1
    totals = run.totals()
    assert sum(totals.values()) == Decimal("3.75")


def test_same_events_produced_twice_count_once(run: WorkerRun) -> None:
    """1,000 events produced twice (producer retries) leave totals equal to one copy."""
    run.start()
    run.wait_ready()
    events = [event(i, "0.001", use_case=f"uc{i % 5}") for i in range(1000)]
    produce(run.bootstrap, run.topics["events"], encode(events))
    ends = produce(run.bootstrap, run.topics["events"], encode(events))
    run.wait_offsets(ends)
    totals = run.totals()
    assert sum(totals.values()) == Decimal("1.000")
    assert all(value == Decimal("0.2") for value in totals.values()) and len(totals) == 5


@pytest.mark.parametrize("commit_interval_s", ["1", None], ids=["commit-every-second", "default-cadence"])
def test_kill_minus_nine_at_random_instants_leaves_totals_exact(run: WorkerRun, commit_interval_s: str | None,
                                                                ) -> None:
    """kill -9 of the worker at 5 random instants of one stream, restarting each time: totals exact to the nano-dollar.

    Committing every second, kills 0.5-2.5 s apart land between checkpoints and inside them, with
    part of the state saved, as on a busy worker; at the default cadence (5 s) most restarts
    re-read everything since an older checkpoint."""
    rng = random.Random(20261125)
    print("kill test seed 20261125")
    events = [event(i, f"0.{rng.randrange(1, 10**9):09d}", use_case=f"uc{i % 7}") for i in range(3000)]
    expected: dict[str, Decimal] = {}
    for e in events:
        expected[e["use_case_id"]] = expected.get(e["use_case_id"], Decimal(0)) + Decimal(e["allocated_cost_usd"])
    done = threading.Event()

    def producer() -> None:
        produce(run.bootstrap, run.topics["events"], encode(events), pace=lambda n: time.sleep(0.004))
        done.set()

    if commit_interval_s is not None:
        run.extra_env["SPENDWARDEN_COMMIT_INTERVAL_S"] = commit_interval_s
    run.start()
    run.wait_ready()
    thread = threading.Thread(target=producer)
    thread.start()
    for _ in range(5):
        time.sleep(rng.uniform(0.5, 2.5))
        run.kill()
        run.start()
        run.wait_ready(timeout_s=90)
    thread.join()
    run.wait_offsets(end_offsets(run.bootstrap, run.topics["events"]), timeout_s=90)
    totals = {key[1].split("/")[1]: value for key, value in run.totals().items()}
    assert totals == expected


def test_lower_limit_reload_blocks_and_broken_edit_keeps_last_good(run: WorkerRun, redis_url: str) -> None:
    """Lowering a limit in the rules directory blocks without a restart; a broken edit is refused and reported."""
    run.start()
    run.wait_ready()
    ends = produce(run.bootstrap, run.topics["events"], encode(event(i, "10") for i in range(5)))
    run.wait_offsets(ends)
    assert decisions(redis_url) == {}
    version = run.budgets()["rules_version"]
    (run.rules_dir / "rules.yaml").write_text(RULES.replace("LIMIT", "40"))
    found = wait_for(lambda: decisions(redis_url), what="block after lowering the limit")
    assert found["chat:low"]["level"] == "block" and found["chat:low"]["rules_version"] != version
    good = run.budgets()["rules_version"]
    (run.rules_dir / "rules.yaml").write_text(RULES.replace("LIMIT", "40").replace("used_ratio >=", "used_ratio >= >="))
    status, body = http(run.port, "/-/reload", method="POST")
    assert status == 400 and "rules.yaml:" in body["error"] and body["rules_version"] == good
    assert run.budgets()["rules_version"] == good
    assert decisions(redis_url)["chat:low"]["level"] == "block"
    metrics = http_text(run.port, "/metrics")
    assert "spendwarden_rule_reload_failures_total 1.0" in metrics or "spendwarden_rule_reload_failures_total 2.0" in metrics


def http_text(port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def _start_private_redis(tmp_path: Path, *extra: str) -> tuple[int, Any]:
    import shutil
    import subprocess

    from spendwarden.embedded import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed (these tests stop or lock down their own server)")
    port = free_port()
    folder = tmp_path / f"redis-{port}"
    folder.mkdir()
    processes: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        processes.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(folder), "--dbfilename", "dump.rdb", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop_all() -> None:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    start()
    return port, (start, stop_all)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A redis-server of this test's own (it gets stopped), keeping an RDB file across restarts."""
    port, (start, stop_all) = _start_private_redis(tmp_path)

    def start_and_wait() -> None:
        start()
        wait_for(lambda: _pings(port), timeout_s=10, what="private redis-server")

    try:  # a failed setup must not leave the server running
        wait_for(lambda: _pings(port), timeout_s=10, what="private redis-server")
        yield f"redis://127.0.0.1:{port}/0", start_and_wait
    finally:
        stop_all()


def _pings(port: int, password: str | None = None) -> bool:
    client = redis.Redis(port=port, password=password, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_redis_down_and_back_ends_with_the_right_decisions(run: WorkerRun, private_redis: Any) -> None:
    """Decisions made and lifted while Redis is down are all correct once it returns: new ones written, stale ones gone."""
    url, start_redis = private_redis
    run.redis_url = url
    run.start()
    run.wait_ready()
    ends = produce(run.bootstrap, run.topics["events"], encode(event(i, "30") for i in range(4)))
    run.wait_offsets(ends)
    assert wait_for(lambda: decisions(url), what="acme block")["chat:low"]["level"] == "block"
    client = redis.Redis.from_url(url)
    client.shutdown(save=True)  # the saved file still holds acme's block: stale once it is lifted
    client.close()
    (run.rules_dir / "rules.yaml").write_text(RULES.replace("LIMIT", "1000").replace(
        "tenants:\n", "tenants:\n  globex: {timezone: UTC, tier: gold}\n"))
    time.sleep(2.5)  # the worker reloads on its next tick: acme's block lifts while Redis is down
    ends = produce(run.bootstrap, run.topics["events"], encode(event(i, "400", tenant="globex") for i in range(3)))
    run.wait_offsets(ends)
    start_redis()
    wait_for(lambda: decisions(url, "globex"), timeout_s=30, what="globex block after Redis returned")
    wait_for(lambda: decisions(url, "acme") == {}, timeout_s=30, what="acme's stale block removed")
    assert decisions(url, "globex")["chat:low"]["level"] == "block"
    metrics = http_text(run.port, "/metrics")
    assert "spendwarden_redis_healthy 1.0" in metrics


def test_canary_secrets_never_reach_the_logs(run: WorkerRun, tmp_path: Path) -> None:
    """Redis passwords planted in the URL and in SPENDWARDEN_REDIS_PASSWORD appear in no log line,
    through errors: the password is changed under the running worker, which then logs refusals.
    (A wrong password at start is a one-line error: tests/integration/test_redis_acl.py.)"""
    canary_url, canary_password = "canary-url-pw-7f3a9c", "canary-env-pw-51b2e8"
    port, (_, stop_all) = _start_private_redis(tmp_path, "--requirepass", canary_url)
    try:
        run.redis_url = f"redis://:{canary_url}@127.0.0.1:{port}/0"  # the URL's password wins
        run.extra_env["SPENDWARDEN_REDIS_PASSWORD"] = canary_password
        run.extra_env["SPENDWARDEN_LOG_LEVEL"] = "debug"
        wait_for(lambda: _pings(port, canary_url), timeout_s=10, what="private redis-server")
        run.start()
        run.wait_ready()
        admin = redis.Redis(port=port, password=canary_url)
        admin.config_set("requirepass", "changed-under-the-worker")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        ends = produce(run.bootstrap, run.topics["events"],
                       encode([event(1, "500")]) + [(b"acme", b"\xff not json")])
        run.wait_offsets(ends)
        time.sleep(2)
        run.stop()
    finally:
        stop_all()
    text = run.log_path.read_text(errors="replace")
    assert "AuthenticationError" in text  # the failure was logged...
    assert canary_url not in text and canary_password not in text  # ...without the secrets


def test_rules_push_reaches_a_running_worker_and_a_broken_set_is_refused(run: WorkerRun, redis_url: str,
                                                                          tmp_path: Path) -> None:
    """`rules push` of a lower limit blocks in a running worker that follows the rules topic; a broken set never loads."""
    from click.testing import CliRunner

    from spendwarden.cli import main

    rules_topic = run.topics["decisions"] + "-rules"
    run.extra_env["SPENDWARDEN_RULES_TOPIC"] = rules_topic
    run.start()
    run.wait_ready()
    ends = produce(run.bootstrap, run.topics["events"], encode(event(i, "10") for i in range(5)))
    run.wait_offsets(ends)
    assert decisions(redis_url) == {}
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "rules.yaml").write_text(RULES.replace("LIMIT", "40"))
    result = CliRunner().invoke(main, ["rules", "push", str(lower), "--kafka", run.bootstrap, "--topic", rules_topic])
    assert result.exit_code == 0, result.output
    found = wait_for(lambda: decisions(redis_url), what="block after rules push")
    assert found["chat:low"]["level"] == "block"
    pushed_version = run.budgets()["rules_version"]
    assert pushed_version in result.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "rules.yaml").write_text(RULES.replace("LIMIT", "40").replace("period: day", "period: dya"))
    result = CliRunner().invoke(main, ["rules", "push", str(broken), "--kafka", run.bootstrap, "--topic", rules_topic])
    assert result.exit_code == 2 and "rules.yaml:" in result.output and "dya" in result.output
    assert run.budgets()["rules_version"] == pushed_version


def test_repartition_mode_counts_records_keyed_otherwise_exactly(run: WorkerRun, redis_url: str) -> None:
    """With repartition on, records with random keys and arrays mixing tenants give exact per-tenant totals and decisions."""
    run.extra_env["SPENDWARDEN_REPARTITION"] = "true"
    run.start()
    run.wait_ready()
    rng = random.Random(7)
    events = [event(i, "0.5", tenant=rng.choice(["acme", "globex", "initech"]), use_case="chat") for i in range(600)]
    expected: dict[str, Decimal] = {}
    for e in events:
        expected[e["tenant_id"]] = expected.get(e["tenant_id"], Decimal(0)) + Decimal("0.5")
    import orjson

    records = []
    for start in range(0, 600, 7):  # arrays of 7 mixed-tenant events, keyed by something else
        records.append((f"gateway-{rng.randrange(100)}".encode(), orjson.dumps(events[start:start + 7])))
    produce(run.bootstrap, run.topics["events"], records)
    produce(run.bootstrap, run.topics["events"], records[:20])  # a producer retry: duplicates

    def totals() -> dict[str, Decimal]:
        return {key[1].split("/")[0]: value for key, value in run.totals().items()}

    wait_for(lambda: totals() == expected, timeout_s=60, what=f"exact per-tenant totals {expected}")
    time.sleep(2)  # the duplicates have had time to arrive: still exact
    assert totals() == expected
    assert decisions(redis_url, "acme")["chat:low"]["level"] == "block"  # $100 limit crossed by ~$100


def test_platform_budget_across_tenants_is_summed_in_a_second_stage(run: WorkerRun) -> None:
    """Spend of tenants on different partitions sums exactly into one platform counter, which alerts once."""
    (run.rules_dir / "rules.yaml").write_text(RULES.replace("LIMIT", "1000"))
    (run.rules_dir / "platform.yaml").write_text("""
budgets:
  - {name: platform-daily, period: day, limit_usd: 50}
rules:
  - {name: platform-over, budget: platform-daily, when: budget.spend_usd > 50, severity: high}
""")
    run.start()
    run.wait_ready()
    tenants = [f"tenant-{n}" for n in range(8)]  # spread over the 4 partitions
    events = [event(i, "0.75", tenant=tenants[i % 8]) for i in range(80)]  # $60 in all
    produce(run.bootstrap, run.topics["events"], encode(events))

    def platform() -> Decimal:
        return sum((value for key, value in run.totals().items() if key[0] == "platform-daily"), Decimal(0))

    wait_for(lambda: platform() == Decimal("60.00"), timeout_s=60, what="platform total of $60")
    assert len([key for key in run.totals() if key[0] == "platform-daily"]) == 1  # one counter, not one per partition
    alerts = read_topic(run.bootstrap, run.topics["alerts"], expect=1)
    platform_alerts = [a for a in alerts if a["rule"] == "platform-over"]
    assert len(platform_alerts) == 1 and platform_alerts[0]["tenant_id"] is None
    assert Decimal(platform_alerts[0]["spend_usd"]) > 50
