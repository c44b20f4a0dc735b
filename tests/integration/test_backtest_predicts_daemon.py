"""The backtest predicts the daemon: one recorded stream, replayed through a real broker into
the real daemon and through `backtest`, gives the same decisions (both wire their pipeline
through monitor.app.wiring, and both keep time by the records' event time).

Dead-letter rules are left out: the daemon judges the dead letters of whatever it has polled
since its last batch, so with a backlog (polls run ahead of batches) a burst is diluted by
messages whose records are still queued, where the backtest reads line by line. The stream
still carries dead letters, which must not change the other decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.acting.outbox import Outbox
from monitor.app.backtest import backtest
from monitor.config import load_offline_config
from monitor.local import traffic
from tests.support import committed, produce, wait_for, write_config

pytestmark = pytest.mark.broker

RULES = [
    {"name": "error-share", "severity": "critical", "event_type": "retrain.requested",
     "when": {"kind": "rate", "signal": "error", "above": 0.2, "window_records": 100,
              "min_records": 50}},
    {"name": "error-shift", "when": {"kind": "rate", "signal": "error",
                                     "above_reference_by": 0.15, "reference_records": 100,
                                     "ert": 1_000}},
    {"name": "slow", "when": {"kind": "latency", "quantile": 0.5, "above_seconds": 600,
                              "window_records": 100, "min_records": 50}},
]


def _stream() -> list[bytes]:
    """Clean, then an error burst, then clean again with one message in four unreadable."""
    start = traffic.FIXED_START_MS
    parts: list[bytes] = []
    for i, (n, errors) in enumerate([(300, 0.0), (400, 0.5), (500, 0.0)]):
        mix = traffic.TrafficMix(canary_share=0.0, error_rate=errors)
        records = list(traffic.wire_records(n, seed=90 + i, start_ms=start, mix=mix))
        start = max(r["timestamp"] for r in records) + 1_000  # type: ignore[operator]
        parts += [traffic.encode(r) for r in records]
    tail = len(parts) - 500
    for j in range(tail, len(parts), 4):
        parts[j] = b'{"request_id": "garbled'  # cut mid-message: a dead letter
    return parts


def _key(rule: str, event_type: str, status: str, segment: dict[str, str]
         ) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    return rule, event_type, status, tuple(sorted(segment.items()))


def test_the_backtest_of_a_stream_decides_what_the_daemon_decided_on_it(
        broker, names, daemons, port: int, tmp_path: Path) -> None:
    topic, group = names("predict"), names("group")
    broker.create_topics([(topic, 1)])  # one partition: the daemon sees the file's order
    payloads = _stream()
    outbox_path = tmp_path / "outbox.sqlite3"
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group}, metrics={"labels": ["model"]},
        rules=RULES, outbox={"path": str(outbox_path)},
    )
    events = list(backtest(payloads, load_offline_config(config)))
    assert sum(e["type"] == "dead_letter" for e in events) == 125
    predicted = [e for e in events if e["type"] != "dead_letter"]
    expected = sorted(_key(str(e["rule"]), str(e["type"]), str(e["status"]),
                           e["segment"]) for e in predicted)  # type: ignore[arg-type]
    # The stream exercises every kind of decision, so agreeing is not trivial.
    assert {(k[0], k[2]) for k in expected} >= {
        ("error-share", "firing"), ("error-share", "resolved"), ("error-shift", "firing"),
        ("error-shift", "resolved")}
    assert not any(k[0] == "slow" for k in expected)

    ends = produce(broker.bootstrap, topic, ((0, p, None) for p in payloads))
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 1) == ends, 120,
             "every record scored and committed")
    assert daemon.terminate() == 0
    box = Outbox(outbox_path)
    try:
        decided = sorted(_key(e.decision.rule, e.decision.event_type, e.decision.status,
                              e.decision.segment) for e in box.recent(1_000))
    finally:
        box.close()
    assert decided == expected
