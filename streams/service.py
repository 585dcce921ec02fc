"""The live worker: a Faust app that feeds cost-event batches to the engine and publishes effects.

- One agent reads ``ai.cost-events`` in batches (``take_events``) so Faust's per-record cost is
  paid once per record, and the engine's per-event work runs on in-memory state.
- Right before each offset commit (every ``commit_interval_s`` or ``commit_every`` records) the
  state keys changed since the last one go to the changelog of a table (``CheckpointTable``):
  the committed position never passes what was checkpointed, and the engine's position fences
  make replays after a crash exact.
- Decisions go to Redis (fenced by the Kafka group generation and the source position) and to
  the compacted ``spendwarden.decisions`` topic; alerts to ``spendwarden.alerts``; bad records
  to ``spendwarden.dead-letter``; events older than the dedupe horizon to ``spendwarden.late``.
- With ``traces_topic`` or ``outcomes_topic`` set, a bridge agent re-keys OTLP spans (as cost
  events) or business outcomes by tenant into the cost topic (docs/traces.md).
- A timer ticks the engines with the wall clock, refreshes the Redis heartbeat, republishes
  everything after a Redis outage, and reloads rules when their files change.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any, Optional

import faust
import orjson

from spendwarden.exceptions import ConfigError
from spendwarden.gc_policy import use_engine_thresholds
from spendwarden.kafka_security import aiokafka_options, faust_credentials
from spendwarden.logs import get_logger
from spendwarden.rules.loader import RuleStore, rule_files
from spendwarden.settings import Settings
from spendwarden.streams import reservations
from spendwarden.streams.checkpoint import WRITE_LAST, decode_key, decode_value, encode_key, encode_value
from spendwarden.streams.effects import AlertFiring, AlertResolved, DecisionChanged, Effect, TooLate
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.engine_state import split_position
from spendwarden.streams.metrics import WorkerMetrics, add_health_pages
from spendwarden.streams.money import usd_text
from spendwarden.streams.override_layer import OverrideLayer
from spendwarden.streams.pricebook import Pricebook
from spendwarden.streams.refetch import Refetcher
from spendwarden.streams.spend_metrics import SpendMetrics
from spendwarden.streams.usage import KIND as USAGE
from spendwarden.streams.worker_core import BatchResult, Record, WorkerCore, route_by_tenant

log = get_logger("spendwarden.service")
PROGRESS_CHANNEL = "sw:progress"
CHECKPOINT_MARKER = ("checkpoint",)
DEAD_LETTER_RAW_BYTES = 64 * 1024


class CheckpointTable(faust.Table):  # type: ignore[misc]
    """A table whose raw keys start with the partition number, which picks the changelog partition.

    Faust would otherwise take the partition of the event being processed, and a batch mixes
    partitions; and writes from the tick timer have no event at all.
    """

    service: Optional["Service"] = None

    def partition_for_key(self, key: Any) -> Optional[int]:
        return int(key[1:key.index(b",")])

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        if self.service is not None:
            counted = getattr(self.service, "counted_partitions", None)  # the router counts every topic's
            self.service.on_revoked(counted(revoked) if counted else {tp.partition for tp in revoked})

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self.service is not None:
            # active_tps are this table's changelog partitions, numbered as the counted topic's
            await self.service.on_recovered({tp.partition for tp in active_tps})


def _patch_fetch_wait(ms: int) -> None:
    """faust-streaming passes a fixed fetch_max_wait_ms=1500 to aiokafka; use ours instead.

    A broker that holds a fetch for the full wait (Tansu does; FACTS.md) otherwise adds up to
    1.5 s to every decision. Only Faust's fixed value is replaced.
    """
    from faust.transport.drivers import aiokafka as driver

    base = driver.aiokafka.AIOKafkaConsumer
    if getattr(base, "_spendwarden_patched", False):
        base._spendwarden_fetch_wait = ms
        return

    class Consumer(base):  # type: ignore[misc, valid-type]
        _spendwarden_patched = True
        _spendwarden_fetch_wait = ms

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("fetch_max_wait_ms") == 1500:
                kwargs["fetch_max_wait_ms"] = type(self)._spendwarden_fetch_wait
            super().__init__(*args, **kwargs)

    driver.aiokafka.AIOKafkaConsumer = Consumer


def faust_app_settings(s: Settings) -> dict[str, Any]:
    """The Faust app settings of the worker (also used by bench/service.py's bare agent)."""
    return dict(
        broker=f"kafka://{s.kafka_bootstrap}", store=s.store, datadir=str(s.data_dir),
        topic_partitions=s.partitions, topic_replication_factor=s.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_s, broker_heartbeat_interval=1.0,
        broker_max_poll_records=max(s.batch_max_records, 500),
        broker_commit_interval=s.commit_interval_s, broker_commit_every=s.commit_every,
        stream_buffer_maxsize=max(4 * s.batch_max_records, 4096),
        web_host=s.http_host, web_port=s.http_port, web_enabled=True,
        producer_linger=0.005, logging_config=None,
        broker_credentials=faust_credentials(s),
    )


class Service:
    """Builds the Faust app and holds what its agent, timer and web pages share."""

    def __init__(self, settings: Settings, redis_client: Any = None) -> None:
        self.settings = settings
        if not settings.kafka_bootstrap:
            raise ConfigError("no Kafka configured: set SPENDWARDEN_KAFKA_BOOTSTRAP (or use `spendwarden up`)")
        self.rules = RuleStore(settings.rules_dir)
        pricebook = Pricebook.load(settings.pricebook) if settings.pricebook else Pricebook.default()
        self.trace_bridge = _trace_bridge(settings, pricebook) if settings.traces_topic else None
        self.outcome_bridge = _outcome_bridge(settings) if settings.outcomes_topic else None
        self.ingest = Ingest(pricebook, max_record_bytes=settings.max_record_bytes,
                             max_future_skew_s=settings.max_future_skew_s)
        self.core = WorkerCore(self.rules.current, self.ingest)
        self.metrics = WorkerMetrics()
        self.metrics.set_rules_version(self.rules.version)
        if self.trace_bridge is not None:  # at 0 from the start, so increase() sees the first
            for kind in ("spans", "events", "rejected", "not_genai", "no_cost_operation", "unpriced_tool"):
                self.metrics.trace_spans.labels(kind=kind)
        if self.outcome_bridge is not None:
            from spendwarden.streams.outcome_bridge import BRIDGE_KINDS

            for kind in BRIDGE_KINDS:
                self.metrics.outcomes.labels(kind=kind)
        self.spend_metrics = SpendMetrics(lambda: self.core.engines,
                                          max_tenants=settings.metrics_max_tenants_per_partition,
                                          max_models=settings.metrics_max_models_per_partition,
                                          max_services=settings.metrics_max_services_per_partition,
                                          pinned_tenants=self.rules.current.tenants)
        self.metrics.registry.register(self.spend_metrics)
        self.redis = redis_client if redis_client is not None else _redis_client(settings)
        from spendwarden.streams.publisher import DecisionPublisher

        self.publisher = DecisionPublisher(self.redis, generation=0, heartbeat_ttl_s=settings.heartbeat_ttl_s)
        self.publisher.on_stale = lambda tenant: self.rules.current.tenant(tenant).on_stale
        self.overrides = OverrideLayer(self.core, self.publisher, self.metrics, settings.partitions)
        self._rules_stamp = self._stamp()
        self._last_heartbeat = 0.0
        self._ready = False
        self._checkpoint_lock = asyncio.Lock()
        self._bridge_sends: list[Any] = []  # bridged records (traces, outcomes) sent since the last commit
        self._bridge_error: Optional[BaseException] = None
        self._templates_written = False
        # (next offset, next deltas offset) each partition's last end marker recorded
        self._marked: dict[int, tuple[Optional[int], Optional[int]]] = {}
        _patch_fetch_wait(settings.fetch_max_wait_ms)
        self.app = self._build_app()

    # ---------------------------------------------------------------- the app
    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(s.app_id, **faust_app_settings(s))
        self.cost_topic = app.topic(s.cost_topic, key_serializer="raw", value_serializer="raw",
                                    partitions=s.partitions)
        self.dead_letter_topic = app.topic(s.dead_letter_topic, key_serializer="raw", value_serializer="raw")
        self.alerts_topic = app.topic(s.alerts_topic, key_serializer="raw", value_serializer="raw")
        self.decisions_topic = app.topic(s.decisions_topic, key_serializer="raw", value_serializer="raw")
        self.late_topic = app.topic(s.late_topic, key_serializer="raw", value_serializer="raw")
        self.table = app.tables.add(CheckpointTable(
            app, name="engine-state", beacon=app.tables.beacon, partitions=s.partitions,
            schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
            extra_topic_configs={"cleanup.policy": "compact"}))
        self.table.service = self
        self._changelog_name = self.table.changelog_topic.get_topic_name()
        self._checkpoint_before_flush(app.producer)

        self.counted_topic = self.cost_topic
        if s.repartition:
            # Exactness needs one tenant's events in one partition, in order: when producers key
            # otherwise, every record is re-keyed by tenant first, and only that topic is counted.
            self.counted_topic = app.topic(f"{s.app_id}-cost-events-by-tenant", key_serializer="raw",
                                           value_serializer="raw", partitions=s.partitions, internal=True)

            @app.agent(self.cost_topic, name="route-by-tenant")
            async def route(stream: Any) -> None:
                async for events in stream.take_events(s.batch_max_records, within=s.batch_within_s):
                    await self.route_events(events)

        if s.traces_topic:
            traces_topic = app.topic(s.traces_topic, key_serializer="raw", value_serializer="raw")

            @app.agent(traces_topic, name="bridge-traces")
            async def bridge_traces(stream: Any) -> None:
                # Few exports per batch: one can hold thousands of spans (~40 ms per MB to convert).
                async for events in stream.take_events(min(s.batch_max_records, 16), within=s.batch_within_s):
                    await self.bridge_traces(events)

        if s.outcomes_topic:
            outcomes_topic = app.topic(s.outcomes_topic, key_serializer="raw", value_serializer="raw")

            @app.agent(outcomes_topic, name="bridge-outcomes")
            async def bridge_outcomes(stream: Any) -> None:
                async for events in stream.take_events(s.batch_max_records, within=s.batch_within_s):
                    await self.bridge_outcomes(events)

        self.refetcher = Refetcher(s.kafka_bootstrap or "", self.counted_topic.get_topic_name(),
                                   client_options=aiokafka_options(s),
                                   fetch_max_wait_ms=s.fetch_max_wait_ms)

        self.deltas_topic = app.topic(f"{s.app_id}-cross-tenant-deltas", key_serializer="raw",
                                      value_serializer="raw", partitions=s.partitions, internal=True)
        self.delta_refetcher = Refetcher(s.kafka_bootstrap or "", self.deltas_topic.get_topic_name(),
                                         client_options=aiokafka_options(s),
                                         fetch_max_wait_ms=s.fetch_max_wait_ms)

        @app.agent(self.deltas_topic, name="sum-cross-tenant")
        async def sum_cross_tenant(stream: Any) -> None:
            async for events in stream.take_events(s.batch_max_records, within=s.batch_within_s):
                await self.handle_deltas(events)

        @app.agent(self.counted_topic, name="count-cost-events")
        async def count(stream: Any) -> None:
            async for events in stream.take_events(s.batch_max_records, within=s.batch_within_s):
                await self.handle_events(events)

        if s.rules_topic:
            @app.task
            async def follow_rules() -> None:
                from spendwarden.streams.rules_topic import follow

                await follow(s.kafka_bootstrap or "", s.rules_topic or "", self.apply_pushed_rules,
                             client_options=aiokafka_options(s))

        @app.task
        async def follow_overrides() -> None:
            from spendwarden.streams.follow import follow_topic
            from spendwarden.streams.override_feed import ensure_topic

            options = aiokafka_options(s)
            try:
                await ensure_topic(s.kafka_bootstrap or "", s.overrides_topic, options)
            except Exception as exc:  # noqa: BLE001 - no Create ACL: someone else must create it
                log.warning("could not create the overrides topic", topic=s.overrides_topic, error=str(exc)[:200])
            await follow_topic(s.kafka_bootstrap or "", s.overrides_topic, self.overrides.on_message,
                               caught_up=self.overrides.ready, client_options=options)

        @app.timer(s.tick_s)
        async def tick() -> None:
            await self.on_tick()

        add_health_pages(app, self.metrics.registry, self.spend_metrics.frozen)

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            overrides = self.overrides.ready.is_set()
            ready = self._ready and self.publisher.healthy and overrides
            return web.json({"ready": ready, "redis": self.publisher.healthy, "overrides": overrides,
                             "rules_version": self.rules.version}, status=200 if ready else 503)

        @app.page("/budgets")
        async def budgets(web: Any, request: Any) -> Any:
            """Exact counters of owned partitions and the source offset each has reached."""
            tenant = request.query.get("tenant")
            totals = []
            for engine in list(self.core.engines.values()):
                for key, value in engine.state.items():
                    if key[0] == "spend" and (tenant is None or key[1] == tenant):
                        totals.append({"tenant": key[1], "budget": key[2], "instance": list(key[3]),
                                       "period": key[4], "spend_usd": usd_text(value[0])})
            offsets = {str(p): nxt - 1 for p, nxt in self.core.next_offset.items() if nxt is not None}
            return web.json({"rules_version": self.rules.version, "offsets": offsets, "budgets": totals})

        @app.page("/status")
        async def status(web: Any, request: Any) -> Any:
            """A tenant's budgets with burn rates and forecasts (docs/status.md); 404 when another
            worker owns it."""
            from spendwarden.streams.status import status_report

            tenant = request.query.get("tenant")
            if not tenant or tenant == "*":
                return web.json({"error": "give ?tenant=ID (status is per tenant)"}, status=400)
            for engine in list(self.core.engines.values()):
                if ("clock", tenant) in engine.state:
                    report = status_report(engine, tenant, max(engine.frontier(tenant), time.time()),
                                           request.query.get("use_case"))
                    return web.json(report)
            return web.json({"error": f"tenant {tenant!r} is not counted by this worker"}, status=404)

        service = self

        @app.page("/-/reload")
        class Reload(faust.web.View):  # type: ignore[misc]
            """POST reloads the rules directory; a refused set answers 400 with file:line."""

            async def post(self, request: Any) -> Any:
                error = await service.reload_rules()
                if error is not None:
                    return self.json({"reloaded": False, "error": error,
                                      "rules_version": service.rules.version}, status=400)
                return self.json({"reloaded": True, "rules_version": service.rules.version})

        return app

    # ---------------------------------------------------------------- rebalancing
    def counted_partitions(self, tps: Any) -> set[int]:
        """Partitions of the counted topic among assigned or revoked ones: another topic (the
        traces or outcomes topic) may have other partition numbers, which own no engine."""
        name = self.counted_topic.get_topic_name()
        return {tp.partition for tp in tps if tp.topic == name}

    def on_revoked(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.core.drop_partition(partition)
            self.spend_metrics.dropped(partition)
            try:  # its lag is the new owner's to report
                self.metrics.lag.remove(str(partition))
            except KeyError:
                pass
            self._marked.pop(partition, None)
        self.metrics.partitions.set(len(self.core.engines))

    async def on_recovered(self, partitions: set[int]) -> None:
        """Rebuild engines of newly owned partitions from the recovered table, then assert their
        decisions in Redis under the new group generation."""
        self.publisher.generation = int(self.app.consumer_generation_id or 0)
        await self._wait_for_overrides()
        by_partition: dict[int, list[tuple[Any, Any]]] = {p: [] for p in partitions if p not in self.core.engines}
        if by_partition:
            markers: dict[int, dict[str, Any]] = {}
            for raw_key, raw_value in self.table.data.items():
                partition, key = decode_key(raw_key)
                if partition not in by_partition or raw_value is None:
                    continue
                if key == CHECKPOINT_MARKER:
                    markers[partition] = decode_value(raw_value)
                else:
                    by_partition[partition].append((key, decode_value(raw_value)))
            # No marker: nothing of that partition was ever counted, so counting must start where
            # the group resumes (or the log starts), and a first record Faust skips still shows.
            unmarked = [p for p in by_partition if markers.get(p, {}).get("next_offset") is None]
            resume = await self.refetcher.resume_offsets(unmarked, self.settings.app_id) if unmarked else {}
            unmarked = [p for p in by_partition if markers.get(p, {}).get("deltas_next") is None]
            resume_deltas = (await self.delta_refetcher.resume_offsets(unmarked, self.settings.app_id)
                             if unmarked else {})
            for partition, items in by_partition.items():
                marker = markers.get(partition, {})
                next_offset, deltas_next = marker.get("next_offset"), marker.get("deltas_next")
                self._marked[partition] = (next_offset, deltas_next)
                self.core.load_partition(partition, items, next_offset=resume.get(partition, next_offset),
                                         next_delta_offset=resume_deltas.get(partition, deltas_next))
                self.spend_metrics.restored(partition, items)
                log.debug("partition loaded", partition=partition, keys=len(items),
                          next_offset=self.core.next_offset.get(partition))
                await self.overrides.republish_partition(partition)
                await self._republish_spend(partition)
        self.metrics.partitions.set(len(self.core.engines))
        self._ready = True
        log.info("partitions recovered", partitions=sorted(partitions), generation=self.publisher.generation)

    # ---------------------------------------------------------------- processing
    async def handle_events(self, events: list[Any]) -> None:
        started = time.perf_counter()
        records = [Record(e.message.partition, e.message.offset, e.key, e.value, e.message.topic) for e in events]
        gaps = self.core.gaps(records)
        if gaps:
            records = await self._fill_gaps(self.refetcher, records, gaps)
        result = self.core.handle(records)
        for key, payload in result.dead_letters:
            self.metrics.dead_letters.labels(reason=payload["reason"]).inc()
            await self.dead_letter_topic.send(key=key, value=orjson.dumps(payload))
        for partition, grouped in result.deltas.items():
            for (budget, inst), entries in grouped.items():
                payload = {"budget": budget, "instance": list(inst), "source": partition, "entries": entries}
                await self.deltas_topic.send(key=f"{budget}|{'/'.join(inst)}".encode(), value=orjson.dumps(payload))
        await self._publish(result.effects, result.positions)
        for partition, (fields, settled) in result.reserved.items():
            if not await self.publisher.publish_spend(fields, settled, result.positions[partition]):
                # Redis away: the spend is republished from the state when it returns; the holds
                # these calls settle are released then too (until then they only refuse early).
                reservations.restore(self.core.engines[partition], settled)
        await self._announce_progress(result)
        self._observe(result, len(records), started)

    async def _fill_gaps(self, refetcher: Refetcher, records: list[Record],
                         gaps: list[tuple[int, int, int]]) -> list[Record]:
        """Read records the state expected but Faust never delivered, in front of the batch."""
        missing: dict[tuple[int, int], list[Record]] = {}
        for partition, start, end in gaps:
            found = await refetcher.read(partition, start, end)
            missing[(partition, end)] = found
            self.metrics.refetched.inc(len(found))
            log.warning("records skipped by the stream were read directly", topic=refetcher.topic,
                        partition=partition,
                        offsets=f"{start}..{end - 1}", records=len(found))
        merged: list[Record] = []
        for record in records:
            merged.extend(missing.pop((record.partition, record.offset), ()))
            merged.append(record)
        return merged

    async def handle_deltas(self, events: list[Any]) -> None:
        """Stage two: budgets spanning tenants, summed from stage-one entries (alerts only)."""
        effects: dict[int, list[Effect]] = {}
        records = [Record(e.message.partition, e.message.offset, e.key, e.value, e.message.topic) for e in events]
        gaps = self.core.gaps(records, self.core.next_delta_offset)
        if gaps:
            records = await self._fill_gaps(self.delta_refetcher, records, gaps)
        for record in records:
            try:
                payload = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                # our own internal topic: nothing else writes it; never expect this record again
                self.core.skip_delta(record.partition, record.offset)
                continue
            found = self.core.apply_deltas(record.partition, payload, record.offset)
            effects.setdefault(record.partition, []).extend(found)
        await self._publish(effects, {})

    async def route_events(self, events: list[Any]) -> None:
        """Re-key records by tenant into the counted topic (repartition mode)."""
        for e in events:
            routed, rejections = route_by_tenant(e.value, self.ingest)
            for key, value in routed:
                await self.counted_topic.send(key=key, value=value)
            for rejection in rejections:
                source = {"topic": e.message.topic, "partition": e.message.partition, "offset": e.message.offset}
                self.metrics.dead_letters.labels(reason=rejection.reason).inc()
                await self.dead_letter_topic.send(key=e.key, value=orjson.dumps(rejection.to_dead_letter(e.value, source)))

    async def bridge_traces(self, events: list[Any]) -> None:
        """OTLP exports → cost-event records keyed by tenant, into the cost topic (streams/trace_bridge.py).

        The sends are settled before the next commit (``_settle_bridge_sends``): aiokafka's flush
        waits for them but never raises, and a traces offset committed past a record that did
        not land would lose its spend.
        """
        assert self.trace_bridge is not None
        await self._bridge(events, self.trace_bridge.convert, self.metrics.trace_spans, "spans")

    async def bridge_outcomes(self, events: list[Any]) -> None:
        """Outcome records → outcome records keyed by tenant, into the cost topic
        (streams/outcome_bridge.py), settled before the next commit like the trace bridge's."""
        assert self.outcome_bridge is not None
        await self._bridge(events, self.outcome_bridge.convert, self.metrics.outcomes, "outcomes")

    async def _bridge(self, events: list[Any], convert: Any, counter: Any, what: str) -> None:
        """Send what ``convert`` made of each record to the cost topic, count its stats in
        ``counter{kind}``, dead-letter its rejections; every send is kept for the settling."""
        for e in events:
            bridged = convert(e.value)
            for key, value in bridged.records:
                self._bridge_sends.append(await self.cost_topic.send(key=key, value=value))
            for kind, count in bridged.stats.items():
                if count:
                    counter.labels(kind=kind).inc(count)
            if bridged.rejections:
                await self._bridge_dead_letter(e, bridged.rejections, what)
            await asyncio.sleep(0)  # let the counting agent and the tick run between records

    async def _bridge_dead_letter(self, e: Any, rejections: list[Any], what: str = "spans") -> None:
        """One dead letter per bridged record, listing its refused items (``rejected_spans`` or
        ``rejected_outcomes``); the raw record is cut at 64 KiB (a whole export per refused span
        would multiply a 1 MB record)."""
        for rejection in rejections:
            self.metrics.dead_letters.labels(reason=rejection.reason).inc()
        raw = bytes(e.value or b"")
        source = {"topic": e.message.topic, "partition": e.message.partition, "offset": e.message.offset}
        payload = rejections[0].to_dead_letter(raw[:DEAD_LETTER_RAW_BYTES], source)
        payload["rejections"] = [{"reason": r.reason, "detail": r.detail, "field": r.field, "index": r.index}
                                 for r in rejections[:100]]
        payload[f"rejected_{what}"] = len(rejections)
        payload["raw_truncated"] = len(raw) > DEAD_LETTER_RAW_BYTES
        self._bridge_sends.append(await self.dead_letter_topic.send(key=e.key, value=orjson.dumps(payload)))

    async def _settle_bridge_sends(self) -> None:
        """Raise (and so stop the commit) if a bridged record did not land; for good, so a later
        commit cannot pass it either: the worker must restart and convert those records again."""
        if self._bridge_error is not None:
            raise self._bridge_error
        sends, self._bridge_sends = self._bridge_sends, []
        try:
            await asyncio.gather(*sends)
        except Exception as exc:
            self._bridge_error = exc
            log.error("a bridged record did not reach Kafka; no more commits until a restart",
                      error=f"{type(exc).__name__}: {exc}"[:300])
            raise

    async def on_tick(self) -> None:
        effects = self.core.tick()
        # Changes made by the clock alone (periods ending, blocks lifting) have no offset for
        # Faust to commit, so they are checkpointed here rather than waiting for traffic.
        await self._checkpoint(p for p, found in effects.items() if found)
        await self._publish(effects, self.core.positions)
        await self.overrides.tick()
        now = time.time()
        heartbeat_due = now - self._last_heartbeat >= self.settings.heartbeat_ttl_s / 3
        tenants = self._owned_tenants() if heartbeat_due or not self.publisher.healthy else []
        if not self.publisher.healthy:  # the heartbeat is the probe
            await self._heartbeat(tenants, now)
        if self.publisher.write_failed and self.publisher.healthy:
            # A write failed (Redis away, a refusal, a cluster slot moving), even if a later one
            # went through: the whole owned decision set is written again, stale fields removed.
            # A failure on the way sets write_failed again, so the next tick retries.
            log.info("redis reachable: republishing every owned decision")
            self.publisher.write_failed = False
            for partition in list(self.core.engines):
                await self.overrides.republish_partition(partition)
                await self._republish_spend(partition)
        if heartbeat_due and now - self._last_heartbeat >= self.settings.heartbeat_ttl_s / 3:
            await self._heartbeat(tenants, now)
            await self._publish_templates()  # a flushed or evicted sw:reservable comes back
        self.metrics.redis_healthy.set(1 if self.publisher.healthy else 0)
        self._measure_lag()
        if not self.settings.rules_topic and self._stamp() != self._rules_stamp:
            await self.reload_rules()

    async def _heartbeat(self, tenants: list[str], now: float) -> None:
        """Keep owned tenants' decisions fresh; the metric says when Redis last took it (an alert
        fires when it stops: deploy/prometheus)."""
        await self.publisher.heartbeat(tenants)
        self._last_heartbeat = now
        if self.publisher.healthy:
            self.metrics.heartbeat.set(now)

    def _measure_lag(self) -> None:
        """Records between what each owned partition has processed and its end (the broker's highwater)."""
        from faust.types import TP

        consumer = self.app.consumer
        for partition in list(self.core.engines):
            try:
                highwater = consumer.highwater(TP(self.counted_topic.get_topic_name(), partition))
            except Exception:  # noqa: BLE001 - not known before the first fetch
                continue
            if highwater is None:
                continue
            expected = self.core.next_offset.get(partition)
            if expected is not None:
                self.metrics.lag.labels(partition=str(partition)).set(max(0, highwater - expected))

    def _owned_tenants(self) -> list[str]:
        tenants = [tenant for partition in list(self.core.engines) for tenant in self.core.tenants(partition)]
        return tenants + self.overrides.owned_tenants()

    async def _wait_for_overrides(self) -> None:
        """Publish nothing before the overrides present at start are known: a restarted worker
        must not lift a person's block for the moment it takes to read the topic."""
        if self.overrides.ready.is_set():
            return
        try:
            await asyncio.wait_for(self.overrides.ready.wait(), self.settings.overrides_wait_s)
        except asyncio.TimeoutError:
            log.warning("overrides topic not read in time; publishing without deleting any field until it is",
                        topic=self.settings.overrides_topic, waited_s=self.settings.overrides_wait_s)

    def _checkpoint_before_flush(self, producer: Any) -> None:
        """Checkpoint every changed key right before the producer flush that precedes each commit.

        Faust computes the offsets to commit, flushes the producer, then commits
        (``Consumer._commit_offsets``). Events are acked only after ``handle_events`` returned,
        so when the flush starts, the in-memory state already reflects every offset about to be
        committed: sending the dirty keys first keeps the committed position behind what the
        changelog holds, while a key written by thousands of events between two commits
        (``broker_commit_interval``) costs one changelog record instead of one per batch.
        """
        self._flush_producer = producer.flush

        async def checkpoint_then_flush() -> None:
            await self._checkpoint(list(self.core.engines))
            await self._flush_producer()
            await self._settle_bridge_sends()

        producer.flush = checkpoint_then_flush

    async def _checkpoint(self, partitions: Any) -> None:
        """Send changed state keys straight to the table's changelog, then a lone end marker.

        Going around ``Table.__setitem__`` skips Faust's per-record bookkeeping (a FutureMessage,
        callbacks and a copy in the table's own store) for each key; the records land in the
        same changelog partition and table recovery reads the changelog whoever wrote it.
        Alert evidence (``Facts``) is not in the state: it is not money and lives in memory.

        The keys are flushed, then one ``checkpoint`` record per partition is sent and flushed
        on its own, so the changelog always ends with a one-record batch. Recovery reads up to
        the broker's reported end offset; Tansu 0.6.0 reports the *first* offset of the last
        batch plus one (docs/service.md), which would hide the rest of a multi-record batch.
        On Kafka or Redpanda the marker costs one small record and one round trip per commit.
        """
        async with self._checkpoint_lock:
            producer = self.app.producer
            topic = self._changelog_name
            taken: list[tuple[int, list[tuple[Any, ...]]]] = []
            sent_usage: dict[int, list[tuple[Any, Any]]] = {}  # exported once acknowledged
            pending: list[Any] = []
            later: list[tuple[bytes, Optional[bytes], int]] = []  # WRITE_LAST keys, sent in a second round
            markers: dict[int, tuple[Optional[int], Optional[int]]] = {}
            try:
                for partition in list(partitions):
                    if partition not in self.core.engines:
                        continue
                    # Taken before the dirty set is swapped out (no await in between): the
                    # marker must not claim records whose changes land in the next checkpoint.
                    covered = (self.core.next_offset.get(partition), self.core.next_delta_offset.get(partition))
                    keys: list[tuple[Any, ...]] = []
                    taken.append((partition, keys))
                    for key, value in self.core.dirty(partition):
                        keys.append(key)
                        if key[0] == USAGE:
                            sent_usage.setdefault(partition, []).append((key, value))
                        raw = None if value is None else encode_value(value)
                        if key[0] in WRITE_LAST:
                            later.append((encode_key(partition, key), raw, partition))
                            continue
                        pending.append(await producer.send(topic, encode_key(partition, key), raw, partition,
                                                           None, None))
                    if keys or covered != self._marked.get(partition):
                        markers[partition] = covered
                if not markers:
                    return
                self.metrics.checkpoints.inc()
                self.metrics.checkpoint_records.inc(len(pending) + len(later))
                if pending:
                    await self._flush_producer()
                    await asyncio.gather(*pending)  # a key that failed to land must stop the commit
                if later:  # only once everything they were derived with has landed (checkpoint_order)
                    sent_later = [await producer.send(topic, key, raw, partition, None, None)
                                  for key, raw, partition in later]
                    await self._flush_producer()
                    await asyncio.gather(*sent_later)
                marked = []
                for partition, covered in markers.items():
                    marker = {"next_offset": covered[0], "deltas_next": covered[1], "written_at": time.time()}
                    marked.append(await producer.send(topic, encode_key(partition, CHECKPOINT_MARKER),
                                                      encode_value(marker), partition, None, None))
                await self._flush_producer()
                await asyncio.gather(*marked)
            except BaseException:
                # Nothing of this checkpoint may be assumed written: its keys are dirty again.
                for partition, keys in taken:
                    engine = self.core.engines.get(partition)
                    if engine is not None:
                        engine.state.dirty.update(keys)  # type: ignore[attr-defined]
                raise
            for partition, covered in markers.items():
                self._marked[partition] = covered
            for partition, items in sent_usage.items():
                self.spend_metrics.checkpointed(partition, items)

    async def _publish(self, effects: dict[int, list[Effect]], positions: dict[int, int]) -> None:
        for partition, found in effects.items():
            if not found:
                continue
            changes = [e for e in found if isinstance(e, DecisionChanged)]
            if changes:
                written_before = self.publisher.rejected
                await self.overrides.publish_changes(changes, positions.get(partition, 0))
                self.metrics.redis_rejected.inc(self.publisher.rejected - written_before)
            for effect in found:
                await self._emit(effect)

    async def _emit(self, effect: Effect) -> None:
        payload = orjson.dumps(effect.to_dict())
        if isinstance(effect, DecisionChanged):
            level = effect.verdict["level"] if effect.verdict else "L0"
            self.metrics.decisions.labels(level=level).inc()
            await self.decisions_topic.send(key=f"{effect.tenant_id}|{effect.field}".encode(), value=payload)
            log.info("decision", tenant=effect.tenant_id, field=effect.field, level=level)
        elif isinstance(effect, (AlertFiring, AlertResolved)):
            firing = isinstance(effect, AlertFiring)
            severity = effect.severity if isinstance(effect, AlertFiring) else "none"
            self.metrics.alerts.labels(state="firing" if firing else "resolved", severity=severity).inc()
            self.metrics.alerts_firing.inc() if firing else self.metrics.alerts_firing.dec()
            await self.alerts_topic.send(key=effect.fingerprint.encode(), value=payload)
            log.info("alert " + ("firing" if firing else "resolved"), rule=effect.rule, tenant=effect.tenant_id)
        elif isinstance(effect, TooLate):
            await self.late_topic.send(key=effect.tenant_id.encode(), value=payload)

    async def _publish_templates(self) -> None:
        """``sw:reservable`` when the rules have reservable budgets, or had them in this process
        (then an empty list, so gateways stop holding against a removed budget). A deployment
        without reservations never writes it (and needs no SET in the worker's ACL)."""
        doc = reservations.templates(self.rules.current)
        if doc["budgets"] or self._templates_written:
            self._templates_written = await self.publisher.publish_templates(doc) or self._templates_written

    async def _republish_spend(self, partition: int) -> None:
        """Reservable budgets and their spend from the state (after a recovery or a Redis outage)."""
        await self._publish_templates()
        engine = self.core.engines.get(partition)
        if engine is not None:
            fields = reservations.snapshot(engine, None, time.time())
            settled = reservations.pending_settled(engine)
            if (fields or settled) and not await self.publisher.publish_spend(
                    fields, settled, self.core.positions.get(partition, 0)):
                reservations.restore(engine, settled)

    async def _announce_progress(self, result: BatchResult) -> None:
        """After a batch's decisions are written, say which source offsets they cover.

        One PUBLISH per batch on ``sw:progress`` with {partition: offset} and the write time,
        so a benchmark (or an operator) can compute produce-to-decision latency for every event.
        """
        if not result.positions or not self.publisher.healthy:
            return
        offsets = {str(p): split_position(pos)[0] for p, pos in result.positions.items()}
        message = orjson.dumps({"app_id": self.settings.app_id, "offsets": offsets, "written_at": time.time(),
                                "newest_event_ts": result.newest_event_ts})
        try:
            await self.redis.publish(PROGRESS_CHANNEL, message)
        except Exception:  # noqa: BLE001 - progress is informational; Redis health is tracked by the publisher
            pass

    def _observe(self, result: BatchResult, records: int, started: float) -> None:
        m = self.metrics
        m.records.inc(records)
        m.events.inc(result.events - result.duplicates - result.too_late)
        m.duplicates.inc(result.duplicates)
        m.too_late.inc(result.too_late)
        if result.outcomes or result.outcome_duplicates or result.outcome_too_late:
            m.outcomes.labels(kind="counted").inc(result.outcomes)
            m.outcomes.labels(kind="duplicates").inc(result.outcome_duplicates)
            m.outcomes.labels(kind="too_late").inc(result.outcome_too_late)
        m.batch_seconds.observe(time.perf_counter() - started)
        if result.newest_event_ts is not None:
            m.latency.observe(max(0.0, time.time() - result.newest_event_ts))

    # ---------------------------------------------------------------- rules
    def _stamp(self) -> tuple[tuple[str, float, int], ...]:
        try:
            return tuple((str(p), p.stat().st_mtime, p.stat().st_size) for p in rule_files(self.rules.path))
        except (OSError, ConfigError):
            return ()

    async def reload_rules(self) -> Optional[str]:
        """Reload the rules directory; a bad set is refused and the last good one stays."""
        self._rules_stamp = self._stamp()
        error = self.rules.reload()
        if error is not None:
            self.metrics.rule_reload_failures.inc()
            log.error("rule reload refused; keeping the last good rules", error=str(error),
                      rules_version=self.rules.version)
            return str(error)
        effects = self.core.set_rules(self.rules.current)
        await self._checkpoint(effects.keys())
        await self._publish(effects, self.core.positions)
        await self._publish_templates()
        for partition in list(self.core.engines):  # limits may have changed
            await self._republish_spend(partition)
        self.metrics.set_rules_version(self.rules.version)
        self.spend_metrics.set_pinned_tenants(self.rules.current.tenants)
        log.info("rules reloaded", rules_version=self.rules.version)
        return None

    async def apply_pushed_rules(self, record: bytes) -> None:
        """Swap to a rule set pushed on the rules topic; a set that does not load is refused."""
        from spendwarden.exceptions import SpendwardenError
        from spendwarden.streams.rules_topic import pushed_rules_folder, unpack_ruleset

        folder = pushed_rules_folder(self.settings.data_dir)
        try:
            ruleset = unpack_ruleset(record, folder)
        except (SpendwardenError, ValueError, KeyError) as exc:
            self.metrics.rule_reload_failures.inc()
            log.error("pushed rule set refused; keeping the last good rules", error=str(exc),
                      rules_version=self.rules.version)
            return
        if ruleset.version == self.rules.version:
            return
        self.rules = RuleStore(folder)
        effects = self.core.set_rules(self.rules.current)
        await self._checkpoint(effects.keys())
        await self._publish(effects, self.core.positions)
        await self._publish_templates()
        for partition in list(self.core.engines):  # limits may have changed
            await self._republish_spend(partition)
        self.metrics.set_rules_version(self.rules.version)
        self.spend_metrics.set_pinned_tenants(self.rules.current.tenants)
        log.info("pushed rules applied", rules_version=self.rules.version)

    def install_sighup(self) -> None:
        loop = asyncio.get_event_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload_rules()))
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on this platform
            pass


