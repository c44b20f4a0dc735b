"""Endpoints whose answer never ends, on a real HTTP server: a webhook or Alertmanager push
returns within its timeout with the status, reading a bounded part of the body."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import httpx
import pytest

from monitor.acting import alertmanager, bounded_post, webhook
from monitor.app.reference_build import request_rollover
from monitor.config.acting import AlertmanagerAction, WebhookAction
from monitor.local.receiver import QuietHandler, serve
from tests.conftest import SECRET
from tests.support import wait_for


@dataclass
class Endless:
    """What an endless answer's server saw: bytes written before the client went away."""

    status: int
    chunk: bytes
    pause_s: float
    written: int = 0
    requests: int = 0
    closed: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def endless() -> Iterator[Callable[[int, bytes, float], tuple[Endless, str]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, chunk: bytes, pause_s: float) -> tuple[Endless, str]:
        seen = Endless(status, chunk, pause_s)

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                seen.requests += 1
                # HTTP/1.0 with no content-length: the body lasts until the connection ends.
                self.send_response(seen.status)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(seen.chunk)
                        self.wfile.flush()
                        seen.written += len(seen.chunk)
                        time.sleep(seen.pause_s)
                except OSError:  # the client closed its end
                    seen.closed.set()

        server, url = serve(Handler)
        servers.append(server)
        return seen, url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def finishes(call: Callable[[], object], within_s: float) -> object:
    """`call`'s result, from a thread, failing the test (not hanging it) past `within_s`."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    wait_for(lambda: not thread.is_alive(), within_s, "the request to return")
    return out[0]


def test_a_body_dripped_forever_ends_at_the_timeout_with_its_status(endless) -> None:
    # Each read is well within the timeout, so httpx's own timeout never fires.
    seen, url = endless(200, b"data: tick\n\n", 0.05)
    with httpx.Client() as client:
        started = time.monotonic()
        answer = finishes(lambda: bounded_post.post(client, url, b"{}", {}, 1.0), 60)
        took = time.monotonic() - started
    assert isinstance(answer, bounded_post.Answer)
    assert answer.status == 200 and answer.headers["content-type"] == "text/event-stream"
    assert answer.body.startswith(b"data: tick\n\n") and len(answer.body) < 4_096
    assert took >= 1.0  # read until the timeout ran out, not cut at the first chunk
    wait_for(seen.closed.is_set, 30, "the server to see the connection closed")


def test_a_flood_of_body_keeps_its_first_bytes_and_closes_the_connection(endless) -> None:
    seen, url = endless(500, b"x" * 65_536, 0.0)
    with httpx.Client() as client:
        answer = finishes(lambda: bounded_post.post(client, url, b"{}", {}, 30.0), 60)
    assert isinstance(answer, bounded_post.Answer)
    assert (answer.status, answer.body) == (500, b"x" * bounded_post.BODY_KEPT)
    wait_for(seen.closed.is_set, 30, "the server to see the connection closed")
    assert seen.written < 64 * 2**20  # what the sockets' buffers took, not the flood


def test_a_webhook_answered_with_an_endless_stream_is_delivered_once(
        endless, monkeypatch: pytest.MonkeyPatch) -> None:
    seen, url = endless(200, b"data: tick\n\n", 0.05)
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    action = WebhookAction(type="webhook", url=url, secret_env="TEST_HOOK_SECRET",
                           timeout_seconds=1)
    sender = webhook.WebhookSender(httpx.Client())
    sender.add("hook", action)
    try:
        outcome = finishes(lambda: sender.send("hook", action, "evt-1", b'{"a":1}'), 60)
        seen.status, seen.chunk = 503, b"busy " * 100
        again = finishes(lambda: sender.send("hook", action, "evt-2", b'{"a":2}'), 60)
    finally:
        sender.close()
    assert outcome == webhook.Outcome("delivered")
    assert again == webhook.Outcome("retry", "HTTP 503")
    assert seen.requests == 2


def test_an_alertmanager_error_with_an_endless_body_quotes_its_start(endless) -> None:
    seen, url = endless(500, "überlastet\n".encode() * 50, 0.01)
    action = AlertmanagerAction(type="alertmanager", url=url, timeout_seconds=1)
    with httpx.Client() as client:
        error = finishes(lambda: alertmanager.push(client, action, b"[]"), 60)
    assert error == "HTTP 500: " + repr(("überlastet\n" * 50)[:200])  # one line, quoted
    assert seen.requests == 1


def test_a_rollover_asked_of_an_endless_answer_returns_with_its_start(
        endless, capsys: pytest.CaptureFixture[str]) -> None:
    """`driftwatch reference rollover --url` pointed at something that is not the daemon."""
    seen, url = endless(404, b"<html>" * 10_000, 0.0)
    code = finishes(lambda: request_rollover(url, ["deployment=stable"]), 60)
    out, err = capsys.readouterr()
    assert code == 1 and "rollover refused (404)" in err
    assert out == ("<html>" * 10_000)[:bounded_post.BODY_KEPT] + "\n"
    assert seen.requests == 1
    wait_for(seen.closed.is_set, 30, "the server to see the connection closed")
