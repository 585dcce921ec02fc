"""`spendwarden status` against a live worker: the figures are the engine's exact counters."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from harness import WorkerRun, encode, event, new_run, produce
from spendwarden.cli import main


@pytest.fixture
def run(broker: str, redis_url: str, topic_names: Any, tmp_path: Path) -> Iterator[WorkerRun]:
    worker = new_run(broker, redis_url, topic_names, tmp_path, limit="1000")
    yield worker
    worker.kill()


def test_status_equals_the_workers_totals_and_an_unknown_tenant_is_a_clear_error(run: WorkerRun) -> None:
    run.start()
    run.wait_ready()
    costs = {"chat": ["1.25", "2.5", "0.000000037"], "search": ["3", "4.75"]}
    events = [event(i, cost, use_case=uc, prefix=uc) for uc, items in costs.items() for i, cost in enumerate(items)]
    run.wait_offsets(produce(run.bootstrap, run.topics["events"], encode(events)))
    worker = f"http://127.0.0.1:{run.port}"

    result = CliRunner().invoke(main, ["status", "tenant=acme", "--worker", worker, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    status = {b["scope"]["use_case_id"]: b for b in report["budgets"] if b["budget"] == "uc-daily"}
    totals = {inst.split("/")[1]: usd for (budget, inst, period), usd in run.totals().items()
              if budget == "uc-daily" and period == status["chat"]["period_id"]}
    assert {uc: Decimal(b["spend_usd"]) for uc, b in status.items()} == totals == {
        uc: sum(map(Decimal, items)) for uc, items in costs.items()}
    chat = status["chat"]
    assert chat["limit_usd"] == "1000" and chat["used_ratio"] == pytest.approx(3.750000037 / 1000)
    assert chat["forecast"]["method"] in ("linear", "none") and Decimal(chat["forecast"]["end_usd"]) >= 3
    assert report["rules_version"] == run.budgets()["rules_version"]

    table = CliRunner().invoke(main, ["status", "tenant=acme", "use_case=search", "--worker", worker])
    assert table.exit_code == 0, table.output
    assert "uc-daily" in table.output and "use_case=search" in table.output and "$7.75" in table.output
    assert "use_case=chat" not in table.output

    missing = CliRunner().invoke(main, ["status", "tenant=nobody", "--worker", worker])
    assert missing.exit_code == 2 and "no worker asked counts tenant 'nobody'" in missing.output
