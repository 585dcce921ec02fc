"""Business outcomes on a real broker (docs/traces.md, "Outcomes in"): outcomes sent to the outcomes
topic are re-keyed by tenant into the cost topic, join the cost of their traces in the worker's
engine (a unit.* rule fires with the joined figures), and bad ones are dead-lettered."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from harness import WorkerRun, add_input_topic, encode, event, new_run, produce, read_topic

UNIT_RULES = """
rules:
  - name: uc-resolved
    budget: uc-daily
    when: unit.day.resolved >= 2.0
    severity: low
"""


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path, limit="1000", **{"unit.yaml": UNIT_RULES})
    add_input_topic(worker, broker, topic_names, "outcomes", "SPENDWARDEN_OUTCOMES_TOPIC")
    yield worker
    worker.kill()


def outcomes_counted(worker: WorkerRun) -> dict[str, float]:
    """spendwarden_outcomes_total by kind, from the worker's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith('spendwarden_outcomes_total{kind="'):
            kind = line.split('"')[1]
            found[kind] = float(line.rsplit(" ", 1)[1])
    return found


def outcome(n: int, tenant: str = "acme", kind: str = "resolved") -> dict[str, Any]:
    return {"business_outcome_id": f"o{n}", "trace_id": f"t{n}", "ts": event(0, "0")["ts"], "tenant_id": tenant,
            "use_case_id": "chat", "outcome": kind}


def test_outcomes_join_their_traces_cost_in_the_engine_and_bad_ones_are_dead_lettered(run: WorkerRun) -> None:
    run.start()
    run.wait_ready()
    costs = [{**event(n, "0.5"), "trace_id": f"t{n}"} for n in (1, 2, 3)]
    produce(run.bootstrap, run.topics["events"], encode(costs))
    # Tenants mixed in one record, one bad element; a record that is no JSON; the same outcome again.
    mixed = [outcome(1), outcome(9, "globex"), {**outcome(5), "outcome": "great"}, outcome(2)]
    produce(run.bootstrap, run.topics["outcomes"], [(b"", orjson.dumps(mixed)), (b"", b"not json"),
                                                   (b"x", orjson.dumps(outcome(1)))])
    # A producer's own marked outcome on the cost topic that is no outcome.
    produce(run.bootstrap, run.topics["events"],
            [(b"acme", orjson.dumps({**outcome(7), "record_type": "outcome", "tenant_id": None}))])

    deadline = time.monotonic() + 60
    counted: dict[str, float] = {}
    while time.monotonic() < deadline:
        counted = outcomes_counted(run)
        if counted.get("counted", 0) + counted.get("duplicates", 0) >= 4:
            break
        time.sleep(0.25)
    assert counted == {"read": 5, "bridged": 4, "rejected": 2, "counted": 3, "duplicates": 1, "too_late": 0}, \
        run.tail()

    # The next cost event of the scope evaluates its rules: two resolved cases joined to $1.00.
    produce(run.bootstrap, run.topics["events"], encode([{**event(4, "0.5"), "trace_id": "t4"}]))
    alerts = read_topic(run.bootstrap, run.topics["alerts"], expect=1, timeout_s=30)
    assert [(a["kind"], a["rule"], a["scope"]) for a in alerts] == [
        ("alert_firing", "uc-resolved", {"tenant_id": "acme", "use_case_id": "chat"})], run.tail()
    day = alerts[0]["unit"]["day"]
    assert (day["outcomes"], day["resolved"], day["cost_per_resolved_case_usd"]) == (2.0, 2.0, 0.5)

    dead = read_topic(run.bootstrap, run.topics["dead"], expect=3)
    by_topic = {d["source"]["topic"]: d for d in dead if d["source"]["topic"] == run.topics["events"]}
    bridged = sorted((d["reason"], d.get("rejected_outcomes"), [r["index"] for r in d.get("rejections", [])])
                     for d in dead if d["source"]["topic"] == run.topics["outcomes"])
    assert bridged == [("decode", 1, [None]), ("invalid", 1, [2])]
    assert by_topic[run.topics["events"]]["reason"] == "invalid"
    assert by_topic[run.topics["events"]]["field"] == "tenant_id"
