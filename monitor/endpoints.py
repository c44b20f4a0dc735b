"""HTTP endpoints: /metrics (Prometheus), /healthz (the loop is alive), /readyz (consuming)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Health:
    """Shared between the poll loop (writer) and the HTTP threads (readers)."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self._last_tick = time.monotonic()
        self.broker_connected = False
        self.partitions = 0

    def tick(self, broker_connected: bool, partitions: int) -> None:
        self._last_tick = time.monotonic()
        self.broker_connected = broker_connected
        self.partitions = partitions

    def live(self) -> tuple[bool, dict[str, object]]:
        age = time.monotonic() - self._last_tick
        return age < self.stall_after_s, {"loop_age_seconds": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, object]]:
        ok = self.broker_connected and self.partitions > 0
        return ok, {"broker_connected": self.broker_connected, "partitions": self.partitions}


class Endpoints:
    def __init__(self, host: str, port: int, health: Health) -> None:
        handler = _handler(health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="driftwatch-http", daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> Endpoints:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, **detail}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

    return Handler
