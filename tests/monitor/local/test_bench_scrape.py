"""The benches' scrapes of a daemon's /metrics: a reset connection while the daemon runs is
scraped again (a bounded number of times), a daemon that exited is reported with its log."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.local.bench_workers import timed_end, wait_counted

_BODY = (b'driftwatch_records_total{outcome="decided"} 5.0\n'
         b"driftwatch_last_processed_timestamp_seconds 2000000000.0\n")


class _Flaky:
    """An HTTP server on 127.0.0.1 that resets its first `resets` connections (RST, after
    reading the request) and answers the others with `_BODY`, as HTTP/1.0 does."""

    def __init__(self, resets: int) -> None:
        self.resets, self.connections = resets, 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.connections <= self.resets:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(_BODY), _BODY))

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def alive() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _client(server: _Flaky) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5)


def test_a_reset_scrape_is_tried_again_while_the_daemon_runs(alive, tmp_path: Path) -> None:
    server = _Flaky(resets=2)
    try:
        with _client(server) as metrics:
            wait_counted(metrics, alive, tmp_path, "decided", 5)
            assert server.connections == 3
            # The timed end reads the daemon's last batch time from the scrape that succeeds.
            server.resets = server.connections + 1
            ended = timed_end(metrics, alive, tmp_path, "decided", 5, 1_999_999_990.0, 0.0)
            assert ended == pytest.approx(10.0)
            assert server.connections == 5
    finally:
        server.close()


def test_scrapes_that_keep_failing_end_after_three_tries(alive, tmp_path: Path) -> None:
    server = _Flaky(resets=1_000)
    try:
        with _client(server) as metrics, pytest.raises(httpx.TransportError):
            wait_counted(metrics, alive, tmp_path, "decided", 5)
        assert server.connections == 3
    finally:
        server.close()


def test_a_daemon_that_exited_is_reported_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "daemon.log").write_text("the last words of the daemon\n")
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    server = _Flaky(resets=1_000)
    try:
        with _client(server) as metrics, pytest.raises(RuntimeError,
                                                       match=r"(?s)exited with 3.*last words"):
            wait_counted(metrics, exited, tmp_path, "decided", 5)
        assert server.connections == 1
    finally:
        server.close()
