"""`spendwarden router`: run the alert router (streams/alerting/router.py) as its own process."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("router")
@click.option("--routing", "routing_file", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Routing YAML (env SPENDWARDEN_ROUTING_FILE); unset: notifications are only logged.")
@click.option("--kafka", "kafka_bootstrap", default=None, help="Kafka bootstrap host:port (env SPENDWARDEN_KAFKA_BOOTSTRAP).")
@click.option("--http-port", "router_http_port", default=None, type=int, help="Port of /metrics, /healthz, /readyz.")
def router_command(routing_file: Path | None, kafka_bootstrap: str | None, router_http_port: int | None) -> None:
    """Route alerts from the alerts topic to Slack, webhooks, PagerDuty and Alertmanager (docs/alerts.md).

    Run as many as you like: each owns the alert groups of its partitions."""
    from spendwarden import logs
    from spendwarden.settings import load_settings
    from spendwarden.streams.alerting.router import run_router

    overrides = {k: v for k, v in {"routing_file": routing_file, "kafka_bootstrap": kafka_bootstrap,
                                    "router_http_port": router_http_port}.items() if v is not None}
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_json)
    run_router(settings)
