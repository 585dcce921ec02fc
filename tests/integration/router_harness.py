"""Helpers for router integration tests: run `spendwarden router` as a real process, and a real
HTTP receiver on localhost that records every request and can fail on purpose."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from harness import ChildProcess

from spendwarden.embedded import free_port


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class RecordingReceiver:
    """An HTTP server on 127.0.0.1 that records requests; ``answer(n)`` picks the status of the n-th.

    ``hold_s`` delays every answer (the request is recorded first), to catch a sender mid-request.
    """

    def __init__(self, answer: Callable[[int], int] = lambda n: 200, hold_s: float = 0.0) -> None:
        self.answer = answer
        self.hold_s = hold_s
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    status = receiver.answer(len(receiver.requests))
                    receiver.requests.append(Request(self.path, dict(self.headers), body, status))
                if receiver.hold_s:
                    time.sleep(receiver.hold_s)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait(self, predicate: Callable[["RecordingReceiver"], bool], timeout_s: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.1)
        raise AssertionError(f"receiver never saw {what or 'what was expected'}: {len(self.requests)} requests")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_signature(request: Request, key: bytes) -> bool:
    """The receiver's side of the documented scheme, written from docs/alerts.md, not our code:
    HMAC-SHA256 over ``timestamp + "." + body``, hex, in ``X-Spendwarden-Signature: sha256=...``."""
    timestamp = request.headers["X-Spendwarden-Timestamp"]
    expected = hmac.new(key, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["X-Spendwarden-Signature"], f"sha256={expected}")


@dataclass
class RouterRun(ChildProcess):
    """One router deployment (consumer group, topics, routing file) that can be started many times."""

    command = "router"

    bootstrap: str
    redis_url: str
    topics: dict[str, str]
    routing_file: Path
    data_dir: Path
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    app_id: str = field(default_factory=lambda: f"sw-router-{uuid.uuid4().hex[:8]}")
    process: Optional[subprocess.Popen[bytes]] = None

    def own_env(self) -> dict[str, str]:
        return {
            "SPENDWARDEN_ROUTER_APP_ID": self.app_id,
            "SPENDWARDEN_ALERTS_TOPIC": self.topics["alerts"],
            "SPENDWARDEN_DEAD_LETTER_TOPIC": self.topics["dead"],
            "SPENDWARDEN_ROUTING_FILE": str(self.routing_file),
            "SPENDWARDEN_ROUTER_HTTP_PORT": str(self.port),
            "SPENDWARDEN_ROUTER_TICK_S": "0.2",
            "SPENDWARDEN_DELIVERY_MAX_BACKOFF_S": "1.0",
            "SPENDWARDEN_DELIVERY_TIMEOUT_S": "5",
        }

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            return response.read().decode()
