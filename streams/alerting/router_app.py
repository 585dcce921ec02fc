"""The router's Faust app: topics, the state table, two agents, the tick and the web pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faust

from spendwarden.streams.alerting.router_store import StateWriter
from spendwarden.streams.metrics import add_health_pages
from spendwarden.streams.service import CheckpointTable, _patch_fetch_wait, faust_app_settings

if TYPE_CHECKING:
    from spendwarden.streams.alerting.router import Router


def build_app(router: "Router") -> faust.App:
    """The app, with the topics and the state writer set on ``router``."""
    s = router.settings
    _patch_fetch_wait(s.fetch_max_wait_ms)
    options = faust_app_settings(s)
    options.update(web_port=s.router_http_port, datadir=str(s.data_dir / "router"))
    app = faust.App(s.router_app_id, **options)
    raw = dict(key_serializer="raw", value_serializer="raw")
    router.alerts_topic = app.topic(s.alerts_topic, partitions=s.partitions, **raw)
    # Same partition count as the alerts topic: Faust assigns both topics' partition p to one process.
    router.groups_topic = app.topic(f"{s.router_app_id}-alert-groups", partitions=s.partitions, internal=True, **raw)
    router.dead_letter_topic = app.topic(s.dead_letter_topic, **raw)
    router.state = app.tables.add(CheckpointTable(
        app, name="alert-state", beacon=app.tables.beacon, partitions=s.partitions,
        schema=faust.Schema(key_type=bytes, value_type=bytes, **raw), extra_topic_configs={"cleanup.policy": "compact"}))
    router.state.service = router
    router.writer = StateWriter(app, router.state.changelog_topic.get_topic_name())

    @app.agent(router.alerts_topic, name="route-alerts")
    async def route(stream: Any) -> None:
        async for event in stream.events():
            await router.route_record(event.message.partition, event.value)

    @app.agent(router.groups_topic, name="group-alerts")
    async def group(stream: Any) -> None:
        async for event in stream.events():
            await router.apply(event.message.partition, event.value)

    @app.timer(s.router_tick_s)
    async def tick() -> None:
        await router.on_tick()

    add_health_pages(app, router.metrics.registry)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = router._ready
        return web.json({"ready": ready, "groups": len(router.book), "pending": len(router.outbox),
                         "routing_version": router.config.version}, status=200 if ready else 503)

    @app.page("/alerts/{fingerprint}/")
    async def alert_page(web: Any, request: Any, fingerprint: str) -> Any:
        """An alert's labels, annotations and evidence (the generatorURL of notifications)."""
        for alert in router.book.firing():
            if alert.fingerprint == fingerprint:
                return web.json(alert.to_dict())
        return web.json({"error": f"alert {fingerprint} is not firing in a group this router owns "
                                  "(resolved, or owned by another router process)"}, status=404)

    @app.page("/silences/new")
    async def new_silence_page(web: Any, request: Any) -> Any:
        """The Silence button of a notification: the command that silences the group."""
        matchers = request.query.get("matchers", "").strip("{}")
        args = " ".join(f"'{m.strip()}'" for m in split_matchers(matchers)) or "tenant=..."
        return web.text(f"Silence these alerts with:\n\n  spendwarden silence add {args} --for 2h "
                        f"--comment 'why'\n\nthen `spendwarden silence list` shows it and "
                        f"`spendwarden silence expire ID` ends it.\n")

    return app


def split_matchers(text: str) -> list[str]:
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
