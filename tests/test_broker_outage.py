"""A broker outage mid-stream: the daemon keeps serving /metrics, reports not ready, reconnects
by itself when the broker is back, and scores what arrives then. Tansu runs memory-only here,
so the restarted broker is empty: the test creates the topic again and produces the second
half of the traffic after the restart (offsets of the first half are gone with it)."""

from __future__ import annotations

import time

import pytest

from monitor import traffic
from monitor.local_broker import LocalBroker, free_port
from tests.support import Daemon, produce, wait_for, write_config

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def _payloads(n: int, seed: int) -> list[bytes]:
    return [traffic.encode(r) for r in traffic.wire_records(n, seed=seed, start_ms=0)]


def test_the_daemon_rides_out_a_30_second_broker_outage(tmp_path) -> None:
    broker_port, port = free_port(), free_port()
    topic = "outage"
    first = LocalBroker(port=broker_port, log_file=tmp_path / "tansu-1.log").__enter__()
    try:
        first.create_topics([(topic, 2)])
        produce(first.bootstrap, topic, ((i % 2, p, None) for i, p in
                                         enumerate(_payloads(500, 101))))
        config = write_config(tmp_path / "dw.yaml", first.bootstrap, port,
                              kafka={"topic": topic, "group_id": "outage"})
        daemon = Daemon(config, port, tmp_path / "daemon.log")
        daemon.wait_ready(60)
        wait_for(lambda: daemon.metrics().sum("driftwatch_records_total",
                                              outcome="scored") == 500, 60, "the first half")
    finally:
        first.__exit__(None, None, None)
    try:
        # 30 s without a broker: /metrics keeps answering, readiness says no.
        down_until = time.monotonic() + 30
        not_ready_seen = 0
        while time.monotonic() < down_until:
            daemon.check_alive()
            assert daemon.get("/metrics").status_code == 200
            assert daemon.get("/healthz").status_code == 200
            not_ready_seen += daemon.get("/readyz").status_code == 503
            time.sleep(1)
        assert not_ready_seen >= 20  # not ready for (nearly) the whole outage
        assert daemon.metrics().sum("driftwatch_ready") == 0

        with LocalBroker(port=broker_port, log_file=tmp_path / "tansu-2.log") as second:
            second.create_topics([(topic, 2)])
            produce(second.bootstrap, topic, ((i % 2, p, None) for i, p in
                                              enumerate(_payloads(300, 102))))
            wait_for(daemon.ready, 90, "the daemon to be ready again")
            wait_for(lambda: daemon.metrics().sum("driftwatch_records_total",
                                                  outcome="scored") == 800, 90,
                     "the records produced after the restart")
            assert daemon.terminate() == 0
    finally:
        daemon.kill()
