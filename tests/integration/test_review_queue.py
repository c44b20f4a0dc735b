"""The review queue's Kafka side on a real broker: every sampled record's line reaches the
review topic, a long document's cut to fit, and a line the broker would refuse never makes
the batch run twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.app.review_io import LINE_BYTES
from monitor.local import traffic
from tests.support import committed, free_port, produce, read_topic, wait_for, write_config

pytestmark = pytest.mark.broker


def test_a_long_document_s_review_line_is_cut_to_fit_and_the_batch_runs_once(
        broker, names, daemons, tmp_path: Path) -> None:
    """Its line escaped 700,000 accented characters to 2.1 MB: the producer refused it, the
    batch was run again (every record sampled and fed to the detectors twice) and the line
    was lost."""
    topic, group, review = names("rv-in"), names("rv"), names("rv-review")
    broker.create_topics([(topic, 1), (review, 1)])
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
        review={"enabled": True, "topic": review, "store": str(tmp_path / "review.sqlite3"),
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
    assert daemon.terminate() == 0
