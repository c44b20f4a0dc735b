"""A webhook receiver on loopback that verifies Standard Webhooks signatures and can misbehave
on cue: scripted replies (a status, "reset", "hang") or an outage of a given length."""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

Reply = int | str  # an HTTP status, "reset" (TCP RST) or "hang" (answer after `hang_s`)
OUTAGE_REPLIES: tuple[Reply, ...] = (500, "hang", "reset")


class QuietHandler(BaseHTTPRequestHandler):
    """An HTTP handler whose `reply` sends an empty answer; requests are not logged."""

    def reply(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """A real HTTP server on a free loopback port, in a thread: (server, base URL). Stop it
    with server.shutdown() and server.server_close()."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@dataclass(frozen=True)
class Received:
    """One request the receiver got: when, its headers and body, and how it replied."""

    at: float  # monotonic time of arrival
    headers: dict[str, str]  # lower-case names
    body: bytes
    verified: bool
    reply: Reply


class WebhookReceiver:
    """Answers each POST with the next scripted reply; during an outage, with 500, a hang and
    a connection reset in turn; otherwise 204 for a valid signature and 401 for a bad one."""

    def __init__(self, secret: str, path: str = "/hooks/driftwatch", hang_s: float = 3.0
                 ) -> None:
        self.script: list[tuple[Reply, dict[str, str]]] = []
        self.received: list[Received] = []
        self.incomplete = 0  # requests cut off before their whole body arrived
        self.hang_s = hang_s
        self._verifier = Webhook(secret)
        self._down_until = 0.0
        self._outage = itertools.cycle(OUTAGE_REPLIES)
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or -1)
                body = self.rfile.read(max(0, length))
                if len(body) < length or length < 0:
                    # The sender died mid-request (kill -9): no delivery was made. A cut in the
                    # headers ends them early (EOF), before content-length or with no body.
                    receiver.incomplete += 1
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = receiver._verify(body, headers)
                reply, extra = receiver._next(verified)
                receiver.received.append(Received(time.monotonic(), headers, body, verified,
                                                  reply))
                if reply == "reset":
                    # SO_LINGER 0: close sends RST, the client sees a connection reset.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                if reply == "hang":
                    time.sleep(receiver.hang_s)
                    reply = 200
                self.reply(int(reply), extra)

        self._server: ThreadingHTTPServer
        self._server, base = serve(Handler)
        self.url = base + path

    def outage(self, seconds: float) -> None:
        """Misbehave for the next `seconds`: 500, hang, reset, 500, ..."""
        self._down_until = time.monotonic() + seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def types(self) -> Counter[str]:
        """Event types of the deliveries whose signature verified."""
        return Counter(str(json.loads(r.body).get("type")) for r in self.received if r.verified)

    def ids(self) -> list[str]:
        """The webhook-id of every request, in the order received (a retry repeats one)."""
        return [r.headers.get("webhook-id", "") for r in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool:
        try:
            self._verifier.verify(body, headers)
            return True
        except Exception:  # any failure to verify is a bad signature to a receiver
            return False

    def _next(self, verified: bool) -> tuple[Reply, dict[str, str]]:
        with self._lock:
            if self.script:
                return self.script.pop(0)
            if self.down:
                return next(self._outage), {}
        return (204 if verified else 401), {}
