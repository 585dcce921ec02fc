"""The worker's trace bridge: a record that did not land stops every later commit (money is
never committed past a lost send), and a refused export becomes one dead letter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from spendwarden.settings import Settings
from spendwarden.streams.service import Service
from test_trace_bridge import export
from test_worker_gaps import RULES


class Topic:
    """Records what is sent; each send's delivery succeeds or fails."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[Any, bytes]] = []
        self.fail = fail

    async def send(self, key: Any = None, value: bytes = b"") -> asyncio.Future[Any]:
        self.sent.append((key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_exception(RuntimeError("broker refused")) if self.fail else future.set_result(None)
        return future


def service(tmp_path: Path) -> Service:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", rules_dir=rules, data_dir=tmp_path / "data",
                        redis_url="redis://127.0.0.1:9/0", app_id="sw-unit-bridge", traces_topic="traces")
    return Service(settings)


def record(value: bytes | None, offset: int = 0) -> Any:
    return SimpleNamespace(value=value, key=None, message=SimpleNamespace(topic="traces", partition=0, offset=offset))


def test_a_lost_bridged_record_stops_this_commit_and_every_later_one(tmp_path: Path) -> None:
    worker = service(tmp_path)
    worker.cost_topic = Topic(fail=True)

    async def run() -> None:
        await worker.bridge_traces([record(export({"acme": 3, "globex": 1}))])
        assert [key for key, _ in worker.cost_topic.sent] == [b"acme", b"globex"]
        with pytest.raises(RuntimeError, match="broker refused"):
            await worker._settle_bridge_sends()
        worker.cost_topic = Topic()  # the broker is back: still no commit before a restart
        await worker.bridge_traces([record(export({"acme": 1}), 1)])
        with pytest.raises(RuntimeError, match="broker refused"):
            await worker._settle_bridge_sends()

    asyncio.run(run())


def test_landed_records_let_the_commit_go_and_a_bad_export_is_one_dead_letter(tmp_path: Path) -> None:
    worker = service(tmp_path)
    worker.cost_topic, worker.dead_letter_topic = Topic(), Topic()
    bad = orjson.loads(export({"acme": 3}))
    for span in bad["resourceSpans"][0]["scopeSpans"][0]["spans"][:2]:
        span["endTimeUnixNano"] = "soon"

    async def run() -> None:
        await worker.bridge_traces([record(orjson.dumps(bad)), record(None, 1)])
        await worker._settle_bridge_sends()  # nothing failed: no exception

    asyncio.run(run())
    assert [len(orjson.loads(value)) for _, value in worker.cost_topic.sent] == [1]
    letters = [orjson.loads(value) for _, value in worker.dead_letter_topic.sent]
    assert [(d["rejected_spans"], d["source"]["offset"]) for d in letters] == [(2, 0), (1, 1)]
    assert [r["index"] for r in letters[0]["rejections"]] == [0, 1]
