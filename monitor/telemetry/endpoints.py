"""HTTP endpoints: /metrics (Prometheus), /healthz (the loop is alive), /readyz (consuming),
the canary gate for rollout tools that pull (/canary, /canary/promote, /canary/rollback), and
the explicit drift reference rollover (POST /admin/reference/rollover). Loopback by default.

The port is often exposed for Prometheus, so: state-changing requests (/admin/...) need the
admin bearer token, or, with none configured, a loopback client; every connection has a read
timeout (408), bodies are capped (413), and connections past the limit get 503 at once, so
slow or hostile clients cannot starve /metrics and /healthz.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from monitor.telemetry.labels import MAX_LEN
from monitor.telemetry.metrics import METRICS as m
from monitor.types import SEGMENT_LABELS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    """What one client may hold of the HTTP side (see MetricsSettings)."""

    read_timeout_s: float = 5.0
    max_body_bytes: int = 65_536
    max_connections: int = 1_024
    admin_token: str | None = None  # None: admin requests only from loopback clients

    @property
    def request_deadline_s(self) -> float:
        """The whole request (line, headers, body) must arrive within this: the read timeout
        bounds each read only, and a client sending a byte a second never met it."""
        return 2 * self.read_timeout_s


class Health:
    """Shared between the poll loop (writer) and the HTTP threads (readers)."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self._last_tick = time.monotonic()
        self.broker_connected = False
        self.partitions = 0
        self.in_group = False  # joined the consumer group (with partitions or as a standby)
        self.missing_topics: list[str] = []  # input topics the brokers do not have
        # Read at each probe, not at the loop's tick: the loop may be inside a commit that
        # waits for a hung broker (KafkaSource.heartbeat_fresh).
        self.heartbeat: Callable[[], bool] = lambda: True

    def tick(self, broker_connected: bool, partitions: int, in_group: bool = False,
             missing_topics: list[str] | None = None) -> None:
        self._last_tick = time.monotonic()
        self.broker_connected = broker_connected
        self.partitions = partitions
        self.in_group = in_group
        self.missing_topics = missing_topics or []

    def live(self) -> tuple[bool, dict[str, object]]:
        age = time.monotonic() - self._last_tick
        return age < self.stall_after_s, {"loop_age_seconds": round(age, 3)}

    def ready(self) -> tuple[bool, dict[str, object]]:
        """Connected and either owning partitions or a standby member of the group: with more
        members than partitions (`--workers auto` on more cores than the input has
        partitions, a spare decider) the spare ones are serving, not broken. Not ready while
        an input topic is missing from the brokers: nothing is read from it, yet the member
        would pass for a standby."""
        connected = self.broker_connected and self.heartbeat()
        body: dict[str, object] = {"broker_connected": connected, "partitions": self.partitions}
        if self.missing_topics:
            body["missing_topics"] = list(self.missing_topics)
        standby = self.partitions == 0 and self.in_group and not self.missing_topics
        if standby:
            body["standby"] = True
        ready = self.partitions > 0 or standby
        return connected and ready and not self.missing_topics, body


class CanaryStatus(Protocol):
    """What the /canary endpoints need of the canary gate: its status."""

    def status(self) -> dict[str, object]: ...  # monitor.acting.canary.CanaryGate


def canary_reply(canary: CanaryStatus | None, path: str, model: str | None
                 ) -> tuple[int, dict[str, object]]:
    """The canary gate over HTTP, for Argo Rollouts' web metric and Flagger's webhooks.

    GET /canary: 200 and the gate's status (every model's verdict and gate figures).
    GET|POST /canary/promote, /canary/rollback (optional ?model=, required when the gate has
    seen more than one model): 200 when that model's verdict is the one asked about; 409 with
    {"model", "verdict"} when it is not (a model not seen yet is "watching"); 400 when the
    model is ambiguous; 404 when the canary gate is not enabled.
    """
    if canary is None:
        return 404, {"error": "the canary gate is not enabled (canary.enabled in the config)"}
    status = canary.status()
    if path == "/canary":
        return 200, status
    models: dict[str, dict[str, object]] = status["models"]  # type: ignore[assignment]
    if model is None and len(models) > 1:
        return 400, {"error": "several models: add ?model=NAME", "models": sorted(models)}
    if model is None:
        model = next(iter(models), None)
    verdict = models.get(model or "", {}).get("verdict", "watching")
    wanted = path.rsplit("/", 1)[1]
    return (200 if verdict == wanted else 409), {"model": model, "verdict": verdict}


