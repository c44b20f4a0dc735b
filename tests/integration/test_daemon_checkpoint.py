"""Checkpoints through the real daemon and broker: a rule's window outlives SIGTERM, and after
kill -9 the records read again are counted without being applied to the state twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.acting.outbox import Outbox
from monitor.local import traffic
from monitor.local.broker import free_port
from monitor.pipeline.checkpoint import read
from tests.support import committed, produce, wait_for, write_config

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


def _records(n: int, seed: int, error_rate: float) -> list[bytes]:
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=error_rate)
    records = traffic.wire_records(n, seed=seed, start_ms=traffic.FIXED_START_MS, mix=mix)
    return [traffic.encode(r) for r in records]


def _firing(outbox: Path) -> list[tuple[str, float]]:
    box = Outbox(outbox)
    try:
        return [(e.decision.status, e.decision.evidence["records"]) for e in box.recent(100)]
    finally:
        box.close()


def test_rule_state_survives_sigterm_and_kill_9(broker, names, daemons, tmp_path: Path) -> None:
    topic, group = names("ckpt"), names("group")
    broker.create_topics([(topic, 1)])
    outbox, port = tmp_path / "outbox.sqlite3", free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group, "commit_interval_ms": 60_000},
        batch={"max_records": 25}, metrics={"labels": ["deployment"]},
        # 400 records before it may fire: more than either run below sees alone.
        rules=[{"name": "errors", "cooldown_seconds": 3_600,
                "when": {"kind": "rate", "signal": "error", "above": 0.5,
                         "window_records": 400, "min_records": 400}}],
        outbox={"path": str(outbox)},
        checkpoint={"interval_seconds": 0.2},
    )
    ends = produce(broker.bootstrap, topic, ((0, p, None) for p in _records(300, 1, 1.0)))
    first = daemons(config, port)
    first.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 1) == ends or
             first.metrics().sum("driftwatch_records_total") >= 300, 60, "300 records scored")
    assert first.terminate() == 0  # commits and writes the last checkpoint
    assert committed(broker.bootstrap, group, topic, 1) == ends
    assert _firing(outbox) == []  # 300 of the 400 records the window needs

    ends = produce(broker.bootstrap, topic, ((0, p, None) for p in _records(150, 2, 1.0)))
    second = daemons(config, port)
    second.wait_ready()
    wait_for(lambda: second.metrics().sum("driftwatch_records_total") >= 150, 60,
             "the next 150 records scored")
    # The window resumed at 300 records, so it fired at the 400th, 100 records into this run.
    assert _firing(outbox) == [("firing", 400.0)]
    assert "resuming from the checkpoint" in second.log.read_text()
    wait_for(lambda: read(tmp_path / "dw.checkpoint").positions == {(topic, 0): 450}, 10,
             "a checkpoint holding all 450 records")
    # Commits are a minute apart here: the 150 records are checkpointed but not committed.
    assert committed(broker.bootstrap, group, topic, 1) != ends
    second.kill()

    third = daemons(config, port)
    third.wait_ready()
    wait_for(lambda: third.metrics().sum("driftwatch_records_total") >= 150, 60,
             "the uncommitted records read again")
    m = third.metrics()
    assert m.sum("driftwatch_checkpoint_replayed_records_total") == 150
    assert m.sum("driftwatch_records_total", outcome="scored") == 150  # counted again
    assert _firing(outbox) == [("firing", 400.0)]  # restored as firing: nothing new decided
    assert third.terminate() == 0
    assert committed(broker.bootstrap, group, topic, 1) == ends
