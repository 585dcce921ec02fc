"""Worker metrics that must never be absent or start late (streams/metrics.py)."""

from __future__ import annotations

from prometheus_client import generate_latest

from spendwarden.streams.metrics import DEAD_LETTER_REASONS, WorkerMetrics


def lines(metrics: WorkerMetrics, name: str) -> list[str]:
    return [line for line in generate_latest(metrics.registry).decode().splitlines() if line.startswith(name + "{")]


def test_the_rules_version_is_replaced_never_left_empty() -> None:
    metrics = WorkerMetrics()
    metrics.set_rules_version("v1")
    metrics.set_rules_version("v2")
    metrics.set_rules_version("v2")
    assert lines(metrics, "spendwarden_rules_info") == ['spendwarden_rules_info{version="v2"} 1.0']


def test_every_dead_letter_reason_is_exported_from_the_start() -> None:
    found = lines(WorkerMetrics(), "spendwarden_dead_letters_total")
    assert sorted(line.split('"')[1] for line in found) == sorted(DEAD_LETTER_REASONS)
    assert all(line.endswith(" 0.0") for line in found)