class Rollover(Protocol):
    """What the rollover endpoint needs of the drift stage: a way to request a rollover."""

    def request_rollover(self, segment: Mapping[str, str] | None = None,
                         reason: str = "command") -> None: ...  # monitor.pipeline.drift.DriftStage


def rollover_reply(drift: Rollover | None, query: dict[str, list[str]]
                   ) -> tuple[int, dict[str, object]]:
    """POST /admin/reference/rollover[?model=..&model_version=..&deployment=..&route=..]:
    202 when the drift stage will adopt the matching segments' recent records as their
    reference at its next batch (the log says what it did); 400 for an unknown label; 404
    when drift detection is off."""
    if drift is None:
        return 404, {"error": "drift detection is not enabled (drift.enabled in the config)"}
    unknown = sorted(set(query) - set(SEGMENT_LABELS))
    if unknown:
        return 400, {"error": f"unknown segment labels {unknown}; use {list(SEGMENT_LABELS)}"}
    segment = {k: v[0] for k, v in query.items()}
    long = sorted(k for k, v in segment.items() if len(v) > MAX_LEN)
    if long:  # no segment's value is longer: it would match none, and fill the log line
        return 400, {"error": f"{', '.join(long)}: a segment label's value has at most "
                              f"{MAX_LEN} characters"}
    drift.request_rollover(segment, reason="admin endpoint")
    return 202, {"rollover": "requested", "segment": segment or "all"}


def admin_refusal(limits: HttpLimits, client: str, authorization: str | None
                  ) -> tuple[int, str] | None:
    """Why a state-changing request is refused (status, reason), or None to allow it."""
    if limits.admin_token is None:
        if ipaddress.ip_address(client.removeprefix("::ffff:")).is_loopback:
            return None
        return 403, ("admin endpoints answer loopback clients only while no admin token is "
                     "set: set metrics.admin_token_env or metrics.admin_token_file")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return 401, "an admin bearer token is required (Authorization: Bearer ...)"
    if not hmac.compare_digest(token.strip().encode(), limits.admin_token.encode()):
        return 403, "the admin bearer token does not match"
    return None


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once; past that a canned 503
    and close, from the accepting thread, so a flood cannot hold it."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog (socketserver's 5 drops bursts of clients)
    _BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 25\r\nConnection: close\r\n\r\ntoo many connections, retry\n")

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 max_connections: int,
                 request_deadline_s: float = HttpLimits().request_deadline_s) -> None:
        # The address's own family: socketserver's is IPv4 only, so "::" (every address of
        # an IPv6 or dual-stack pod) and "::1" were refused. IPv4 when the name has both, as
        # before. Read by TCPServer.__init__.
        families = [info[0] for info in socket.getaddrinfo(
            address[0], address[1], type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)]
        self.address_family = socket.AF_INET if socket.AF_INET in families else families[0]
        # Connections still sending their request, and when it must have arrived by (set
        # first: a bind that fails calls server_close from TCPServer.__init__).
        self._deadline_s = request_deadline_s
        self._reading: dict[socket.socket, float] = {}
        self._reading_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        # The deadlines' watchdog lives while the server serves (a server bound only to
        # check a port needs none).
        threading.Thread(target=self._cut_late_requests, name="driftwatch-http-deadline",
                         daemon=True).start()
        super().serve_forever(poll_interval)

    def reading(self, connection: socket.socket) -> None:
        """A connection's request begins: it has the request deadline to arrive whole."""
        with self._reading_lock:
            self._reading[connection] = time.monotonic() + self._deadline_s

    def read(self, connection: socket.socket) -> None:
        """A connection's request has arrived (or it has ended): no deadline on it now."""
        with self._reading_lock:
            self._reading.pop(connection, None)

    def _cut_late_requests(self) -> None:
        """A request past its deadline gets a read timeout of a millisecond: its next read
        times out, and the handler answers 408 and closes, as for a silent client."""
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._reading_lock:
                for connection, deadline in self._reading.items():
                    if now > deadline:
                        with contextlib.suppress(OSError):
                            connection.settimeout(0.001)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def process_request(self, request: socket.socket, client_address: object) -> None:
        if not self._slots.acquire(blocking=False):
            m.HTTP_REFUSED.labels("503").inc()
            with contextlib.suppress(OSError):
                request.settimeout(0.5)
                request.sendall(self._BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: object, client_address: object) -> None:
        """A client gone before its reply was written (a scrape that timed out, a probe, a
        scanner) is no fault of the daemon's: nothing said. Anything else is logged once,
        through the logger (socketserver printed a traceback to stderr, outside the log's
        format, garbled when many came at once)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return
        log.error("HTTP request from %s failed: %r", client_address, error)


def host_port(host: str, port: int) -> str:
    """host:port as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EndpointError(OSError):
    """The HTTP side cannot listen where `metrics.host` and `metrics.port` say."""