def _trace_bridge(settings: Settings, pricebook: Pricebook) -> Any:
    from spendwarden.streams.otlp_mapping import TraceMapping, load_mapping
    from spendwarden.streams.trace_bridge import TraceBridge

    mapping = load_mapping(settings.traces_mapping) if settings.traces_mapping else TraceMapping()
    # Faust's producer refuses requests over 1,000,000 bytes (producer_max_request_size).
    return TraceBridge(mapping, pricebook, encoding=settings.traces_encoding,
                       max_events_per_record=min(settings.batch_max_records, 10_000),
                       max_record_bytes=min(settings.max_record_bytes, 900_000))


def _outcome_bridge(settings: Settings) -> Any:
    from spendwarden.streams.outcome_bridge import OutcomeBridge

    # The same record limits as the trace bridge's (Faust's producer refuses requests over 1 MB).
    return OutcomeBridge(max_outcomes_per_record=min(settings.batch_max_records, 10_000),
                         max_record_bytes=min(settings.max_record_bytes, 900_000))


def _redis_client(settings: Settings) -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from spendwarden.redis_client import async_client, redis_target

    # One quick retry: during an outage the worker must keep consuming, not wait on backoff.
    return async_client(redis_target(settings), connect_timeout_s=1.0, timeout_s=2.0, retry=Retry(NoBackoff(), 1))


def run_worker(settings: Settings) -> None:
    """Run the worker until SIGINT/SIGTERM (Faust's own worker handles signals and shutdown)."""
    from spendwarden.redis_auth import check_redis_credentials
    from spendwarden.redis_client import redis_target

    check_redis_credentials(redis_target(settings))
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    use_engine_thresholds()  # a long-lived state, little cyclic garbage (spendwarden/gc_policy.py)
    service = Service(settings)
    worker = faust.Worker(service.app, loglevel=settings.log_level.upper(), quiet=True)

    @service.app.task
    async def _on_start() -> None:
        service.install_sighup()

    worker.execute_from_commandline()
