"""The HTTP port is often exposed for Prometheus: admin requests need the token (or loopback),
and slow, large or many connections cannot starve /metrics and /healthz. Real sockets."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import ValidationError

from chaos.parts import wait_for
from monitor.config import MetricsSettings
from monitor.telemetry.endpoints import (
    EndpointError,
    Endpoints,
    Health,
    HttpLimits,
    admin_refusal,
    host_port,
)


class _Drift:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []

    def request_rollover(self, segment: Mapping[str, str] | None = None,
                         reason: str = "command") -> None:
        self.requests.append(dict(segment or {}))


def _serve(limits: HttpLimits) -> tuple[Endpoints, _Drift, str]:
    health = Health()
    health.tick(broker_connected=True, partitions=1)
    endpoints = Endpoints("127.0.0.1", 0, health, limits=limits).start()
    drift = _Drift()
    endpoints.drift = drift
    return endpoints, drift, f"http://127.0.0.1:{endpoints.port}"


@pytest.fixture
def served() -> Iterator[tuple[Endpoints, _Drift, str]]:
    endpoints, drift, url = _serve(HttpLimits(read_timeout_s=1.0, max_body_bytes=1_000,
                                              admin_token="s3cret-token"))
    yield endpoints, drift, url
    endpoints.stop()


def _refused(code: str) -> float:
    return REGISTRY.get_sample_value("driftwatch_http_refused_total", {"code": code}) or 0.0


def test_the_rollover_needs_the_admin_bearer_token(served) -> None:
    _, drift, url = served
    before = (_refused("401"), _refused("403"))
    target = f"{url}/admin/reference/rollover?model=m"
    missing = httpx.post(target)
    wrong = httpx.post(target, headers={"Authorization": "Bearer guess"})
    right = httpx.post(target, headers={"Authorization": "Bearer s3cret-token"})
    assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]
    assert wrong.status_code == 403
    assert right.status_code == 202 and drift.requests == [{"model": "m"}]
    # Longer than any segment's value (64): it matched none and filled a 12 kB log line.
    long = httpx.post(f"{url}/admin/reference/rollover", params={"deployment": "x" * 65},
                      headers={"Authorization": "Bearer s3cret-token"})
    assert long.status_code == 400 and drift.requests == [{"model": "m"}]
    assert long.json() == {"error": "deployment: a segment label's value has at most 64 "
                                    "characters"}
    assert (_refused("401"), _refused("403")) == (before[0] + 1, before[1] + 1)


def test_without_a_token_only_loopback_clients_may_change_state() -> None:
    open_limits = HttpLimits()
    assert admin_refusal(open_limits, "127.0.0.1", None) is None
    assert admin_refusal(open_limits, "::1", None) is None
    code, reason = admin_refusal(open_limits, "10.1.2.3", None)  # type: ignore[misc]
    assert code == 403 and "metrics.admin_token_env" in reason
    assert admin_refusal(open_limits, "::ffff:192.168.0.9", None) is not None
    endpoints, drift, url = _serve(open_limits)
    try:
        assert httpx.post(f"{url}/admin/reference/rollover").status_code == 202
        assert drift.requests == [{}]
    finally:
        endpoints.stop()


def test_a_large_body_is_413_and_a_body_that_never_comes_is_408(served) -> None:
    _, _, url = served
    host, port = url.removeprefix("http://").split(":")
    before = (_refused("413"), _refused("408"))
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /canary/promote HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.0 413")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /canary/promote HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nab")
        started = time.monotonic()
        assert s.recv(100).startswith(b"HTTP/1.0 408")
        assert time.monotonic() - started < 5
    assert (_refused("413"), _refused("408")) == (before[0] + 1, before[1] + 1)


@pytest.mark.slow  # starts a process or runs many examples
def test_hundreds_of_stalled_connections_do_not_starve_metrics_and_healthz(served) -> None:
    _, _, url = served
    host, port = url.removeprefix("http://").split(":")
    stalled: list[socket.socket] = []
    try:
        for i in range(300):  # half announce a body they never send, half stop mid-headers
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(b"POST /canary/promote HTTP/1.1\r\nContent-Length: 900\r\n\r\n" if i % 2
                      else b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            stalled.append(s)
        with httpx.Client(base_url=url, timeout=5) as http:
            for _ in range(3):
                assert http.get("/metrics").status_code == 200
                assert http.get("/healthz").status_code == 200
        # The read timeout (1 s here) ends every stalled connection, each with a 408.
        answers = [s.recv(64) for s in stalled]
        assert all(a.startswith(b"HTTP/1.0 408") for a in answers), set(answers)
    finally:
        for s in stalled:
            s.close()


def test_connections_past_the_limit_get_503_at_once() -> None:
    endpoints, _, url = _serve(HttpLimits(read_timeout_s=5.0, max_connections=4))
    host, port = url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
    try:
        # The server has accepted all four (a handler thread holds each slot): waited for,
        # as a busy machine may take its time to accept them.
        wait_for(lambda: endpoints._server._slots._value == 0, 30, "4 connections held")
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            # A 503, not the 408 a handler would answer after the 5 s read timeout.
            assert extra.recv(100).startswith(b"HTTP/1.0 503")
    finally:
        for s in held:
            s.close()
        endpoints.stop()


@pytest.mark.slow  # starts a process or runs many examples
def test_check_config_warns_when_the_port_is_exposed_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"topic": "t"}, "metrics": {"host": "0.0.0.0"}}))
    exposed = subprocess.run([sys.executable, "-m", "monitor.cli", "check-config",
                              "--config", str(path)], capture_output=True, text=True,
                             timeout=60)
    assert exposed.returncode == 0
    assert "warning: metrics.host 0.0.0.0" in exposed.stderr
    assert "metrics.admin_token_env" in exposed.stderr
    assert not MetricsSettings(host="0.0.0.0", admin_token_env="DW_ADMIN_TOKEN").warnings()
    assert not MetricsSettings(host="::1").warnings()
    assert MetricsSettings(host="10.0.0.7").warnings()
    with pytest.raises(ValidationError, match=r"at most one of metrics\.admin_token_env"):
        MetricsSettings(admin_token_env="A", admin_token_file=tmp_path / "t")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")


@pytest.mark.parametrize(("family", "host"), [
    (socket.AF_INET, "127.0.0.1"), pytest.param(socket.AF_INET6, "::1", marks=IPV6)])
def test_a_port_another_process_holds_is_a_clear_error_and_exit_2(
        family: socket.AddressFamily, host: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A traceback from socketserver's bind, exit 1, before. An IPv6 address in brackets."""
    from monitor.cli import main

    with socket.socket(family) as held:
        held.bind((host, 0))
        held.listen()
        port = held.getsockname()[1]
        shown = host_port(host, port)
        with pytest.raises(EndpointError, match=rf"cannot serve /metrics on {re.escape(shown)} "
                                                r"\(Address already in use\): set metrics"):
            Endpoints(host, port, Health())
        config = tmp_path / "dw.yaml"
        config.write_text(yaml.safe_dump({
            "kafka": {"topic": "t", "bootstrap_servers": ["127.0.0.1:1"]},
            "metrics": {"host": host, "port": port}, "checkpoint": {"enabled": False}}))
        assert main(["run", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith(
        f"driftwatch: cannot serve /metrics on {shown} (Address already in use)")


@pytest.mark.parametrize("host", [pytest.param("::1", marks=IPV6), pytest.param("::", marks=IPV6),
                                  "localhost", "127.0.0.1"])
def test_an_ipv6_host_is_served_as_ipv4_ones_are(host: str) -> None:
    """socketserver binds IPv4 only: "::" (every address of an IPv6 or dual-stack pod) and
    "::1" were refused as "Address family for hostname not supported"."""
    health = Health()
    health.tick(broker_connected=True, partitions=1)
    endpoints = Endpoints(host, 0, health).start()
    try:
        ipv6 = ":" in host
        url = f"http://{host_port('::1' if ipv6 else '127.0.0.1', endpoints.port)}/readyz"
        assert httpx.get(url, timeout=5).json() == {"ok": True, "broker_connected": True,
                                                    "partitions": 1}
    finally:
        endpoints.stop()


def test_host_port_puts_an_ipv6_address_in_brackets() -> None:
    assert host_port("::1", 9108) == "[::1]:9108"
    assert host_port("0.0.0.0", 9108) == "0.0.0.0:9108"
    assert host_port("metrics.internal", 80) == "metrics.internal:80"


@pytest.mark.parametrize("length", ["\xb2".encode("latin-1"), b"9" * 5_000, b"+5", b"5 "],
                         ids=["superscript-two", "5000-nines", "plus", "space"])
def test_a_content_length_that_is_no_byte_count_is_400(served, length: bytes) -> None:
    """'²' is a digit to str.isdigit (headers are read as latin-1) and 5,000 nines are
    digits int() refuses: each dropped the connection with a traceback on stderr."""
    _, _, url = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /canary/promote HTTP/1.1\r\nContent-Length: " + length + b"\r\n\r\n")
        answer = s.recv(200)
    assert answer.startswith(b"HTTP/1.0 400"), answer


def test_a_client_gone_before_its_reply_leaves_nothing_on_stderr(
        served, capfd: pytest.CaptureFixture[str]) -> None:
    """A scrape that timed out, a probe: socketserver printed ~25 lines of traceback each."""
    import struct

    _, _, url = served
    host, port = url.removeprefix("http://").split(":")
    for _ in range(20):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        s.close()
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200  # after them: served
    assert "Traceback" not in capfd.readouterr().err


def test_head_is_a_probes_get_and_other_methods_are_405(served) -> None:
    _, _, url = served
    with httpx.Client(base_url=url, timeout=5) as http:
        head = http.head("/healthz")  # its body's length told, the body not sent
        assert (head.status_code, head.content) == (200, b"")
        assert int(head.headers["content-length"]) > len('{"ok": true}')
        assert http.head("/nowhere").status_code == 404
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            refused = http.request(method, "/metrics")
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, POST"
        rollover = http.get("/admin/reference/rollover")
        assert rollover.status_code == 405 and rollover.headers["allow"] == "POST"


def test_a_worker_port_past_65535_is_a_clear_error() -> None:
    """`--workers 2` with metrics.port 65534: the second worker's port overflowed bind()."""
    from monitor.telemetry.endpoints import check_port

    with pytest.raises(EndpointError, match=r"cannot serve /metrics on 127\.0\.0\.1:65536 "
                                            r"\(bind\(\): port must be 0-65535\.?\): fix it"):
        check_port("127.0.0.1", 65_536, "fix it")


def test_a_client_that_trickles_its_request_is_cut_at_the_request_deadline(served) -> None:
    """A byte every 0.3 s never met the 1 s read timeout, and a thousand such clients held
    every slot: /metrics answered 503 for as long as they went on. The whole request now
    has twice the read timeout to arrive."""
    endpoints, _, url = served
    host, port = url.removeprefix("http://").split(":")
    assert endpoints.limits.request_deadline_s == 2.0
    before = _refused("408")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 15 and not answer:
            with contextlib.suppress(OSError):  # cut: the answer is waiting
                s.sendall(b"X")
            s.settimeout(0.3)
            try:
                answer = s.recv(100)
            except TimeoutError:
                continue
    assert answer.startswith(b"HTTP/1.0 408"), answer  # without a deadline: none in 15 s
    assert _refused("408") == before + 1
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200