def _cannot_serve(host: str, port: int, exc: OSError | OverflowError,
                  fix: str) -> EndpointError:
    return EndpointError(f"cannot serve /metrics on {host_port(host, port)} "
                         f"({getattr(exc, 'strerror', None) or exc}): {fix}")


def check_port(host: str, port: int, fix: str) -> None:
    """Raise EndpointError (saying `fix`) when nothing could serve on host:port now: bound
    and let go, before starting processes that would each find it taken."""
    try:
        _BoundedServer((host, port), BaseHTTPRequestHandler, 1).server_close()
    except (OSError, OverflowError) as exc:  # Overflow: a port past 65535 (port + worker)
        raise _cannot_serve(host, port, exc, fix) from None


class Endpoints:
    """The HTTP side of the daemon. `canary` and `drift` are attached once built (the
    endpoints serve /metrics and readiness while models still load)."""

    def __init__(self, host: str, port: int, health: Health,
                 canary: CanaryStatus | None = None, limits: HttpLimits | None = None) -> None:
        self.canary = canary
        self.shadow: CanaryStatus | None = None  # the shadow gate (a status() too)
        self.drift: Rollover | None = None
        self.limits = limits or HttpLimits()
        handler = _handler(health, self)
        try:
            self._server = _BoundedServer((host, port), handler, self.limits.max_connections,
                                          self.limits.request_deadline_s)
        except OSError as exc:  # taken, a host not of this machine, a name that does not resolve
            raise _cannot_serve(host, port, exc, "set metrics.host and metrics.port to an "
                                "address of this machine that no other process holds") from None
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


_CANARY_PATHS = ("/canary", "/canary/promote", "/canary/rollback")


