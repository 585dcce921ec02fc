"""`spendwarden replay kafka://TOPIC`: a range of the real topic through the engine, no consumer group."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import SPENDWARDEN, WorkerRun, encode, event, new_run, produce
from spendwarden.replay.kafka_source import KafkaRangeSource, RangeBound
from spendwarden.replay.run import ListSink, replay
from spendwarden.rules.loader import load_ruleset
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.money import nanos_to_usd
from spendwarden.streams.pricebook import Pricebook

PLATFORM = """
budgets:
  - {name: platform-daily, period: day, limit_usd: 1000}
rules:
  - {name: platform-over, budget: platform-daily, when: budget.spend_usd > 1000}
"""


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path, **{"platform.yaml": PLATFORM})
    yield worker
    worker.kill()


def produce_in_batches(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Send without waiting per record, so records share batches (a partition's log then ends
    inside a multi-record batch, which some brokers' ListOffsets get wrong)."""
    async def run() -> dict[int, int]:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
        await producer.start()
        try:
            sent = [await producer.send(topic, value, key=key) for key, value in records]
            ends: dict[int, int] = {}
            for meta in await asyncio.gather(*sent):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
            return ends
        finally:
            await producer.stop()

    return asyncio.run(run())


def replay_totals(run: WorkerRun, start: RangeBound | None = None, end: RangeBound | None = None
                  ) -> tuple[dict[tuple[str, str, str], Decimal], Any]:
    source = KafkaRangeSource(run.bootstrap, run.topics["events"], start, end).open()
    result = replay(source, load_ruleset(run.rules_dir), Ingest(Pricebook.default()), ListSink())
    assert result.engine is not None
    totals = {(budget, "/".join(inst), period): nanos_to_usd(nanos)
              for (budget, inst, period), nanos in result.engine.totals().items()}
    return totals, result


def test_replay_of_the_topic_equals_the_live_workers_totals(run: WorkerRun) -> None:
    """8 tenants over 4 partitions, producer duplicates and a malformed record: the replay of the
    whole topic ends with the worker's counters, cross-tenant platform total included."""
    run.start()
    run.wait_ready()
    tenants = [f"tenant-{n}" for n in range(8)]
    events = [event(i, f"0.{i % 9 + 1}", tenant=tenants[i % 8], use_case=f"uc{i % 3}") for i in range(400)]
    records = encode(events) + encode(events[:50]) + [(b"tenant-1", b"{not json")]
    ends = produce_in_batches(run.bootstrap, run.topics["events"], records)
    run.wait_offsets(ends)
    live = run.totals()
    replayed, result = replay_totals(run)
    assert replayed == live
    assert sum(v for k, v in replayed.items() if k[0] == "platform-daily") == sum(
        (Decimal(e["allocated_cost_usd"]) for e in events), Decimal(0))
    assert result.records == 451 and result.rejected == {"decode": 1}
    assert result.engine.stats.duplicates == 50


