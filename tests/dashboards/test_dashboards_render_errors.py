"""`driftwatch dashboards render --prometheus URL` against what is not a Prometheus: one line
saying what to give (exit 1), not an httpx or JSON traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor.cli import main


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>Grafana</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def page() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _render(url: str, output: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["dashboards", "render", "--prometheus", url, "--output", str(output)])
    return code, capsys.readouterr().err


def test_what_is_not_a_prometheus_is_one_line(
        page: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "p.png"
    assert _render(page, output, capsys) == (
        1, f"driftwatch: {page}/api/v1/query_range answered HTTP 200 without Prometheus's "
        "JSON: give --prometheus its base URL, e.g. http://prometheus:9090\n")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        code, err = _render(url, output, capsys)
    assert code == 1 and err.startswith(f"driftwatch: cannot reach Prometheus at {url}: ")
    with pytest.raises(SystemExit) as stopped:  # refused when parsed, before any request
        _render("prometheus:9090", output, capsys)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: argument --prometheus: 'prometheus:9090': give http://HOST[:PORT] or "
        "https://...")
    assert not output.exists()
