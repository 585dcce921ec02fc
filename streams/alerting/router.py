"""The alert router: a Faust app that reads ``spendwarden.alerts`` and delivers notifications.

Why two agents: an alert record is keyed by its fingerprint, but a notification belongs to a
group (route + group labels). ``route-alerts`` matches each record against the routing tree
and re-sends it keyed by group key to the internal group topic, so the one process that owns
that partition owns the group, cluster-wide, with no lock: partition ownership is the lock.
``group-alerts`` updates the group; the tick flushes due groups into the outbox and delivers.

Durability: group states and outbox entries live in a table whose changelog partition is the
group's partition (``CheckpointTable``: keys start with the partition), written through
Faust's producer, which is flushed before each offset commit. An outbox entry is written
before the group state that says it was made, and removed only after a 2xx or a permanent
refusal (then dead-lettered). A crash between a send and that removal re-sends the same
notification with the same idempotency key: at least once, never lost.

Cluster-wide facts every router needs (silences, firing alerts that inhibit others) live in
Redis (streams/alerting/silences.py, ``INHIBITORS_KEY``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spendwarden.logs import get_logger
from spendwarden.settings import Settings
from spendwarden.streams.alerting.config import RoutingStore, default_routing
from spendwarden.streams.alerting.delivery import Sender, backoff_delay
from spendwarden.streams.alerting.inhibit import Inhibitor
from spendwarden.streams.alerting.model import Alert, Notification
from spendwarden.streams.alerting.outbox import Outbox, Pending
from spendwarden.streams.alerting.router_core import GroupBook, Routed, resolution_of, route_firing
from spendwarden.streams.alerting.router_metrics import RouterMetrics
from spendwarden.streams.alerting.silences import AsyncSilenceStore, silenced_by
from spendwarden.streams.alerting.tree import compile_tree, matches_all
from spendwarden.streams.checkpoint import decode_key, decode_value, encode_key, encode_value
from spendwarden.streams.service import CheckpointTable, _patch_fetch_wait, faust_app_settings

log = get_logger("spendwarden.router")
INHIBITORS_KEY = "sw:{alerts}:inhibitors"
RELOAD_EVERY_S = 5.0


class Router:
    """What the router's agents, tick and web pages share."""

    def __init__(self, settings: Settings, redis_client: Any = None) -> None:
        self.settings = settings
        self.routing = RoutingStore(settings.routing_file) if settings.routing_file else None
        self._install(self.routing.current if self.routing else default_routing())
        self.book = GroupBook()
        self.outbox = Outbox(backoff=lambda failures, retry_after: backoff_delay(
            failures, cap_s=settings.delivery_max_backoff_s, retry_after_s=retry_after))
        self.entry_partition: dict[str, int] = {}
        self.metrics = RouterMetrics()
        self.redis = redis_client if redis_client is not None else _redis_client(settings)
        self.silence_store = AsyncSilenceStore(self.redis)
        self._silences: list[Any] = []
        self._silence_version: Optional[int] = None
        self._inhibitors: list[dict[str, str]] = []
        self._last_reload = 0.0
        self._ready = False
        self._tick_lock = asyncio.Lock()
        self.sender = Sender(timeout_s=settings.delivery_timeout_s, external_url=self.external_url,
                             alertmanager_hold_s=self.alertmanager_hold_s)
        _patch_fetch_wait(settings.fetch_max_wait_ms)
        self.app = self._build_app()

    def _install(self, config: Any) -> None:
        self.config = config
        self.tree = compile_tree(config)
        self.inhibitor = Inhibitor(config.inhibit_rules)
        self.receivers = {r.name: r for r in config.receivers}
        self.external_url = (config.external_url or self.settings.alerts_external_url).rstrip("/")
        # Alertmanager holds a posted alert until endsAt: past the longest repeat, when it is re-posted
        self.alertmanager_hold_s = max(r.repeat_interval_s for r in self.tree.routes()) + 300.0
        if hasattr(self, "sender"):
            self.sender.alertmanager_hold_s = self.alertmanager_hold_s
            self.sender.external_url = self.external_url

    # ---------------------------------------------------------------- the app
    def _build_app(self) -> faust.App:
        s = self.settings
        options = faust_app_settings(s)
        options.update(web_port=s.router_http_port, datadir=str(s.data_dir / "router"))
        app = faust.App(s.router_app_id, **options)
        self.alerts_topic = app.topic(s.alerts_topic, key_serializer="raw", value_serializer="raw",
                                      partitions=s.partitions)
        self.groups_topic = app.topic(f"{s.router_app_id}-alert-groups", key_serializer="raw",
                                      value_serializer="raw", partitions=s.partitions, internal=True)
        self.dead_letter_topic = app.topic(s.dead_letter_topic, key_serializer="raw", value_serializer="raw")
        raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        # fingerprint -> where its firing was routed, so its resolution finds the same groups
        self.routed = app.Table("routed-alerts", partitions=s.partitions, schema=faust.Schema(**raw))
        self.state = app.tables.add(CheckpointTable(
            app, name="alert-state", beacon=app.tables.beacon, partitions=s.partitions,
            schema=faust.Schema(**raw), extra_topic_configs={"cleanup.policy": "compact"}))
        self.state.service = self

        @app.agent(self.alerts_topic, name="route-alerts")
        async def route(stream: Any) -> None:
            async for event in stream.events():
                await self.route_record(event.value)

        @app.agent(self.groups_topic, name="group-alerts")
        async def group(stream: Any) -> None:
            async for event in stream.events():
                self.apply(event.message.partition, event.value)

        @app.timer(s.router_tick_s)
        async def tick() -> None:
            await self.on_tick()

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            return web.bytes(generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        @app.page("/healthz")
        async def healthz(web: Any, request: Any) -> Any:
            return web.json({"status": "ok"})

        @app.page("/readyz")
        async def readyz(web: Any, request: Any) -> Any:
            return web.json({"ready": self._ready, "groups": len(self.book), "pending": len(self.outbox)},
                            status=200 if self._ready else 503)

        @app.page("/alerts/{fingerprint}/")
        async def alert_page(web: Any, request: Any, fingerprint: str) -> Any:
            """An alert's labels, annotations and evidence (the generatorURL of notifications)."""
            for alert in self.book.firing():
                if alert.fingerprint == fingerprint:
                    return web.json(alert.to_dict())
            return web.json({"error": f"alert {fingerprint} is not firing in a group this router owns "
                                      "(resolved, or owned by another router process)"}, status=404)

        @app.page("/silences/new")
        async def new_silence_page(web: Any, request: Any) -> Any:
            """The Silence button of a notification: the command that silences the group."""
            matchers = request.query.get("matchers", "").strip("{}")
            args = " ".join(f"'{m.strip()}'" for m in _split_matchers(matchers)) or "tenant=..."
            return web.text(f"Silence these alerts with:\n\n  spendwarden silence add {args} --for 2h "
                            f"--comment 'why'\n\nthen `spendwarden silence list` shows it and "
                            f"`spendwarden silence expire ID` ends it.\n")

        return app

    # ---------------------------------------------------------------- partitions
    def on_revoked(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.book.drop(partition)
            gone = [i for i, p in self.entry_partition.items() if p == partition]
            self.outbox.drop_partition_entries(gone)
            for entry_id in gone:
                del self.entry_partition[entry_id]

    async def on_recovered(self, partitions: set[int]) -> None:
        """Rebuild groups and the outbox of newly owned partitions from the recovered table."""
        groups: dict[int, list[dict[str, Any]]] = {p: [] for p in partitions if p not in self.book.groups}
        for raw_key, raw_value in self.state.data.items():
            partition, key = decode_key(raw_key)
            if partition not in groups or raw_value is None:
                continue
            value = decode_value(raw_value)
            if key[0] == "group":
                groups[partition].append(value)
            elif key[0] == "outbox":
                entry = Pending.from_dict(value)
                self.outbox.add(entry)
                self.entry_partition[entry.id] = partition
        for partition, items in groups.items():
            self.book.load(partition, items)
        self._ready = True
        log.info("router partitions recovered", partitions=sorted(partitions), groups=len(self.book),
                 pending=len(self.outbox))

    # ---------------------------------------------------------------- stage one: route
    async def route_record(self, raw: bytes) -> None:
        try:
            record = orjson.loads(raw)
            kind, fingerprint = record["kind"], str(record["fingerprint"])
        except Exception as exc:  # noqa: BLE001 - any bad record goes to the dead-letter topic
            await self._dead_letter("decode", f"alert record is not an alert_firing/alert_resolved JSON object: "
                                    f"{type(exc).__name__}: {str(exc)[:200]}", raw)
            return
        key = orjson.dumps(fingerprint)  # JSON: Faust's changelog recovery decodes keys as JSON
        if kind == "alert_firing":
            try:
                routed = route_firing(record, self.tree, self.external_url)
            except (KeyError, TypeError, ValueError) as exc:
                await self._dead_letter("invalid", f"alert_firing record lacks a field: {exc!r}"[:300], raw)
                return
            await self._note_inhibitor(fingerprint, routed)
            self.routed[key] = orjson.dumps([r.to_dict() for r in routed])
        elif kind == "alert_resolved":
            earlier = self.routed.get(key)
            if earlier is None:
                log.debug("resolution of an alert this router never routed", fingerprint=fingerprint)
                return
            if isinstance(earlier, (bytes, bytearray)):  # recovered values arrive decoded
                earlier = orjson.loads(earlier)
            routed = resolution_of(record, [Routed.from_dict(r) for r in earlier])
            await self._forget_inhibitor(fingerprint)
            del self.routed[key]
        else:
            await self._dead_letter("invalid", f"unknown alert record kind {kind!r}", raw)
            return
        for item in routed:
            await self.groups_topic.send(key=item.group_key.encode(), value=orjson.dumps(item.to_dict()))
        self.metrics.alerts_routed.labels(kind=kind).inc()

    async def _note_inhibitor(self, fingerprint: str, routed: list[Routed]) -> None:
        if not routed or not any(matches_all(rule.source, routed[0].alert.labels) for rule in self.inhibitor.rules):
            return
        try:
            await self.redis.hset(INHIBITORS_KEY, fingerprint, orjson.dumps(routed[0].alert.labels))
        except Exception as exc:  # noqa: BLE001 - Redis down: inhibition waits, routing does not
            log.warning("could not record an inhibiting alert in Redis", error=type(exc).__name__)

    async def _forget_inhibitor(self, fingerprint: str) -> None:
        try:
            await self.redis.hdel(INHIBITORS_KEY, fingerprint)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not drop an inhibiting alert from Redis", error=type(exc).__name__)

    # ---------------------------------------------------------------- stage two: group
    def apply(self, partition: int, raw: bytes) -> None:
        routed = Routed.from_dict(orjson.loads(raw))
        self._persist(self.book.apply(partition, routed, time.time()))

    def _persist(self, changes: list[tuple[int, tuple[str, ...], Optional[dict[str, Any]]]]) -> None:
        for partition, key, value in changes:
            raw_key = encode_key(partition, key)
            if value is None:
                self.state.pop(raw_key, None)
            else:
                self.state[raw_key] = encode_value(value)

    # ---------------------------------------------------------------- the tick
    async def on_tick(self, now: Optional[float] = None) -> None:
        if self._tick_lock.locked():
            return  # a slow delivery round is still running
        async with self._tick_lock:
            await self.sender.start()
            now = time.time() if now is None else now
            self._maybe_reload(now)
            await self._refresh_mutes()
            pending, changes, made = self.book.flush(now, self._muted_at(now), self._destination_count)
            for entry_partition, entry in pending:
                self.outbox.add(entry)
                self.entry_partition[entry.id] = entry_partition
            self._persist(changes)
            for notification in made:
                self.metrics.notifications.labels(receiver=notification.receiver, status=notification.status).inc()
                if not self._destination_count(notification.receiver):
                    _log_notification(notification)
            await self.deliver(now)
            self.metrics.groups.set(len(self.book))
            self.metrics.pending.set(len(self.outbox))
            self.metrics.oldest_pending.set(self.outbox.oldest_age(now))

    async def deliver(self, now: float) -> None:
        """Send each ready destination's queue in order, destinations concurrently."""
        queues = self.outbox.queues(now)
        if queues:
            await asyncio.gather(*(self._send_queue(queue, now) for queue in queues))

    async def _send_queue(self, queue: list[Pending], now: float) -> None:
        for entry in queue:
            receiver = self.receivers.get(entry.notification.receiver)
            destinations = receiver.destinations() if receiver is not None else []
            if entry.dest >= len(destinations):
                await self._give_up(entry, "the receiver or its destination is no longer in the routing file")
                continue
            spec = destinations[entry.dest]
            result = await self.sender.send(entry.notification, spec)
            self.metrics.attempts.labels(receiver=entry.notification.receiver, type=spec.type,
                                         outcome=result.outcome).inc()
            if result.outcome == "sent":
                self.outbox.sent(entry)
                self._drop_entry(entry)
            elif result.outcome == "failed":
                await self._give_up(entry, result.reason, spec.type)
            else:
                wait = self.outbox.retry(entry, now, result.reason, result.retry_after_s)
                self._persist([(self.entry_partition.get(entry.id, 0), ("outbox", entry.id), entry.to_dict())])
                log.info("receiver not reached; will retry", receiver=entry.notification.receiver, type=spec.type,
                         attempt=entry.attempts, wait_s=round(wait, 1), reason=result.reason)
                return

    async def _give_up(self, entry: Pending, reason: str, kind: str = "unknown") -> None:
        self.outbox.failed(entry)
        self.metrics.delivery_failures.labels(receiver=entry.notification.receiver, type=kind).inc()
        log.error("notification refused for good; sent to the dead-letter topic",
                  receiver=entry.notification.receiver, type=kind, reason=reason)
        payload = {"reason": "notification_refused", "detail": reason, "receiver": entry.notification.receiver,
                   "type": kind, "attempts": entry.attempts + 1, "notification": entry.notification.to_dict()}
        await self.dead_letter_topic.send(key=entry.notification.group_key.encode(), value=orjson.dumps(payload))
        self._drop_entry(entry)

    def _drop_entry(self, entry: Pending) -> None:
        partition = self.entry_partition.pop(entry.id, None)
        if partition is not None:
            self._persist([(partition, ("outbox", entry.id), None)])

    async def _dead_letter(self, reason: str, detail: str, raw: bytes) -> None:
        self.metrics.dead_letters.labels(reason=reason).inc()
        log.warning("alert record sent to the dead-letter topic", reason=reason, detail=detail)
        body = {"reason": reason, "detail": detail, "source_topic": self.settings.alerts_topic,
                "raw": raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)}
        await self.dead_letter_topic.send(key=b"router", value=orjson.dumps(body))

    # ---------------------------------------------------------------- muting and reloads
    def _destination_count(self, receiver: str) -> int:
        found = self.receivers.get(receiver)
        return len(found.destinations()) if found is not None else 0

    def _muted_at(self, now: float) -> Any:
        def muted(alert: Alert) -> bool:
            if silenced_by(alert.labels, self._silences, now) is not None:
                self.metrics.muted.labels(by="silence").inc()
                return True
            if self.inhibitor.muted(alert.labels, self._inhibitors):
                self.metrics.muted.labels(by="inhibition").inc()
                return True
            return False
        return muted

    async def _refresh_mutes(self) -> None:
        """Silences when their version moved, and inhibiting alerts; the last known ones on a Redis error."""
        try:
            version = await self.silence_store.version()
            if version != self._silence_version:
                self._silences = await self.silence_store.list()
                self._silence_version = version
            if self.config.inhibit_rules:
                found = await self.redis.hgetall(INHIBITORS_KEY)
                self._inhibitors = [orjson.loads(v) for v in found.values()]
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the last known silences
            log.warning("could not read silences or inhibiting alerts; using the last known",
                        error=type(exc).__name__)

    def _maybe_reload(self, now: float) -> None:
        if self.routing is None or now - self._last_reload < RELOAD_EVERY_S:
            return
        self._last_reload = now
        error = self.routing.reload()
        if error is not None:
            self.metrics.reload_failures.inc()
            log.error("routing file refused; the last good routing stays", error=str(error))
        elif self.routing.current is not self.config:
            self._install(self.routing.current)
            log.info("routing reloaded", receivers=sorted(self.receivers))


def _split_matchers(text: str) -> list[str]:
    """Split ``a="x",b=~"y,z"`` at the commas between matchers (not inside quoted values)."""
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


def _log_notification(notification: Notification) -> None:
    log.info("notification (receiver without destinations)", receiver=notification.receiver,
             group=notification.group_key, status=notification.status,
             alerts=[a.labels.get("alertname") for a in notification.alerts][:10])


def _redis_client(settings: Settings) -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from spendwarden.redis_client import async_client, redis_target

    return async_client(redis_target(settings), connect_timeout_s=1.0, timeout_s=2.0, retry=Retry(NoBackoff(), 1))


def run_router(settings: Settings) -> None:
    """Run the router until SIGINT/SIGTERM."""
    from pathlib import Path

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    router = Router(settings)
    worker = faust.Worker(router.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()