def test_range_by_time_and_the_cli_without_a_consumer_group(run: WorkerRun, tmp_path: Path) -> None:
    """--from a time between two bursts replays only the second; the CLI prints the summary as
    JSON and the dead-letter report names partition and offset; a missing topic is one line."""
    produce(run.bootstrap, run.topics["events"], encode(event(i, "1", prefix="a") for i in range(20)))
    time.sleep(1.2)
    middle = datetime.now(timezone.utc).isoformat()
    time.sleep(0.2)
    produce(run.bootstrap, run.topics["events"],
            encode(event(i, "2", prefix="b") for i in range(10)) + [(b"acme", b"[1, 2")])
    day = datetime.now(timezone.utc).date().isoformat()
    second, _ = replay_totals(run, start=RangeBound.parse(middle, "--from"))
    assert second == {("uc-daily", "acme/chat", day): Decimal(20), ("platform-daily", "", day): Decimal(20)}
    everything, _ = replay_totals(run)
    assert everything[("uc-daily", "acme/chat", day)] == Decimal(40)

    out = tmp_path / "out"
    env = {**os.environ, "SPENDWARDEN_KAFKA_BOOTSTRAP": run.bootstrap}
    done = subprocess.run([SPENDWARDEN, "replay", f"kafka://{run.topics['events']}", "--rules",
                           str(run.rules_dir), "--from", middle, "--json", "--no-progress", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["records"] == 11 and summary["events"] == 10 and summary["rejected"] == {"decode": 1}
    dead = json.loads((out / "dead-letter.jsonl").read_text().splitlines()[0])
    assert dead["source"]["topic"] == run.topics["events"] and dead["source"]["offset"] >= 0
    assert "partition" in dead["source"]

    bad = subprocess.run([SPENDWARDEN, "replay", "kafka://no-such-topic", "--rules", str(run.rules_dir)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert [line for line in bad.stderr.splitlines() if line.strip()] == [
        f"spendwarden: error: topic 'no-such-topic' not found on {run.bootstrap}"]


def test_showback_of_the_live_cost_topic_joins_its_bridged_outcomes(broker: str, topic_names: Any,
                                                                    tmp_path: Path) -> None:
    """`report showback kafka://TOPIC`: the cost topic as the worker reads it (events, a producer
    duplicate, arrays of outcomes the outcome bridge re-keyed by tenant, a bad record) gives the
    period's rows without a consumer group; the same records from a file give the same CSV."""
    from harness import make_topics

    topics = topic_names("events")
    make_topics(broker, topics)
    ts = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)
    events = [dict(event(i, "0.25", tenant=f"t{i % 2}", use_case="support", ts=ts), trace_id=f"tr{i}")
              for i in range(8)]
    outcomes = {tenant: [{"record_type": "outcome", "business_outcome_id": f"o{i}", "trace_id": f"tr{i}",
                          "ts": ts.isoformat(), "tenant_id": tenant, "outcome": "resolved"}
                         for i in range(8) if f"t{i % 2}" == tenant] for tenant in ("t0", "t1")}
    records = encode(events) + encode(events[:2]) + [
        (tenant.encode(), json.dumps(items).encode()) for tenant, items in outcomes.items()] + [(b"t0", b"{oops")]
    produce_in_batches(broker, topics["events"], records)
    env = dict(os.environ, SPENDWARDEN_KAFKA_BOOTSTRAP=broker)
    live_csv, file_csv = tmp_path / "live.csv", tmp_path / "file.csv"
    live = subprocess.run([SPENDWARDEN, "report", "showback", f"kafka://{topics['events']}", "--period", "2026-11",
                           "--by", "tenant_id", "--csv", str(live_csv), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert live.returncode == 0, live.stderr
    (tmp_path / "topic.jsonl").write_bytes(b"".join(value + b"\n" for _, value in records))
    from_file = subprocess.run([SPENDWARDEN, "report", "showback", str(tmp_path / "topic.jsonl"), "--period",
                                "2026-11", "--by", "tenant_id", "--csv", str(file_csv), "--no-progress"],
                               capture_output=True, text=True, env=env, timeout=120)
    assert from_file.returncode == 0, from_file.stderr
    with live_csv.open(newline="") as handle:
        rows = {row["tenant_id"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == ["", "t0", "t1"]  # two tenants and the total
    figures = ("spend_usd", "events", "outcomes", "resolved", "cost_per_outcome_usd", "cost_per_resolved_usd")
    assert {k: rows[""][k] for k in figures} == {"spend_usd": "2", "events": "8", "outcomes": "8", "resolved": "8",
                                                 "cost_per_outcome_usd": "0.25", "cost_per_resolved_usd": "0.25"}
    assert rows["t0"]["outcomes"] == rows["t1"]["outcomes"] == "4"
    assert live_csv.read_text() == file_csv.read_text()
    assert "1 rejected (decode 1)" in live.stderr and "2 duplicates" in live.stderr
