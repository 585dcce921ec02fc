"""`spendwarden status` asking several workers: the one counting the tenant answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Iterator

import pytest

from spendwarden.cli_status import fetch_status, render
from spendwarden.exceptions import ConfigError


def serve(status: int, body: dict[str, Any]) -> tuple[HTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


REPORT = {"tenant": "acme", "at": "2026-01-01T00:00:00.000Z", "rules_version": "v1", "budgets": [{
    "budget": "uc-day", "scope": {"tenant_id": "acme", "use_case_id": "chat"}, "period": "day",
    "period_id": "2026-01-01", "period_end": "2026-01-02T00:00:00.000Z", "spend_usd": "12.5", "limit_usd": "100",
    "used_ratio": 0.125, "burn_1h_usd_per_hour": "1", "burn_24h_usd_per_hour": "0.5", "exhausts_at": None,
    "forecast": {"method": "linear", "end_usd": "24.5", "low_usd": "18.5", "high_usd": "30.5", "end_ratio": 0.245,
                 "history_hours": 13, "level": 1.0}}]}


@pytest.fixture
def workers() -> Iterator[list[str]]:
    servers = [serve(503, {"ready": False}), serve(404, {"error": "not here"}), serve(200, REPORT)]
    yield [url for _, url in servers]
    for server, _ in servers:
        server.shutdown()


def test_a_failing_or_other_worker_does_not_stop_the_search(workers: list[str]) -> None:
    assert fetch_status(workers, "acme", None) == REPORT
    table = render(REPORT)
    assert "use_case=chat" in table and "$12.50" in table and "$24.50 [$18.50-$30.50]" in table


def test_no_worker_counting_the_tenant_names_the_ones_that_failed(workers: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"no worker asked counts tenant 'acme'.*HTTP 503"):
        fetch_status(workers[:2], "acme", None)
