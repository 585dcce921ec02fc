"""Prometheus metrics of the alert router, on a registry of their own (names in docs/alerts.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RouterMetrics:
    """Everything the router's /metrics exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.alerts_routed = Counter("spendwarden_router_alert_records_total", "Alert records routed", ["kind"],
                                     registry=r)
        self.notifications = Counter("spendwarden_notifications_total", "Notifications made per receiver",
                                     ["receiver", "status"], registry=r)
        self.attempts = Counter("spendwarden_notification_attempts_total",
                                "Delivery attempts by outcome (sent, retry, failed)", ["receiver", "type", "outcome"],
                                registry=r)
        self.delivery_failures = Counter("spendwarden_notification_failures_total",
                                         "Notifications refused for good (dead-lettered)", ["receiver", "type"],
                                         registry=r)
        self.muted = Counter("spendwarden_alerts_muted_total", "Alerts left out of a notification", ["by"],
                             registry=r)
        self.dead_letters = Counter("spendwarden_router_dead_letters_total", "Alert records dead-lettered",
                                    ["reason"], registry=r)
        for reason in ("decode", "invalid"):  # at 0 from the start, so increase() sees the first one
            self.dead_letters.labels(reason=reason)
        self.reload_failures = Counter("spendwarden_routing_reload_failures_total",
                                       "Routing files refused (the last good one stays)", registry=r)
        self.groups = Gauge("spendwarden_alert_groups", "Alert groups owned by this router", registry=r)
        self.pending = Gauge("spendwarden_notifications_pending", "Notifications waiting for their receiver",
                             registry=r)
        self.oldest_pending = Gauge("spendwarden_notification_oldest_pending_seconds",
                                    "Age of the oldest notification waiting for its receiver", registry=r)
