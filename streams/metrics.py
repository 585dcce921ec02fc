"""Prometheus metrics of the worker, on a registry of their own (tests pass a fresh one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def add_health_pages(app: Any, registry: CollectorRegistry,
                     frozen: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
    """``/metrics`` (this registry) and ``/healthz`` on a Faust app: the worker's and the router's.

    The exposition is formatted in a thread: at full label caps it is hundreds of thousands of
    lines (docs/metrics.md), which must not stall the event loop. ``frozen`` copies what needs
    the loop's state first (the worker's spend series).
    """
    lock = asyncio.Lock()  # one scrape at a time: the snapshot is shared

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        async with lock:
            with frozen():
                body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})


# The reasons of spendwarden.exceptions.RejectedEvent (streams/ingest.py).
DEAD_LETTER_REASONS = ("decode", "too_large", "invalid", "future", "unpriced")


class WorkerMetrics:
    """Everything /metrics exports; names documented in docs/service.md."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("spendwarden_records_consumed_total", "Kafka records consumed", registry=r)
        self.events = Counter("spendwarden_events_total", "Cost events counted by the engine", registry=r)
        self.duplicates = Counter("spendwarden_duplicate_events_total", "Producer duplicates ignored", registry=r)
        self.dead_letters = Counter("spendwarden_dead_letters_total", "Records sent to the dead-letter topic",
                                    ["reason"], registry=r)
        for reason in DEAD_LETTER_REASONS:  # at 0 from the start, so increase() sees the first one
            self.dead_letters.labels(reason=reason)
        self.too_late = Counter("spendwarden_too_late_events_total", "Events older than the dedupe horizon",
                                registry=r)
        self.decisions = Counter("spendwarden_decision_changes_total", "Decision changes by level",
                                 ["level"], registry=r)
        self.alerts = Counter("spendwarden_alerts_total", "Alert transitions", ["state", "severity"], registry=r)
        self.alerts_firing = Gauge("spendwarden_alerts_firing", "Alerts firing now", registry=r)
        self.latency = Histogram(
            "spendwarden_event_to_decision_seconds", "Event time to decision written (per batch, newest event)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.batch_seconds = Histogram("spendwarden_batch_processing_seconds", "Processing time of one batch",
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                       registry=r)
        self.lag = Gauge("spendwarden_consumer_lag_records", "Records behind the partition end", ["partition"],
                         registry=r)
        self.redis_healthy = Gauge("spendwarden_redis_healthy", "1 when the last Redis write succeeded",
                                   registry=r)
        self.heartbeat = Gauge("spendwarden_heartbeat_timestamp_seconds",
                               "Unix time of the last decision heartbeat Redis accepted", registry=r)
        self.redis_rejected = Counter("spendwarden_redis_fenced_writes_total",
                                      "Redis writes refused by the fence (a newer owner wrote)", registry=r)
        self.rules_version = Gauge("spendwarden_rules_info", "Active rule set (version label)", ["version"],
                                   registry=r)
        self.rule_reload_failures = Counter("spendwarden_rule_reload_failures_total",
                                            "Rule reloads refused (the last good set stays)", registry=r)
        self.checkpoint_records = Counter("spendwarden_checkpoint_records_total",
                                          "State keys written to the changelog (end markers excluded)",
                                          registry=r)
        self.checkpoints = Counter("spendwarden_checkpoints_total", "Checkpoints that wrote at least one key",
                                   registry=r)
        self.refetched = Counter("spendwarden_refetched_records_total",
                                 "Records the stream skipped, read directly before counting", registry=r)
        self.trace_spans = Counter("spendwarden_trace_spans_total",
                                   "Spans read from the traces topic, by what became of them (docs/traces.md)",
                                   ["kind"], registry=r)
        self.outcomes = Counter("spendwarden_outcomes_total",
                                "Business outcomes by what became of them: read, bridged, rejected by the outcomes "
                                "bridge; counted, duplicates, too_late by the engine (docs/traces.md)",
                                ["kind"], registry=r)
        # At 0 from the start: outcomes may reach the cost topic without the bridge.
        for kind in ("counted", "duplicates", "too_late"):
            self.outcomes.labels(kind=kind)
        self.partitions = Gauge("spendwarden_partitions_owned", "Partitions this worker owns", registry=r)
        self.overrides_active = Gauge("spendwarden_overrides_active", "Manual overrides in force, by action",
                                      ["action"], registry=r)
        self.override_records = Counter("spendwarden_override_records_total",
                                        "Override records read from the topic (refused: unusable, skipped)",
                                        ["outcome"], registry=r)

    def set_rules_version(self, version: str) -> None:
        """The new version first, then the old ones go: a scrape in between (it runs in a thread)
        never finds no version at all."""
        self.rules_version.labels(version=version).set(1)
        for (old,) in list(self.rules_version._metrics):  # prometheus-client keeps children by label values
            if old != version:
                self.rules_version.remove(old)
