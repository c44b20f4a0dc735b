"""A real Prometheus scrapes the real daemon's /metrics; promtool checks the exposition."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.local import traffic
from monitor.local.broker import free_port, free_ports
from monitor.local.prometheus import LocalPrometheus
from tests.support import produce, wait_for, write_config

pytestmark = pytest.mark.broker


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: `make test` installs the Debian package prometheus")
    return path


def _scalar(prometheus: LocalPrometheus, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator:
    started: list[LocalPrometheus] = []

    def start(port: int) -> LocalPrometheus:
        started.append(LocalPrometheus([f"127.0.0.1:{port}"], tmp_path))
        return started[-1]

    yield start
    for p in started:
        p.stop()


def test_prometheus_scrapes_counts_and_promtool_accepts_the_exposition(
    broker, names, daemons, prometheus_for, tmp_path: Path
) -> None:
    topic, dlq, group = names("traffic"), names("dlq"), names("group")
    broker.create_topics([(topic, 2), (dlq, 1)])
    records = list(traffic.wire_records(1_000, seed=5, start_ms=traffic.FIXED_START_MS))
    bad = traffic.malformed_payloads(12, seed=5)
    produce(broker.bootstrap, topic,
            [(i % 2, traffic.encode(r), None) for i, r in enumerate(records)]
            + [(0, payload, None) for payload, _ in bad])
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq})
    daemon = daemons(config, port)
    daemon.wait_ready()
    prometheus = prometheus_for(port)

    def scraped_all() -> bool:
        return _scalar(prometheus, 'sum(driftwatch_records_total{outcome="scored"})') == 1_000
    wait_for(scraped_all, 60, "Prometheus to see every scored record")

    assert _scalar(prometheus, "sum(driftwatch_dead_letter_total)") == 12
    assert _scalar(prometheus, 'up{job="driftwatch"}') == 1
    assert _scalar(prometheus, "driftwatch_ready") == 1
    assert _scalar(prometheus, "driftwatch_assigned_partitions") == 2
    segments = {(r.get("model"), r.get("model_version"), r.get("deployment")) for r in records}
    assert 3 <= len(segments) < 500
    assert _scalar(prometheus, "driftwatch_segments") == len(segments)
    stable = sum(1 for r in records if r["deployment"] == "stable" and "latency_ms" in r)
    assert _scalar(prometheus,
        'sum(driftwatch_request_latency_seconds_count{deployment="stable"})') == stable
    p99 = _scalar(prometheus,
        "histogram_quantile(0.99, sum by (le) (driftwatch_request_latency_seconds_bucket))")
    assert p99 is not None and 0.1 < p99 <= 120
    # Empty segment labels (route is not configured) are dropped by Prometheus on ingestion.
    series = prometheus.query('driftwatch_records_total{outcome="scored"}')
    assert series and all("route" not in s["metric"] for s in series)

    exposition = daemon.get("/metrics").text
    check = subprocess.run([_tool("promtool"), "check", "metrics"], input=exposition,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", (
        check.stdout + check.stderr)
    assert daemon.terminate() == 0


def test_health_endpoints_answer_json(broker, names, daemons, tmp_path: Path) -> None:
    topic, group = names("traffic"), names("group")
    broker.create_topics([(topic, 1)])
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group})
    daemon = daemons(config, port)
    daemon.wait_ready()
    assert daemon.get("/healthz").json()["ok"] is True
    ready = daemon.get("/readyz").json()
    assert ready == {"ok": True, "broker_connected": True, "partitions": 1}
    assert daemon.get("/nope").status_code == 404
    # The terminal it was started from closing is a stop like SIGTERM's, not a sudden death.
    daemon.process.send_signal(signal.SIGHUP)
    assert daemon.process.wait(timeout=30) == 0
    log = daemon.log.read_text()
    assert "SIGHUP received: finishing the batch in hand, committing, exiting" in log
    assert "stopped: every record read was finished and its offset committed" in log


def test_a_member_with_no_partition_to_own_is_a_ready_standby(
        broker, names, daemons, tmp_path: Path) -> None:
    """More members than partitions (`--workers auto` on more cores than the input has
    partitions, a spare decider): the spare one is serving, so it is ready (an orchestrator's
    rollout waits for it, and DriftwatchNotReady pages), and takes over when the owner goes."""
    topic, group = names("traffic"), names("group")
    broker.create_topics([(topic, 1)])
    first = free_ports(2)
    members = [daemons(write_config(tmp_path / f"dw{i}.yaml", broker.bootstrap, first + i,
                                    kafka={"topic": topic, "group_id": group}), first + i)
               for i in range(2)]
    for member in members:
        member.wait_ready()

    def owned() -> list[int]:
        return sorted(m.get("/readyz").json()["partitions"] for m in members)
    wait_for(lambda: owned() == [0, 1], 60, "one member to own the partition")
    standby, owner = sorted(members, key=lambda m: m.get("/readyz").json()["partitions"])
    ready = standby.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ok": True, "broker_connected": True, "partitions": 0,
                            "standby": True}
    assert owner.get("/readyz").json() == {"ok": True, "broker_connected": True,
                                            "partitions": 1}
    assert [m.metrics().sum("driftwatch_ready") for m in members] == [1.0, 1.0]
    assert owner.terminate() == 0
    wait_for(lambda: standby.get("/readyz").json() == {
        "ok": True, "broker_connected": True, "partitions": 1}, 60,
        "the standby to take the partition over")
    assert standby.terminate() == 0


def test_not_ready_but_serving_while_the_broker_is_unreachable(daemons, tmp_path: Path) -> None:
    started = time.time()
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", f"127.0.0.1:{free_port()}", port,
                          kafka={"topic": "nowhere", "group_id": "g"})
    daemon = daemons(config, port)

    def answering() -> bool:
        daemon.check_alive()
        try:
            return daemon.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(answering, 120, "the endpoints to answer")
    ready = daemon.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["broker_connected"] is False
    exposition = daemon.get("/metrics").text
    assert "driftwatch_ready 0.0" in exposition
    # No batch yet: "processed nothing since" counts from the process's start, not from 1970
    # (the stall alert's age would read 56 years).
    last = re.search(r"^driftwatch_last_processed_timestamp_seconds (\S+)$", exposition, re.M)
    assert last, exposition
    assert started <= float(last.group(1)) <= time.time()
    wait_for(lambda: "cannot reach Kafka" in daemon.log.read_text(), 60,
             "the daemon to say what it is waiting for")
    assert daemon.get("/readyz").status_code == 503
    assert daemon.terminate(timeout_s=10) == 0


def test_a_port_taken_before_prometheus_binds_it_is_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import monitor.local.prometheus as local_prometheus

    with socket.socket() as other:  # another process's listener gets there first
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(local_prometheus, "free_port", lambda: next(ports))
        prometheus = LocalPrometheus(["127.0.0.1:1"], tmp_path)
        try:
            assert prometheus.port != taken
            assert prometheus.query("vector(1)")[0]["value"][1] == "1"
        finally:
            prometheus.stop()
    assert "address already in use" in (tmp_path / "prometheus.log").read_text()
