"""The daemon acting on what it finds, against a real broker, a real webhook receiver and the
real CLI: decisions survive kill -9 and are delivered signed; rollover is explicit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.acting.outbox import Outbox
from monitor.local import traffic
from monitor.local.broker import free_port
from monitor.local.receiver import WebhookReceiver as Receiver
from monitor.pipeline.drift import warmup_name
from monitor.pipeline.reference import ReferenceStore
from tests.conftest import SECRET
from tests.support import committed, produce, wait_for, write_config

pytestmark = pytest.mark.broker


def _records(n: int, seed: int, error_rate: float) -> list[bytes]:
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=error_rate)
    records = traffic.wire_records(n, seed=seed, start_ms=traffic.FIXED_START_MS, mix=mix)
    return [traffic.encode(r) for r in records]


def test_a_decision_survives_kill_9_and_is_delivered_signed_after_restart(
        broker, names, daemons, receiver: Receiver, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topic, group = names("acting"), names("group")
    broker.create_topics([(topic, 2)])
    monkeypatch.setenv("DW_TEST_HOOK_SECRET", SECRET)
    receiver.script = [(503, {})] * 10_000  # down for the whole first run
    payloads = _records(600, seed=71, error_rate=0.5)
    ends = produce(broker.bootstrap, topic, ((i % 2, p, None) for i, p in enumerate(payloads)))
    outbox_path = tmp_path / "outbox.sqlite3"
    port = free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group}, metrics={"labels": ["deployment"]},
        actions={"retrain": {"type": "webhook", "url": receiver.url,
                             "secret_env": "DW_TEST_HOOK_SECRET"}},
        rules=[{"name": "error-share", "severity": "critical", "cooldown_seconds": 3_600,
                "event_type": "retrain.requested", "actions": ["retrain"],
                "when": {"kind": "rate", "signal": "error", "above": 0.2,
                         "window_records": 200, "min_records": 100}}],
        outbox={"path": str(outbox_path), "backoff_initial_seconds": 0.2,
                "backoff_max_seconds": 1.0},
    )
    first = daemons(config, port)
    first.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 60,
             "every record scored and committed")
    wait_for(lambda: len(receiver.received) >= 2, 30, "failed delivery attempts")
    m = first.metrics()
    assert m.sum("driftwatch_rule_firing", rule="error-share", deployment="stable") == 1
    assert m.sum("driftwatch_outbox_depth", action="retrain") == 1
    first.kill()  # kill -9: the decision is only in the outbox

    box = Outbox(outbox_path)
    [event] = box.recent(10)  # the condition held all along: one action per cooldown
    box.close()
    assert event.decision.event_type == "retrain.requested"
    assert event.decision.segment == {"deployment": "stable"}
    assert event.decision.evidence["rate"] > 0.2
    assert [d.state for d in event.deliveries] == ["pending"]
    failed = len(receiver.received)

    receiver.script.clear()  # the receiver is back
    second = daemons(config, port)
    wait_for(lambda: len(receiver.received) > failed, 60, "the delivery after the restart")
    second.wait_ready()
    wait_for(lambda: second.metrics().sum("driftwatch_outbox_depth", action="retrain") == 0,
             30, "the outbox to drain")
    for d in (first, second):  # the signing secret never reaches the log
        assert SECRET not in d.log.read_text()
        assert SECRET.removeprefix("whsec_") not in d.log.read_text()
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {event.id}  # every retry, before and after the restart, carries one id
    assert all(r.verified for r in receiver.received)
    body = receiver.received[-1].body
    assert b'"type":"retrain.requested"' in body.replace(b" ", b"")
    assert second.metrics().sum("driftwatch_outbox_deliveries_total", action="retrain",
                                outcome="delivered") == 1
    box = Outbox(outbox_path)
    [event] = box.recent(10)
    box.close()
    assert [(d.state, d.attempts) for d in event.deliveries] == [("delivered", failed + 1)]
    assert second.terminate() == 0


def test_rollover_is_explicit_logged_saved_and_kept_after_a_restart(
        broker, names, daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topic, group = names("rollover"), names("group")
    broker.create_topics([(topic, 1)])
    store = tmp_path / "refs"
    port = free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group}, metrics={"labels": ["deployment"]},
        batch={"max_records": 64}, scorers=["latency", "sanity"],
        drift={"enabled": True, "reference": {"warmup_records": 100, "store": str(store)},
               "embedding": {"ert": 200, "window_size": 20, "n_features": 32,
                             "n_bootstraps": 400}},
    )
    daemon = daemons(config, port)
    daemon.wait_ready(timeout_s=120)
    first_records = _records(250, 72, 0.0)
    produce(broker.bootstrap, topic, ((0, p, None) for p in first_records))
    wait_for(lambda: daemon.metrics().sum("driftwatch_records_total", outcome="scored") == 250,
             120, "the first records scored")
    cli = [sys.executable, "-m", "monitor.cli", "reference", "rollover",
           "--url", f"http://127.0.0.1:{port}"]
    refused = subprocess.run([*cli, "--segment", "colour=blue"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "unknown segment labels ['colour']" in refused.stdout
    done = subprocess.run([*cli, "--segment", "deployment=stable"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"rollover": "requested"' in done.stdout
    produce(broker.bootstrap, topic, ((0, p, None) for p in _records(20, 73, 0.0)))
    wait_for(lambda: daemon.metrics().sum("driftwatch_drift_reference_rollovers_total",
                                          deployment="stable") == 1, 60, "the rollover")
    name = warmup_name("default", ("", "", "stable", ""), "rollover")
    assert ReferenceStore(store).versions(name) == [1]
    saved = ReferenceStore(store).load(name)
    assert saved.meta.records == 100 and saved.meta.source.startswith("rollover:admin endpoint")
    assert daemon.terminate() == 0
    log = daemon.log.read_text()
    assert "rolled over to its last 100 records (admin endpoint, saved as v1)" in log
    # At INFO the log names records by request id only: no prompt or response text.
    for payload in first_records:
        record = json.loads(payload)
        prompt = record.get("prompt") or ""
        if not isinstance(prompt, str):
            prompt = "\n".join(m["content"] for m in prompt)
        texts = [record.get("response") or "", prompt]
        assert not [t for t in texts if len(t) >= 20 and t[:60] in log], record["request_id"]

    # Without a checkpoint (lost, or another instance's segment) the saved rollover arms it.
    monkeypatch.setenv("DRIFTWATCH_CHECKPOINT__ENABLED", "false")
    again = daemons(config, port)
    again.wait_ready(timeout_s=120)
    produce(broker.bootstrap, topic, ((0, p, None) for p in _records(10, 74, 0.0)))
    wait_for(lambda: again.metrics().sum("driftwatch_drift_reference_records",
                                         deployment="stable") == 100, 60,
             "the segment armed from its saved rollover")
    assert again.terminate() == 0
    assert f"reusing the rollover reference of segment ('', '', 'stable', '') ({name} v1)" \
        in again.log.read_text()
