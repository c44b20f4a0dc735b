"""The review queue's Kafka side on a real broker: every sampled record's line reaches the
review topic, a long document's cut to fit, and a line the broker would refuse never makes
the batch run twice; every reviewer's label is stored, whatever came before it."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from prometheus_client import REGISTRY

from monitor.acting.review import ReviewStore
from monitor.app.review_io import LINE_BYTES, LabelReader, review_publisher
from monitor.config import Config
from monitor.local import traffic
from monitor.local.broker import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, LocalBroker
from tests.support import committed, free_port, produce, read_topic, wait_for, write_config

pytestmark = pytest.mark.broker


def test_a_long_document_s_review_line_is_cut_to_fit_and_the_batch_runs_once(
        broker, names, daemons, tmp_path: Path) -> None:
    """Its line escaped 700,000 accented characters to 2.1 MB: the producer refused it, the
    batch was run again (every record sampled and fed to the detectors twice) and the line
    was lost."""
    topic, group, review = names("rv-in"), names("rv"), names("rv-review")
    labels = names("rv-labels")
    broker.create_topics([(topic, 1), (review, 1), (labels, 1)])
    records = list(traffic.wire_records(40, seed=8, start_ms=traffic.FIXED_START_MS))
    long_id = str(records[10]["request_id"])
    records[10] = {**records[10], "context": ["é" * 350_000, "a" * 300_000],
                   "response": "The answer is é."}
    ends = produce(broker.bootstrap, topic, ((0, traffic.encode(r), None) for r in records))
    port = free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group},
        scorers=["latency", "status", "toxicity", "groundedness"],
        scoring={"max_batch_seconds": None},
        review={"enabled": True, "topic": review, "labels_topic": labels,
                "store": str(tmp_path / "review.sqlite3"),
                "uniform_rate": 1.0, "borderline_rate": 1.0, "max_per_hour": 100_000})
    daemon = daemons(config, port)
    daemon.wait_ready(90)
    wait_for(lambda: committed(broker.bootstrap, group, topic, 1) == ends, 120,
             "every record scored and committed")
    m = daemon.metrics()
    assert m.sum("driftwatch_records_total", outcome="scored") == 40
    assert sum(m.by("driftwatch_review_sampled_total", "reason").values()) == 40  # once each
    assert m.sum("driftwatch_review_write_failures_total") == 0
    lines = [json.loads(x.value) for x in read_topic(broker.bootstrap, review, 1, 40)]
    assert sorted(line["request_id"] for line in lines) == \
        sorted(str(r["request_id"]) for r in records)
    [cut] = [x for x in read_topic(broker.bootstrap, review, 1, 40)
             if json.loads(x.value)["request_id"] == long_id]
    line = json.loads(cut.value)
    assert len(cut.value) <= LINE_BYTES and line["cut"] is True
    assert line["context"][0].startswith("ééé") and 0 < len(line["context"][0]) < 350_000
    assert not any("cut" in x for x in lines if x["request_id"] != long_id)
    # With a labels reader the stop raised TypeError joining it (its `_stop` event hid
    # threading.Thread's `_stop()`), skipping the closers after it: the outbox among them.
    assert daemon.terminate() == 0


def test_every_label_is_stored_past_a_message_too_deep_and_a_store_that_fails_once(
        broker, names, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A label nested past msgspec's depth raised RecursionError, which the reader took for a
    failed poll and tried again forever, committing nothing; and a poll whose storing failed
    was not read again, the consumer's position already past it: its labels were lost."""
    topic, group = names("rv-labels"), names("rv-labels-group")
    broker.create_topics([(topic, 1)])
    store = ReviewStore(tmp_path / "review.sqlite3")
    store.add_sampled([(f"r{i}", ("m", "v1", "stable", ""), "other", True, ["uniform"],
                        {"toxic": 0}, 0.0) for i in range(3)], {})
    add_label, calls = store.add_label, []

    def fails_once(request_id: str, label: str, reviewer: str) -> str:
        calls.append(request_id)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return add_label(request_id, label, reviewer)

    monkeypatch.setattr(store, "add_label", fails_once)
    deep = b'{"request_id": "r1", "label": "toxic", "note": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    good = [json.dumps({"request_id": f"r{i}", "label": label, "reviewer": "ann"}).encode()
            for i, label in enumerate(("toxic", "ok", "toxic"))]
    invalid = REGISTRY.get_sample_value("driftwatch_review_labels_total",
                                        {"outcome": "invalid"}) or 0.0
    ends = produce(broker.bootstrap, topic,
                   ((0, v, None) for v in (good[0], deep, good[1], good[2])))
    config = Config.model_validate({
        "kafka": {"bootstrap_servers": [broker.bootstrap], "topic": names("in"),
                  "group_id": group},
        "review": {"enabled": True, "topic": names("rv"), "labels_topic": topic,
                   "store": str(tmp_path / "review.sqlite3")}})
    consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=SESSION_TIMEOUT_MS,
                             heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)
    stop = threading.Event()
    reader = LabelReader(config, store, stop, consumer=consumer)
    reader.start()
    try:
        wait_for(lambda: committed(broker.bootstrap, group, topic, 1) == ends, 120,
                 "every label read and committed")
    finally:
        stop.set()
        reader.join(30)
    assert not reader.is_alive()
    with sqlite3.connect(tmp_path / "review.sqlite3") as db:
        stored = sorted(db.execute("SELECT request_id, flag, truth, reviewer FROM labels"))
    store.close()
    assert stored == [("r0", "toxic", 1, "ann"), ("r1", "toxic", 0, "ann"),
                      ("r2", "toxic", 1, "ann")]
    assert calls == ["r0", "r0", "r1", "r2"]  # the failed poll read again from its start
    assert REGISTRY.get_sample_value("driftwatch_review_labels_total",
                                     {"outcome": "invalid"}) == invalid + 1


def test_a_review_topic_the_broker_cannot_serve_costs_a_batch_one_wait_not_one_per_line(
        names, tmp_path: Path) -> None:
    """No metadata for the topic (a cluster that does not create topics, or one gone): each
    line's send waited the producer's default 60 s, so a batch stalled a minute a line."""
    gone = LocalBroker(log_file=tmp_path / "tansu.log").start()
    try:
        config = Config.model_validate({
            "kafka": {"bootstrap_servers": [gone.bootstrap], "topic": names("in"),
                      "group_id": names("g")},
            "review": {"enabled": True, "topic": names("rv-nowhere"),
                       "store": str(tmp_path / "review.sqlite3")}})
        publish, close = review_publisher(config)
    finally:
        gone.stop()
    failures = REGISTRY.get_sample_value("driftwatch_review_write_failures_total",
                                         {"sink": "topic"}) or 0.0
    lines: list[dict[str, object]] = [{"request_id": f"r{i}", "prompt": "p"} for i in range(5)]
    done = threading.Event()
    threading.Thread(target=lambda: (publish(lines), done.set()), daemon=True).start()
    assert done.wait(120), "publish still waiting: a wait per line"
    close()
    assert REGISTRY.get_sample_value("driftwatch_review_write_failures_total",
                                     {"sink": "topic"}) == failures + 5
