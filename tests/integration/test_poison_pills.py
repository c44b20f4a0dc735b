"""One bad message, one broken clock or one stop under load never stops the monitor: against
a real broker, the daemon as a process and a real webhook receiver."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.local import traffic
from monitor.local.broker import LocalBroker, free_port
from monitor.local.receiver import WebhookReceiver as Receiver
from tests.conftest import SECRET
from tests.support import committed, produce, read_topic, wait_for, write_config

pytestmark = pytest.mark.broker

HUGE = b"{" + b" " * 1_500_000 + b"}"  # over max_message_bytes: dead-lettered as oversized
NEAR = b"x" * 1_048_402  # under max_message_bytes, but headers push the letter over 1 MiB


def _records(n: int, seed: int, error_rate: float = 0.0) -> list[dict]:
    mix = traffic.TrafficMix(canary_share=0.0, error_rate=error_rate)
    return list(traffic.wire_records(n, seed=seed, start_ms=traffic.FIXED_START_MS, mix=mix))


def _headers(letter) -> dict[str, str]:
    return {k: v.decode() for k, v in letter.headers}


def test_dead_letters_over_the_size_limit_are_written_as_a_prefix_and_nothing_stops(
        broker, names, daemons, port: int, tmp_path: Path) -> None:
    topic, dlq, group = names("pills"), names("pills-dlq"), names("group")
    broker.create_topics([(topic, 2), (dlq, 1)])
    valid = [traffic.encode(r) for r in _records(300, seed=3)]
    messages = [(0, HUGE, b"k1"), (1, NEAR, None)] + [(i % 2, v, None)
                                                       for i, v in enumerate(valid)]
    ends = produce(broker.bootstrap, topic, messages, max_request_size=4 << 20)
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq})
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 60,
             "every offset committed, the two poison pills included")
    daemon.check_alive()
    m = daemon.metrics()
    assert m.sum("driftwatch_records_total", outcome="scored") == 300
    assert m.sum("driftwatch_dead_letter_truncated_total") == 2
    assert m.sum("driftwatch_partitions_stalled") == 0
    letters = {_headers(x)["reason"]: x for x in read_topic(broker.bootstrap, dlq, 1, 2)}
    assert set(letters) == {"oversized", "not_json"}
    for reason, original in (("oversized", HUGE), ("not_json", NEAR)):
        letter, headers = letters[reason], _headers(letters[reason])
        assert headers["truncated"] == "true"
        assert headers["original_value_bytes"] == str(len(original))
        assert headers["original_value_sha256"] == hashlib.sha256(original).hexdigest()
        assert 0 < len(letter.value) < 1_000_000 and original.startswith(letter.value)
    assert letters["oversized"].key == b"k1"
    assert daemon.terminate() == 0


def test_a_timestamp_past_year_9999_is_dead_lettered_and_every_webhook_still_goes(
        broker, names, daemons, port: int, receiver: Receiver, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topic, dlq, group = names("clock"), names("clock-dlq"), names("group")
    broker.create_topics([(topic, 1), (dlq, 1)])
    monkeypatch.setenv("DW_TEST_HOOK_SECRET", SECRET)
    records = _records(400, seed=5, error_rate=0.5)
    for i, stamp in ((150, "9999-12-31T23:59:59.999999-12:00"), (151, "9999-12-31T23:59:59Z"),
                     (152, 253_402_300_800_000)):
        records[i] = {**records[i], "timestamp": stamp}
    ends = produce(broker.bootstrap, topic, ((0, traffic.encode(r), None) for r in records))
    outbox = tmp_path / "outbox.sqlite3"
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq},
        metrics={"labels": ["deployment"]},
        actions={"hook": {"type": "webhook", "url": receiver.url,
                          "secret_env": "DW_TEST_HOOK_SECRET"}},
        # Two rules on one segment: both must fire and be delivered.
        rules=[{"name": f"errors-{n}", "cooldown_seconds": 3_600, "actions": ["hook"],
                "when": {"kind": "rate", "signal": "error", "above": 0.2,
                         "window_records": 100, "min_records": 50}} for n in (1, 2)],
        outbox={"path": str(outbox), "backoff_initial_seconds": 0.2},
    )
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 1) == ends, 60, "all committed")
    wait_for(lambda: len(receiver.received) >= 2, 30, "both rules' webhooks")
    wait_for(lambda: daemon.metrics().sum("driftwatch_outbox_depth") == 0, 30, "a drained outbox")
    letters = read_topic(broker.bootstrap, dlq, 1, 3)
    assert [(_headers(x)["reason"], "$.timestamp" in _headers(x)["detail"]) for x in letters] \
        == [("invalid_field", True)] * 3
    assert all(r.verified for r in receiver.received)
    body = json.loads(receiver.received[0].body)
    assert body["data"]["at"] < "2100"  # dated by a sane clock
    events = subprocess.run([sys.executable, "-m", "monitor.cli", "events", "--outbox",
                             str(outbox), "--json"], capture_output=True, text=True, timeout=60)
    assert events.returncode == 0, events.stderr
    assert len(events.stdout.splitlines()) == 2
    assert daemon.terminate() == 0


def test_sigterm_mid_batch_under_load_exits_0_and_says_what_was_committed(
        broker, names, daemons, port: int, tmp_path: Path) -> None:
    topic, group = names("stop"), names("group")
    broker.create_topics([(topic, 2)])
    ends = produce(broker.bootstrap, topic, ((i % 2, traffic.encode(r), None)
                                             for i, r in enumerate(_records(1_500, seed=9))))
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        # A 1 s drain: the batches in hand cannot all finish, whatever the machine's speed.
        kafka={"topic": topic, "group_id": group},
        batch={"max_records": 128, "drain_seconds": 1},
        scorers=["latency", "toxicity", "sanity"], drift={"enabled": False},
        # No time bound: only cancellation ends the batches in hand quickly.
        scoring={"max_batch_seconds": None, "overload": {"max_lag": 100_000}})
    daemon = daemons(config, port)
    daemon.wait_ready(120)
    wait_for(lambda: daemon.metrics().sum("driftwatch_model_scored_records_total") > 0, 120,
             "the first model-scored batch")
    stopped = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    rc = daemon.process.wait(timeout=60)
    took = time.monotonic() - stopped
    log = daemon.log.read_text()
    assert rc == 0, log[-3000:]
    assert took < 20, f"took {took:.0f}s to stop"
    assert "terminate called" not in log and "poll timeout has expired" not in log.lower()
    assert "stopped: " in log and "read again on restart" in log
    done = committed(broker.bootstrap, group, topic, 2)
    assert all((done[p] or 0) < ends[p] for p in ends)  # the backlog was not all committed


def test_a_frozen_broker_turns_readiness_off_within_seconds_and_a_stop_says_what_failed(
        names, tmp_path: Path) -> None:
    from tests.support import Daemon

    topic, group, port = names("frozen"), names("group"), free_port()
    with LocalBroker(log_file=tmp_path / "tansu.log") as broker:
        broker.create_topics([(topic, 1)])
        produce(broker.bootstrap, topic, ((0, traffic.encode(r), None)
                                          for r in _records(200, seed=11)))
        # Commits rarely, so the scored records are still uncommitted when the broker freezes.
        config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                              kafka={"topic": topic, "group_id": group,
                                     "commit_interval_ms": 60_000})
        daemon = Daemon(config, port, tmp_path / "daemon.log")
        try:
            daemon.wait_ready(60)
            wait_for(lambda: daemon.metrics().sum("driftwatch_records_total",
                                                  outcome="scored") == 200, 60, "scoring")
            broker.freeze()
            frozen = time.monotonic()
            try:
                wait_for(lambda: daemon.get("/readyz").status_code == 503, 30,
                         "/readyz to say not ready")
                not_ready_after = time.monotonic() - frozen
                assert daemon.get("/healthz").status_code == 200
                stopped = time.monotonic()
                rc = daemon.terminate(timeout_s=60)
                took = time.monotonic() - stopped
            finally:
                broker.thaw()
        finally:
            daemon.kill()
    log = daemon.log.read_text()
    assert not_ready_after < 10, f"ready for {not_ready_after:.0f}s of a frozen broker"
    assert rc == 0 and took < 30, (rc, took)
    assert "the final offset commit failed" in log and "read again on restart" in log
    assert "offsets committed" not in log.split("stopped: ")[-1]
