"""A real Prometheus scrapes a running worker: spend counters hold the exact totals, the shipped
recording rules evaluate, and a worker killed with SIGKILL comes back with counters no lower."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import WorkerRun, encode, event, new_run, produce
from spendwarden.embedded import free_port
from tooling import require_tool

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules" / "spendwarden.rules.yml"


def _require_prometheus() -> str:
    return require_tool("prometheus", "SPENDWARDEN_TEST_REQUIRE_PROMETHEUS", "prometheus")


class Prometheus:
    """A Prometheus server on a free localhost port scraping one target every second."""

    def __init__(self, binary: str, folder: Path, target_port: int) -> None:
        self.port = free_port()
        folder.mkdir()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES_FILE)],
            "scrape_configs": [{"job_name": "spendwarden-worker",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = open(folder / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant query: {tenant label (or the whole label set as text): value}."""
        result = self.get("/api/v1/query", query=expr)["result"]
        return {sample["metric"].get("tenant", json.dumps(sample["metric"], sort_keys=True)): float(sample["value"][1])
                for sample in result}

    def wait_for(self, expr: str, predicate: Any, timeout_s: float = 60) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        found: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                found = self.query(expr)
                if predicate(found):
                    return found
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        raise AssertionError(f"{expr} never matched; last {found}\n{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path, limit="100")
    yield worker
    worker.kill()


def priced(i: int, cost: str, tenant: str, model: str, tokens: tuple[int, int, int]) -> dict[str, Any]:
    found = event(i, cost, tenant=tenant, prefix=f"{tenant}-{model}-")
    found.update(model_or_service=model, input_tokens=tokens[0], output_tokens=tokens[1], cached_tokens=tokens[2])
    return found


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_prometheus_reads_exact_spend_and_evaluates_the_shipped_rules(run: WorkerRun, tmp_path: Path) -> None:
    binary = _require_prometheus()
    run.start()
    run.wait_ready()
    first = [priced(i, "1.25", "acme", "gpt-x", (1000, 100, 400)) for i in range(8)]
    first += [priced(i, "0.5", "beta", "small-y", (10, 1, 0)) for i in range(3)]
    run.wait_offsets(produce(run.bootstrap, run.topics["events"], encode(first)))
    prometheus = Prometheus(binary, tmp_path / "prometheus", run.port)
    try:
        prometheus.wait_for('token_cost_total_usd{job="spendwarden-worker"}',
                            lambda found: found == {"acme": 10.0, "beta": 1.5})
        tokens = prometheus.query('sum by (type) (token_usage_total{tenant="acme"})')
        assert {json.loads(k)["type"]: v for k, v in tokens.items()} == {"input": 8000, "output": 800, "cached": 3200}
        assert prometheus.query('spendwarden_budget_used_ratio{tenant="acme"}') == {"acme": pytest.approx(0.1)}

        time.sleep(3)  # a few scrapes of the first totals, so a rate has two points to span
        second = [priced(100 + i, "2", "acme", "gpt-x", (1, 1, 0)) for i in range(5)]
        run.wait_offsets(produce(run.bootstrap, run.topics["events"], encode(second)))
        prometheus.wait_for('token_cost_total_usd{tenant="acme"}', lambda found: found == {"acme": 20.0})
        # The shipped recording rule, evaluated by Prometheus itself over the scraped series.
        recorded = prometheus.wait_for('tenant:token_cost_usd:increase1h', lambda found: found.get("acme", 0) >= 10,
                                      timeout_s=150)  # the group runs once a minute
        # increase() extrapolates a little past the first and last samples; the counter moved by 10.
        assert 10 <= recorded["acme"] <= 20 and recorded.get("beta", 0.0) == 0.0

        # Every shipped rule evaluates without error on real series (groups run every minute).
        deadline = time.monotonic() + 90
        while True:
            rules = [rule for group in prometheus.get("/api/v1/rules")["groups"] for rule in group["rules"]]
            if all(rule["health"] != "unknown" for rule in rules) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert rules and all(rule["health"] == "ok" for rule in rules), [
            (rule["name"], rule["health"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    finally:
        prometheus.stop()


def test_spend_counters_never_go_down_across_a_kill(run: WorkerRun) -> None:
    """SIGKILL in the middle of a stream: whatever /metrics showed before, the restarted worker
    never shows less, and it ends at the exact total of the unique events."""
    run.extra_env["SPENDWARDEN_COMMIT_INTERVAL_S"] = "1"  # counters follow checkpoints: some before the kill
    run.start()
    run.wait_ready()
    events = [priced(i, "0.25", "acme", "gpt-x", (100, 10, 0)) for i in range(400)]
    ends: dict[int, int] = {}
    producer = threading.Thread(target=lambda: ends.update(produce(
        run.bootstrap, run.topics["events"], encode(events), pace=lambda n: time.sleep(0.01))))
    producer.start()
    highest = 0.0
    deadline = time.monotonic() + 30
    while highest < 20 and time.monotonic() < deadline:  # at least 80 events counted and checkpointed
        highest = max(highest, acme_cost(run.port) or 0.0)
        time.sleep(0.05)
    assert highest >= 20, run.tail()
    run.kill()  # SIGKILL while events keep arriving: no clean shutdown, no last checkpoint
    run.start()
    run.wait_ready()
    producer.join()
    duplicates = produce(run.bootstrap, run.topics["events"], encode(events[:10]))  # count once
    last = {p: max(end, duplicates.get(p, 0)) for p, end in ends.items()}
    deadline = time.monotonic() + 60
    after = 0.0
    while time.monotonic() < deadline:
        after = acme_cost(run.port)
        assert after is not None, "recovered (ready) but the tenant's series is missing"
        assert after >= highest, f"counter went down after the restart: {highest} -> {after}"
        if after == 100.0:
            break
        time.sleep(0.1)
    run.wait_offsets(last)
    assert acme_cost(run.port) == 100.0  # 400 x 0.25; the redelivered duplicates count once


def acme_cost(port: int) -> float | None:
    """acme's token_cost_total_usd on one worker (whatever partition holds it), None when absent."""
    found = [value for (name, labels), value in scrape(port).items()
             if name == "token_cost_total_usd" and dict(labels).get("tenant") == "acme"]
    return sum(found) if found else None
