"""Every series name the worker and the router export: what dashboards and alert rules may use.

Tests of deploy/grafana and deploy/prometheus check their expressions against this, so a
renamed metric breaks the test instead of a dashboard panel.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from spendwarden.streams.alerting.router_metrics import RouterMetrics
from spendwarden.streams.metrics import WorkerMetrics
from spendwarden.streams.spend_metrics import SpendMetrics

# Series Prometheus adds to every target itself.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped",
                           "scrape_samples_post_metric_relabeling", "scrape_series_added"})
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}


def exported_series() -> set[str]:
    """Series names as Prometheus stores them (``_total``, ``_bucket`` … included)."""
    worker = WorkerMetrics(CollectorRegistry())
    router = RouterMetrics(CollectorRegistry())
    families = [*worker.registry.collect(), *router.registry.collect(), *SpendMetrics(dict).describe()]
    names: set[str] = set(SCRAPE_SERIES)
    for family in families:
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names
