"""The daemon against a real Tansu broker: counts, dead letters, commits, restart, SIGTERM."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from monitor.local import traffic
from monitor.local.broker import free_port
from tests.support import committed, produce, read_topic, wait_for, write_config

pytestmark = pytest.mark.broker
PARTITIONS = 3


def _interleaved(valid: list[bytes], invalid: list[bytes], seed: int) -> list[bytes]:
    out = valid + invalid
    random.Random(seed).shuffle(out)
    return out


def test_valid_records_counted_invalid_dead_lettered_offsets_committed(
    broker, names, daemons, tmp_path: Path
) -> None:
    topic, dlq, group = names("traffic"), names("dlq"), names("group")
    broker.create_topics([(topic, PARTITIONS), (dlq, 1)])
    n_valid, n_invalid = 3_000, 60
    valid = [traffic.encode(r) for r in traffic.wire_records(n_valid, seed=1,
                                                             start_ms=traffic.FIXED_START_MS)]
    bad = traffic.malformed_payloads(n_invalid, seed=1)
    expected_reason = {payload: reason for payload, reason in bad}
    payloads = _interleaved(valid, [p for p, _ in bad], seed=1)
    ends = produce(broker.bootstrap, topic, ((i % PARTITIONS, v, None)
                                             for i, v in enumerate(payloads)))
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq})
    daemon = daemons(config, port)
    daemon.wait_ready()

    def all_counted() -> bool:
        m = daemon.metrics()
        return (m.sum("driftwatch_records_total", outcome="scored") == n_valid
                and m.sum("driftwatch_dead_letter_total") == n_invalid)

    wait_for(all_counted, 60, "every record to be scored or dead-lettered")
    wait_for(lambda: committed(broker.bootstrap, group, topic, PARTITIONS) == ends, 20,
             "committed offsets to reach the end offsets")

    m = daemon.metrics()
    assert m.sum("driftwatch_messages_consumed_total", topic=topic) == n_valid + n_invalid
    assert m.by("driftwatch_dead_letter_total", "reason") == Counter(r for _, r in bad)
    assert m.sum("driftwatch_request_latency_seconds_count") == sum(
        1 for v in valid if json.loads(v).get("latency_ms") is not None)

    letters = read_topic(broker.bootstrap, dlq, 1, n_invalid)
    assert len(letters) == n_invalid
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["reason"] == expected_reason[letter.value or b""]
        assert headers["original_topic"] == topic
        assert int(headers["original_partition"]) in range(PARTITIONS)
        assert headers["detail"]
    assert daemon.terminate() == 0

    # Same group again: everything is committed, so nothing is read a second time.
    again = daemons(config, port)
    again.wait_ready()
    time.sleep(3)
    m = again.metrics()
    assert m.sum("driftwatch_messages_consumed_total") == 0
    assert m.sum("driftwatch_records_total") == 0
    assert again.terminate() == 0


def test_split_topics_join_out_of_order_and_unmatched_halves_dead_lettered(
    broker, names, daemons, tmp_path: Path
) -> None:
    req_topic, resp_topic, dlq, group = (names("req"), names("resp"), names("dlq"),
                                         names("group"))
    broker.create_topics([(req_topic, 2), (resp_topic, 2), (dlq, 1)])
    records = list(traffic.wire_records(500, seed=2, start_ms=traffic.FIXED_START_MS))
    halves = [traffic.split_request_response(r) for r in records]
    no_response = {r["request_id"] for r in records[:40]}
    no_request = {r["request_id"] for r in records[40:70]}
    messages: list[tuple[str, dict]] = []
    for request, response in halves:
        if request["request_id"] not in no_request:
            messages.append((req_topic, request))
        if response["request_id"] not in no_response:
            messages.append((resp_topic, response))
    random.Random(2).shuffle(messages)  # responses often arrive before their requests

    def partition(rid: str) -> int:
        return int(rid.rsplit("-", 1)[1]) % 2

    for t in (req_topic, resp_topic):
        produce(broker.bootstrap, t, ((partition(h["request_id"]), traffic.encode(h),
                                       h["request_id"].encode()) for tt, h in messages if tt == t))
    port = free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"request_topic": req_topic, "response_topic": resp_topic, "group_id": group,
               "dead_letter_topic": dlq},
        join={"window_seconds": 2, "unmatched": "dead_letter"},
    )
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: daemon.metrics().sum("driftwatch_dead_letter_total") == 70, 60,
             "unmatched halves to be dead-lettered")
    time.sleep(1)  # nothing more may arrive
    m = daemon.metrics()
    assert m.sum("driftwatch_records_total", outcome="scored") == 430
    assert m.by("driftwatch_dead_letter_total", "reason") == {
        "unmatched_request": 40, "unmatched_response": 30}
    assert m.sum("driftwatch_join_unmatched_total", side="request") == 40
    assert m.sum("driftwatch_join_unmatched_total", side="response") == 30
    # A joined record carries fields from both halves: latency only exists on responses.
    assert m.sum("driftwatch_request_latency_seconds_count",
                 model="assistant-small") + m.sum("driftwatch_request_latency_seconds_count",
                                                  model="assistant-large") == 430
    letters = read_topic(broker.bootstrap, dlq, 1, 70)
    by_reason: dict[str, set[str]] = {}
    for letter in letters:
        reason = dict(letter.headers)["reason"].decode()
        by_reason.setdefault(reason, set()).add(json.loads(letter.value)["request_id"])
    assert by_reason == {"unmatched_request": no_response, "unmatched_response": no_request}
    assert daemon.terminate() == 0


def _audited(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def test_sigterm_mid_stream_then_restart_skips_nothing(
    broker, names, daemons, tmp_path: Path
) -> None:
    topic, dlq, group = names("traffic"), names("dlq"), names("group")
    broker.create_topics([(topic, 2), (dlq, 1)])
    total = 30_000
    records = list(traffic.wire_records(total, seed=3, start_ms=traffic.FIXED_START_MS))
    ends = produce(broker.bootstrap, topic,
                   ((i % 2, traffic.encode(r), None) for i, r in enumerate(records)))
    audit = tmp_path / "audit.jsonl"
    port = free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq,
               "max_poll_records": 200},
        batch={"max_records": 20, "max_in_flight": 1}, audit_log=str(audit),
    )
    first = daemons(config, port)
    first.wait_ready()
    wait_for(lambda: first.metrics().sum("driftwatch_records_total") >= 2_000, 60,
             "the first run to be mid-stream")
    assert first.terminate(timeout_s=20) == 0
    seen_first = _audited(audit)
    assert 0 < len(seen_first) < total, "SIGTERM should land mid-stream"
    assert "stopped: every record read was finished and its offset committed" \
        in first.log.read_text()

    second = daemons(config, port)
    second.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 120,
             "the second run to commit to the end")
    assert second.terminate() == 0
    seen = _audited(audit)
    expected = {r["request_id"] for r in records}
    assert set(seen) == expected  # none skipped
    assert len(seen) >= total  # at least once; a replay after SIGTERM is at most the uncommitted
    assert len(seen) - total <= 2 * 200


def test_rebalance_commits_what_is_done_and_drops_what_moved(broker, names, caplog) -> None:
    import logging
    import threading

    from kafka import KafkaConsumer

    from consumers.processor import StreamProcessor
    from consumers.settings import BatchSettings, KafkaSettings
    from consumers.source import KafkaSource

    topic, dlq, group = names("traffic"), names("dlq"), names("group")
    broker.create_topics([(topic, 4), (dlq, 1)])
    records = traffic.wire_records(4_000, seed=9, start_ms=traffic.FIXED_START_MS)
    produce(broker.bootstrap, topic,
            ((i % 4, traffic.encode(r), None) for i, r in enumerate(records)))
    source = KafkaSource(
        KafkaSettings(bootstrap_servers=[broker.bootstrap], topic=topic, group_id=group,
                      dead_letter_topic=dlq, commit_interval_ms=60_000),  # only rebalances commit
        batch=BatchSettings(max_records=50),
    )
    source.open()
    processed: list[str] = []

    def slow(batch) -> None:
        time.sleep(0.05)
        processed.extend(r.request_id for r in batch.records)

    stop = threading.Event()
    caplog.set_level(logging.INFO)
    loop = threading.Thread(target=StreamProcessor(source, slow).run, args=(stop,))
    loop.start()
    try:
        wait_for(lambda: len(processed) >= 500, 60, "the first member to be mid-stream")
        other = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                              enable_auto_commit=False, max_poll_interval_ms=10_000)
        deadline = time.monotonic() + 60
        while not other.assignment() and time.monotonic() < deadline:
            other.poll(timeout_ms=500)
        moved = {(tp.topic, tp.partition) for tp in other.assignment()}
        assert moved
        # The second member can finish joining before the first one's poll loop
        # has handled its own new assignment: wait for that, not for a fixed time.
        everything = {(topic, p) for p in range(4)}
        wait_for(lambda: source.assignment == everything - moved, 60,
                 "the first member to hold what did not move")
        done_before = committed(broker.bootstrap, group, topic, 4)
        other.close(autocommit=False)
    finally:
        stop.set()
        loop.join(60)
    # What the first member finished on the partitions it gave up was committed at the revoke.
    assert all((done_before[p] or 0) > 0 for _, p in moved)
    assert not [r for r in caplog.records if "rebalance listener" in r.getMessage()
                or "Cannot block" in r.getMessage()]


def test_input_compressed_with_every_kafka_codec_is_scored(
        broker, names, daemons, tmp_path: Path) -> None:
    """Producers of request logs compress (lz4, zstd and snappy are the usual choices);
    without their libraries kafka-python's poll raised UnsupportedCodecError on the first
    such batch, and the daemon read nothing."""
    from kafka import KafkaProducer

    codecs = ("gzip", "snappy", "lz4", "zstd")
    topic, group = names("compressed"), names("group")
    broker.create_topics([(topic, len(codecs))])
    records = [traffic.encode(r) for r in traffic.wire_records(
        400, seed=6, start_ms=traffic.FIXED_START_MS)]
    ends: dict[int, int] = {}
    for partition, codec in enumerate(codecs):
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                 compression_type=codec, linger_ms=20)
        futures = [producer.send(topic, value=v, partition=partition)
                   for v in records[partition::len(codecs)]]
        producer.flush()
        ends[partition] = max(f.get(timeout=10).offset for f in futures) + 1
        producer.close()
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group})
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: daemon.metrics().sum("driftwatch_records_total", outcome="scored")
             == len(records), 60, "every compressed record to be scored")
    wait_for(lambda: committed(broker.bootstrap, group, topic, len(codecs)) == ends, 30,
             "committed offsets to reach the end offsets")
    assert daemon.metrics().sum("driftwatch_dead_letter_total") == 0
    assert daemon.terminate() == 0


def test_a_gateways_field_names_are_read_through_wire_fields(
        broker, names, daemons, tmp_path: Path) -> None:
    """Records as a gateway logs them (LiteLLM's `id`, `startTime` and `response_time` in
    seconds, `response_cost`, the team in `metadata`), read through `wire.fields`: scored with
    their route label and latency in seconds, or, where a record logs only its start and end
    (every other one here), the time between them (`wire.latency_from`); a broken one
    dead-lettered at its own path."""
    from monitor.local.bench_consume import MAPPED_FIELDS, as_gateway_logs

    topic, dlq, group = names("gateway"), names("gateway-dlq"), names("group")
    broker.create_topics([(topic, 2), (dlq, 1)])
    raw = list(traffic.wire_records(500, seed=8, start_ms=traffic.FIXED_START_MS))
    logged = [as_gateway_logs(r) for r in raw]
    for i, x in enumerate(logged):
        if i % 2 and "response_time" in x:  # its end time instead, in RFC 3339
            end = x["startTime"] + x.pop("response_time")
            x["endTime"] = datetime.fromtimestamp(end, UTC).isoformat()
    broken = [{**logged[0], "id": None}, {**logged[1], "metadata": {"team": 7}}]
    payloads = [json.dumps(x).encode() for x in logged + broken]
    ends = produce(broker.bootstrap, topic, ((i % 2, v, None) for i, v in enumerate(payloads)))
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq},
                          metrics={"labels": ["route"]},
                          wire={"fields": MAPPED_FIELDS, "latency_unit": "s",
                                "latency_from": ["startTime", "endTime"]})
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 60,
             "every record scored or dead-lettered, and committed")
    m = daemon.metrics()
    assert m.sum("driftwatch_records_total", outcome="scored") == len(raw)
    routes = Counter(r["route"] for r in raw)
    assert {route: m.sum("driftwatch_records_total", outcome="scored", route=route)
            for route in routes} == routes
    seconds = [r["latency_ms"] / 1_000 for r in raw if r.get("latency_ms") is not None]
    assert m.sum("driftwatch_request_latency_seconds_count") == len(seconds)
    assert m.sum("driftwatch_request_latency_seconds_sum") == pytest.approx(sum(seconds))
    letters = read_topic(broker.bootstrap, dlq, 1, 2)
    details = sorted({k: v.decode() for k, v in x.headers}["detail"] for x in letters)
    assert details == ["Expected `int | str`, got `null` - at `$.id`",
                       "Expected `str | null`, got `int` - at `$.metadata.team`"]
    assert daemon.terminate() == 0


def test_a_split_deployments_response_topic_is_read_through_its_own_map(
        broker, names, daemons, tmp_path: Path) -> None:
    """Requests logged by a gateway in the wire's names, responses by a model server in its
    own (`id`, the text in `output.text`, `duration` in seconds, token counts in `usage`):
    `wire.topics` reads the response topic under its own map, so every pair is joined and
    scored with its latency; a response without its id is dead-lettered at `$.id`."""
    req_topic, resp_topic, dlq, group = (names("req"), names("resp"), names("dlq"),
                                         names("group"))
    broker.create_topics([(req_topic, 2), (resp_topic, 2), (dlq, 1)])
    records = list(traffic.wire_records(300, seed=5, start_ms=traffic.FIXED_START_MS))
    requests, responses = [], []
    for record in records:
        request, response = traffic.split_request_response(record)
        requests.append(request)
        served = {"id": response.pop("request_id"), "timestamp": response.pop("timestamp"),
                  "output": {"text": response.pop("response", None)},
                  "usage": {"completion_tokens": response.pop("completion_tokens", None)}}
        if "latency_ms" in response:
            served["duration"] = response.pop("latency_ms") / 1_000
        responses.append({**served, **response})  # status, error_type, cost_usd as they are
    broken = {**responses[0], "id": None}

    def partition(rid: str) -> int:
        return int(rid.rsplit("-", 1)[1]) % 2

    produce(broker.bootstrap, req_topic, ((partition(h["request_id"]), traffic.encode(h),
                                           None) for h in requests))
    ends = produce(broker.bootstrap, resp_topic, (
        (partition(h["id"] or "x-0"), traffic.encode(h), None) for h in [*responses, broken]))
    port = free_port()
    config = write_config(
        tmp_path / "dw.yaml", broker.bootstrap, port,
        kafka={"request_topic": req_topic, "response_topic": resp_topic, "group_id": group,
               "dead_letter_topic": dlq},
        wire={"topics": {resp_topic: {
            "fields": {"request_id": "id", "response": "output.text", "latency_ms": "duration",
                       "completion_tokens": "usage.completion_tokens"},
            "latency_unit": "s"}}})
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, resp_topic, 2) == ends, 60,
             "every response joined or dead-lettered, and committed")
    wait_for(lambda: daemon.metrics().sum("driftwatch_records_total", outcome="scored")
             >= len(records), 60, "every pair scored")
    m = daemon.metrics()
    assert m.sum("driftwatch_records_total", outcome="scored") == len(records)
    assert m.sum("driftwatch_join_unmatched_total") == 0
    seconds = [r["latency_ms"] / 1_000 for r in records if r.get("latency_ms") is not None]
    assert m.sum("driftwatch_request_latency_seconds_count") == len(seconds)
    assert m.sum("driftwatch_request_latency_seconds_sum") == pytest.approx(sum(seconds))
    (letter,) = read_topic(broker.bootstrap, dlq, 1, 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert (headers["reason"], headers["original_topic"]) == ("missing_request_id", resp_topic)
    assert headers["detail"].endswith("at `$.id`"), headers
    assert daemon.terminate() == 0


@pytest.mark.parametrize("encoding", ["otlp_json", "otlp_proto"])
def test_an_otel_collectors_traces_are_read_as_their_model_calls(
        broker, names, daemons, tmp_path: Path, encoding: str) -> None:
    """`wire.format: otlp_json | otlp_proto` on the real broker: messages as an
    OpenTelemetry Collector's Kafka exporter writes them, each with 0 to 3 model calls among
    other spans. Every call is scored once with its latency and its route from a mapped
    attribute; a message of no call is committed all the same; one with a bad call is
    dead-lettered whole, naming it."""
    from monitor.local.bench_consume import as_proto
    from tests.consumers.test_otlp import span, traces

    encode = as_proto if encoding == "otlp_proto" else (lambda message: message)

    topic, dlq, group = names("otlp"), names("otlp-dlq"), names("group")
    broker.create_topics([(topic, 2), (dlq, 1)])
    calls = list(traffic.wire_records(120, seed=12, start_ms=traffic.FIXED_START_MS))
    rng = random.Random(12)
    messages: list[bytes] = []
    taken = 0
    while taken < len(calls):
        these = calls[taken:taken + rng.randint(0, 3)]
        taken += len(these)
        spans = [span(f"{int(c['request_id'].rsplit('-', 1)[1]):016x}", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": c["model"],
            "app.route": c["route"],
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": c["prompt"]}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": c.get("response") or ""}]}])},
            took_ms=c.get("latency_ms") or 0.0) for c in these]
        spans.append(span("ffffffffffffffff", {"http.request.method": "POST"}))
        messages.append(encode(traces(*spans)))
    broken = encode(traces(span("0000000000000bad", {"gen_ai.request.model": "m\x07"})))
    ends = produce(broker.bootstrap, topic,
                   ((i % 2, v, None) for i, v in enumerate([*messages, broken])))
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq},
                          metrics={"labels": ["route"]},
                          # the spans start in 2027: arrival is now
                          validation={"max_future_seconds": 10 * 365 * 86_400},
                          wire={"format": encoding,
                                "fields": {"route": "attributes.app.route"}})
    daemon = daemons(config, port)
    daemon.wait_ready()
    wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 60,
             "every message scored, dead-lettered or found empty, and committed")
    m = daemon.metrics()
    assert m.sum("driftwatch_messages_consumed_total") == len(messages) + 1
    assert m.sum("driftwatch_records_total", outcome="scored") == len(calls)
    routes = Counter(c["route"] for c in calls)
    assert {route: m.sum("driftwatch_records_total", outcome="scored", route=route)
            for route in routes} == routes
    seconds = [(c.get("latency_ms") or 0.0) / 1_000 for c in calls]
    assert m.sum("driftwatch_request_latency_seconds_count") == len(calls)
    assert m.sum("driftwatch_request_latency_seconds_sum") == pytest.approx(sum(seconds),
                                                                            abs=1e-3)
    (letter,) = read_topic(broker.bootstrap, dlq, 1, 1)
    headers = {k: v.decode() for k, v in letter.headers}
    assert headers["reason"] == "invalid_field" and letter.value == broken
    assert headers["detail"].startswith(
        "the model call at `$.resourceSpans.0.scopeSpans.0.spans.0` (spanId 0000000000000bad): "
        "control character '\\x07'"), headers
    assert daemon.terminate() == 0
