"""The alert router: a Faust app that reads ``spendwarden.alerts`` and delivers notifications.

Why two agents: an alert record is keyed by its fingerprint, but a notification belongs to a
group (route + group labels). ``route-alerts`` matches each record against the routing tree
and re-sends it keyed by group key to the internal group topic, so the one process that owns
that partition owns the group, cluster-wide, with no lock: partition ownership is the lock.
``group-alerts`` updates the group; the tick flushes due groups into the outbox, and each
destination's queue is delivered by its own task, so a slow receiver delays only itself.

Durability (streams/alerting/router_store.py): every state change (where a fingerprint was
routed, a group, an outbox entry) is written to the state changelog before the record that
caused it is acknowledged; an outbox entry is written before the group state that says it was
made, and removed only after a 2xx or a permanent refusal (then dead-lettered). A crash
between a send and that removal re-sends the same notification with the same idempotency
key: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import faust
import orjson

from spendwarden.logs import get_logger
from spendwarden.settings import Settings
from spendwarden.streams.alerting.config import RoutingStore, default_routing
from spendwarden.streams.alerting.delivery import Sender, backoff_delay
from spendwarden.streams.alerting.inhibit import Inhibitor
from spendwarden.streams.alerting.model import Alert, Notification
from spendwarden.streams.alerting.mutes import Mutes
from spendwarden.streams.alerting.outbox import Outbox, Pending
from spendwarden.streams.alerting.receiver_config import ReceiverSpec, destination_id
from spendwarden.streams.alerting.router_core import GroupBook, Routed, merge_routed, resolution_of, route_firing
from spendwarden.streams.alerting.router_metrics import RouterMetrics
from spendwarden.streams.alerting.router_store import recovered
from spendwarden.streams.alerting.tree import compile_tree
from spendwarden.streams.service import _redis_client  # the worker's: one quick retry, short timeouts

log = get_logger("spendwarden.router")
RELOAD_EVERY_S = 5.0


class Router:
    """What the router's agents, tick and web pages share."""

    def __init__(self, settings: Settings, redis_client: Any = None) -> None:
        self.settings = settings
        self.routing = RoutingStore(settings.routing_file) if settings.routing_file else None
        self.redis = redis_client if redis_client is not None else _redis_client(settings)
        self.sender = Sender(timeout_s=settings.delivery_timeout_s, external_url=settings.alerts_external_url)
        self.metrics = RouterMetrics()
        self._install(self.routing.current if self.routing else default_routing())
        self.book = GroupBook()
        self.routed: dict[int, dict[str, list[Routed]]] = {}
        self.outbox = Outbox(backoff=lambda failures, retry_after: backoff_delay(
            failures, cap_s=settings.delivery_max_backoff_s, retry_after_s=retry_after))
        self.entry_partition: dict[str, int] = {}
        self._inflight: set[tuple[str, str]] = set()
        self._last_reload = 0.0
        self._ready = False
        self._tick_lock = asyncio.Lock()
        from spendwarden.streams.alerting.router_app import build_app

        self.app = build_app(self)

    def _install(self, config: Any) -> None:
        self.config = config
        self.tree = compile_tree(config)
        self.mutes = Mutes(self.redis, Inhibitor(config.inhibit_rules))
        self.receivers = {r.name: r for r in config.receivers}
        for receiver in config.receivers:  # at 0 from the start, so increase() sees a first refusal
            for spec in receiver.destinations():
                self.metrics.delivery_failures.labels(receiver=receiver.name, type=spec.type)
        self.external_url = (config.external_url or self.settings.alerts_external_url).rstrip("/")
        # Alertmanager holds a posted alert until endsAt: past the longest repeat, when it is re-posted
        self.sender.alertmanager_hold_s = max(r.repeat_interval_s for r in self.tree.routes()) + 300.0
        self.sender.external_url = self.external_url

    # ---------------------------------------------------------------- partitions
    def on_revoked(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.book.drop(partition)
            self.routed.pop(partition, None)
            gone = [i for i, p in self.entry_partition.items() if p == partition]
            self.outbox.drop_partition_entries(gone)
            for entry_id in gone:
                del self.entry_partition[entry_id]

    async def on_recovered(self, partitions: set[int]) -> None:
        """Rebuild the state of newly owned partitions from the recovered table."""
        new = {p for p in partitions if p not in self.routed}
        for partition, kinds in recovered(self.state.data.items(), new).items():
            self.book.load(partition, [value for _, value in kinds.get("group", [])])
            self.routed[partition] = {fp: [Routed.from_dict(r) for r in value] for fp, value in kinds.get("routed", [])}
            for _, value in kinds.get("outbox", []):
                entry = Pending.from_dict(value)
                self.outbox.add(entry)
                self.entry_partition[entry.id] = partition
        self._ready = True
        log.info("router partitions recovered", partitions=sorted(partitions), groups=len(self.book),
                 pending=len(self.outbox))

    # ---------------------------------------------------------------- stage one: route
    async def route_record(self, partition: int, raw: bytes) -> None:
        """Send a firing or resolved alert to each of its groups; remember where a firing went."""
        try:
            record = orjson.loads(raw)
            kind, fingerprint = record["kind"], str(record["fingerprint"])
        except Exception as exc:  # noqa: BLE001 - any unreadable record goes to the dead-letter topic
            await self._dead_letter("decode", f"not an alert record: {type(exc).__name__}", raw)
            return
        known = self.routed.setdefault(partition, {})
        if kind == "alert_firing":
            try:
                routed = route_firing(record, self.tree, self.external_url)
            except Exception as exc:  # noqa: BLE001 - a missing or mistyped field
                await self._dead_letter("invalid", f"alert_firing record: {type(exc).__name__}: {str(exc)[:200]}", raw)
                return
            await self._to_groups(routed)
            known[fingerprint] = merge_routed(known.get(fingerprint, []), routed)
            await self.writer.write([(partition, ("routed", fingerprint), [r.to_dict() for r in known[fingerprint]])])
            await self.mutes.note_source(fingerprint, routed[0].alert.labels, record.get("period_end"))
        elif kind == "alert_resolved":
            earlier = known.get(fingerprint)
            if earlier is None:
                log.debug("resolution of an alert this router never routed", fingerprint=fingerprint)
                return
            await self._to_groups(resolution_of(record, earlier))
            del known[fingerprint]
            await self.writer.write([(partition, ("routed", fingerprint), None)])
            await self.mutes.forget_source(fingerprint)
        else:
            await self._dead_letter("invalid", f"unknown alert record kind {kind!r}"[:200], raw)
            return
        self.metrics.alerts_routed.labels(kind=kind).inc()

    async def _to_groups(self, routed: list[Routed]) -> None:
        """Send and wait until landed: what remembers the routing must never be ahead of it."""
        sent = [await self.groups_topic.send(key=r.group_key.encode(), value=orjson.dumps(r.to_dict())) for r in routed]
        await asyncio.gather(*sent)

    # ---------------------------------------------------------------- stage two: group
    async def apply(self, partition: int, raw: bytes) -> None:
        try:
            routed = Routed.from_dict(orjson.loads(raw))
        except Exception as exc:  # noqa: BLE001 - only the router writes here, but never crash on input
            await self._dead_letter("invalid", f"group record: {type(exc).__name__}", raw)
            return
        await self.writer.write(self.book.apply(partition, routed, time.time()))

    # ---------------------------------------------------------------- the tick
    async def on_tick(self, now: Optional[float] = None) -> None:
        """Flush due groups and start delivering; an error is logged, never fatal to the timer."""
        if self._tick_lock.locked():
            return
        async with self._tick_lock:
            try:
                await self._tick(time.time() if now is None else now)
            except Exception as exc:  # noqa: BLE001 - the next tick tries again
                log.error("router tick failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _tick(self, now: float) -> None:
        await self.sender.start()
        self._maybe_reload(now)
        await self.mutes.refresh(now)
        pending, changes, made = self.book.flush(now, self._muted_at(now), self._destination_ids)
        for entry_partition, entry in pending:
            self.outbox.add(entry)
            self.entry_partition[entry.id] = entry_partition
        await self.writer.write(changes)
        for notification in made:
            self.metrics.notifications.labels(receiver=notification.receiver, status=notification.status).inc()
            if not self._destination_ids(notification.receiver):
                _log_notification(notification)
        for queue in self.outbox.queues(now):
            destination = queue[0].destination
            if destination not in self._inflight:
                self._inflight.add(destination)
                asyncio.ensure_future(self._deliver_queue(queue, destination, now))
        self.metrics.groups.set(len(self.book))
        self.metrics.pending.set(len(self.outbox))
        self.metrics.oldest_pending.set(self.outbox.oldest_age(now))

    async def _deliver_queue(self, queue: list[Pending], destination: tuple[str, str], now: float) -> None:
        """Send one destination's queue in order; stop at the first entry that is not sent."""
        try:
            for entry in queue:
                if entry.id not in self.entry_partition:
                    return  # its partition was revoked (the new owner sends it) or it is done
                spec = self._destination(entry)
                if spec is None:
                    await self._give_up(entry, "the receiver or this destination is no longer in the routing file")
                    continue
                result = await self.sender.send(entry.notification, spec)
                self.metrics.attempts.labels(receiver=entry.notification.receiver, type=spec.type,
                                             outcome=result.outcome).inc()
                if entry.id not in self.entry_partition:
                    return  # revoked while sending: this process no longer records anything for it
                if result.outcome == "sent":
                    self.outbox.sent(entry)
                    await self._drop(entry)
                elif result.outcome == "failed":
                    await self._give_up(entry, result.reason, spec.type)
                else:
                    wait = self.outbox.retry(entry, time.time(), result.reason, result.retry_after_s)
                    await self.writer.write([(self.entry_partition[entry.id], ("outbox", entry.id), entry.to_dict())])
                    log.info("receiver not reached; will retry", receiver=entry.notification.receiver, type=spec.type,
                             attempt=entry.attempts, wait_s=round(wait, 1), reason=result.reason)
                    return
        except Exception as exc:  # noqa: BLE001 - the entry stays; the next tick tries again
            log.error("delivery failed unexpectedly", receiver=destination[0], error=type(exc).__name__)
        finally:
            self._inflight.discard(destination)

    def _destination(self, entry: Pending) -> Optional[ReceiverSpec]:
        receiver = self.receivers.get(entry.notification.receiver)
        for spec in receiver.destinations() if receiver is not None else []:
            if destination_id(spec) == entry.dest:
                return spec
        return None

    async def _give_up(self, entry: Pending, reason: str, kind: str = "unknown") -> None:
        self.outbox.failed(entry)
        self.metrics.delivery_failures.labels(receiver=entry.notification.receiver, type=kind).inc()
        log.error("notification refused for good; sent to the dead-letter topic",
                  receiver=entry.notification.receiver, type=kind, reason=reason)
        payload = {"reason": "notification_refused", "detail": reason, "receiver": entry.notification.receiver,
                   "type": kind, "attempts": entry.attempts + 1, "notification": entry.notification.to_dict()}
        try:
            await self.dead_letter_topic.send(key=entry.notification.group_key.encode(), value=orjson.dumps(payload))
        except Exception as exc:  # noqa: BLE001 - e.g. too large for the topic: the log line above stays
            log.error("could not write the refused notification to the dead-letter topic", error=type(exc).__name__)
        await self._drop(entry)

    async def _drop(self, entry: Pending) -> None:
        partition = self.entry_partition.pop(entry.id, None)
        if partition is not None:
            await self.writer.write([(partition, ("outbox", entry.id), None)])

    async def _dead_letter(self, reason: str, detail: str, raw: Any) -> None:
        self.metrics.dead_letters.labels(reason=reason).inc()
        log.warning("alert record sent to the dead-letter topic", reason=reason, detail=detail)
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        body = {"reason": reason, "detail": detail, "source_topic": self.settings.alerts_topic, "raw": text}
        await self.dead_letter_topic.send(key=b"router", value=orjson.dumps(body))

    # ---------------------------------------------------------------- muting and reloads
    def _destination_ids(self, receiver: str) -> list[str]:
        found = self.receivers.get(receiver)
        return [destination_id(spec) for spec in found.destinations()] if found is not None else []

    def _muted_at(self, now: float) -> Any:
        def muted(alert: Alert) -> bool:
            by = self.mutes.muted(alert.labels, now)
            if by is not None:
                self.metrics.muted.labels(by=by).inc()
            return by is not None
        return muted

    def _maybe_reload(self, now: float) -> None:
        if self.routing is None or now - self._last_reload < RELOAD_EVERY_S:
            return
        self._last_reload = now
        error = self.routing.reload()
        if error is not None:
            self.metrics.reload_failures.inc()
            log.error("routing file refused; the last good routing stays", error=str(error))
        elif self.routing.current.version != self.config.version:
            self._install(self.routing.current)
            log.info("routing reloaded", receivers=sorted(self.receivers), version=self.config.version)


def _log_notification(notification: Notification) -> None:
    log.info("notification (receiver without destinations)", receiver=notification.receiver,
             group=notification.group_key, status=notification.status,
             alerts=[a.labels.get("alertname") for a in notification.alerts][:10])


def run_router(settings: Settings) -> None:
    """Run the router until SIGINT/SIGTERM."""
    from pathlib import Path

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    router = Router(settings)
    worker = faust.Worker(router.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()