def _handler(health: Health, endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    limits = endpoints.limits

    class Handler(BaseHTTPRequestHandler):
        timeout = limits.read_timeout_s  # on every read of the socket: request line to body
        server: _BoundedServer

        def setup(self) -> None:
            super().setup()
            self.server.reading(self.connection)

        def finish(self) -> None:
            self.server.read(self.connection)
            super().finish()

        def _arrived(self) -> None:
            """The request is read: its reply is written under the read timeout again."""
            self.server.read(self.connection)
            with contextlib.suppress(OSError):
                self.connection.settimeout(limits.read_timeout_s)

        def do_POST(self) -> None:
            # Flagger POSTs its webhook payload; the verdict does not depend on it, but it is
            # read (bounded) so the connection stays well-formed.
            if not self._read_body():
                return
            self._arrived()
            url = urlsplit(self.path)
            if url.path in _CANARY_PATHS[1:]:
                self.do_GET()
            elif url.path == "/admin/reference/rollover":
                refused = admin_refusal(limits, self.client_address[0],
                                        self.headers.get("Authorization"))
                if refused is not None:
                    self._refuse(*refused)
                    return
                code, reply = rollover_reply(endpoints.drift, parse_qs(url.query))
                self._send(code, json.dumps(reply).encode(), "application/json")
            else:
                self._send(405, b"POST is for /canary/promote, /canary/rollback and "
                                b"/admin/reference/rollover\n", "text/plain")

        def do_GET(self) -> None:
            self._arrived()
            url = urlsplit(self.path)
            path = url.path
            if path in _CANARY_PATHS:
                model = parse_qs(url.query).get("model", [None])[0]
                code, reply = canary_reply(endpoints.canary, path, model)
                self._send(code, json.dumps(reply).encode(), "application/json")
            elif path == "/shadow":
                if endpoints.shadow is None:
                    reply: dict[str, object] = {
                        "error": "the shadow gate is not enabled (shadow.enabled in the config)"}
                    self._send(404, json.dumps(reply).encode(), "application/json")
                else:
                    self._send(200, json.dumps(endpoints.shadow.status()).encode(),
                               "application/json")
            elif path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, **detail}).encode()
                self._send(200 if ok else 503, body, "application/json")
            elif path == "/admin/reference/rollover":
                self._send(405, b"POST /admin/reference/rollover (with the admin token)\n",
                           "text/plain", {"Allow": "POST"})
            else:
                self._send(404, b"not found: try /metrics, /healthz, /readyz, /canary or "
                                b"/shadow\n",
                           "text/plain")

        def _read_body(self) -> bool:
            """Read the announced body within the limits; False (answered) when it breaks them."""
            length = self.headers.get("Content-Length") or "0"
            # ASCII digits only ('²' is a digit to str.isdigit, not to int), and no more of
            # them than a body could have (int() refuses 4,300).
            if not (length.isascii() and length.isdigit()) or len(length) > 18:
                self._refuse(400, f"Content-Length {length[:20]!r} is not a byte count")
                return False
            if int(length) > limits.max_body_bytes:
                self._refuse(413, f"body of {length} bytes; at most {limits.max_body_bytes}")
                return False
            try:
                body = self.rfile.read(int(length))
            except TimeoutError:
                body = b""
            if len(body) < int(length):
                self._refuse(408, f"body not received within {limits.read_timeout_s:g}s")
                return False
            return True

        def _refuse(self, status: int, reason: str) -> None:
            m.HTTP_REFUSED.labels(str(status)).inc()
            self.close_connection = True
            headers = {"WWW-Authenticate": 'Bearer realm="driftwatch"'} if status == 401 else {}
            self._send(status, json.dumps({"error": reason}).encode(), "application/json",
                       headers)

        def _send(self, status: int, body: bytes, content_type: str,
                  headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # a probe's: GET's status and headers, no body
            self.do_GET()

        def _not_allowed(self) -> None:
            self._send(405, f"{self.command} is not served: GET, HEAD, or POST for "
                       "/canary/promote, /canary/rollback and /admin/reference/rollover\n"
                       .encode(), "text/plain", {"Allow": "GET, HEAD, POST"})

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

        def log_error(self, format: str, *args: object) -> None:
            # http.server's only word on a request line or headers that did not arrive in
            # time, after which it drops the connection: answer 408 first.
            if format.startswith("Request timed out"):
                m.HTTP_REFUSED.labels("408").inc()
                with contextlib.suppress(OSError):
                    self.wfile.write(b"HTTP/1.0 408 Request Timeout\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")

    return Handler
