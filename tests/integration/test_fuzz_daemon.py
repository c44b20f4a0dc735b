"""Fuzz through the real daemon: 10,000 messages, from real records mutated (truncated UTF-8,
huge fields, deep nesting, wrong types, NaN and Infinity, duplicate keys) and from hypothesis;
no crash, and every message is either scored or dead-lettered with a known reason."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.decode import REASONS
from monitor.local import traffic
from monitor.local.broker import free_port
from tests.support import committed, produce, read_topic, wait_for, write_config

pytestmark = pytest.mark.broker
PARTITIONS = 3


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _mutate(record: dict[str, object], rng: random.Random) -> bytes:
    raw = traffic.encode(record)
    kind = rng.randrange(9)
    if kind == 0:  # cut anywhere, often inside a multi-byte character
        return raw[: rng.randrange(len(raw))]
    if kind == 1:  # a huge field: under or over max_message_bytes (500 kB here)
        record["response"] = "é" * rng.choice((100_000, 400_000))  # 200 kB or 800 kB
        return traffic.encode(record)
    if kind == 2:  # deep nesting where a string or list of messages belongs
        text = raw.decode()
        return text.replace('"prompt":', f'"prompt":{_nested(rng.choice((50, 5_000)))},'
                            '"prompt_was":', 1).encode()
    if kind == 3:  # wrong types
        field = rng.choice(("latency_ms", "prompt_tokens", "request_id", "context", "prompt"))
        record[field] = rng.choice(({"a": 1}, [1, 2], "12ms", True, None, -5))
        return traffic.encode(record)
    if kind == 4:  # NaN and Infinity are not JSON
        return raw.replace(b'"latency_ms":', b'"latency_ms":NaN,"x":', 1) if rng.random() < .5 \
            else raw[:-1] + b',"cost_usd":Infinity}'
    if kind == 5:  # duplicate keys: the last one wins, as in most JSON parsers
        return raw[:-1] + b',"request_id":"dup-' + str(rng.random()).encode() + b'"}'
    if kind == 6:  # random bytes spliced in
        at = rng.randrange(len(raw))
        return raw[:at] + rng.randbytes(rng.randrange(1, 16)) + raw[at:]
    if kind == 7:  # a JSON value that is not an object
        return json.dumps(rng.choice(([record], "text", 42, None))).encode()
    return raw  # untouched: valid


@settings(max_examples=1, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=300) | st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20).map(lambda v: json.dumps(v).encode()), min_size=2_000, max_size=2_000))
def _hypothesis_payloads(found: list[list[bytes]], payloads: list[bytes]) -> None:
    found.append(payloads)


def test_ten_thousand_fuzzed_messages_are_each_scored_or_dead_lettered_with_a_reason(
        broker, names, daemons, tmp_path) -> None:
    rng = random.Random(7)
    mutated = [_mutate(r, rng) for r in traffic.wire_records(8_000, seed=91,
                                                             start_ms=traffic.FIXED_START_MS)]
    generated: list[list[bytes]] = []
    _hypothesis_payloads(generated)
    payloads = mutated + generated[0]
    assert len(payloads) == 10_000
    topic, dlq, group = names("fuzz"), names("dlq"), names("group")
    broker.create_topics([(topic, PARTITIONS), (dlq, 1)])
    ends = produce(broker.bootstrap, topic, ((i % PARTITIONS, p, None)
                                             for i, p in enumerate(payloads)))
    port = free_port()
    config = write_config(tmp_path / "dw.yaml", broker.bootstrap, port,
                          kafka={"topic": topic, "group_id": group, "dead_letter_topic": dlq,
                                 "max_message_bytes": 500_000})
    daemon = daemons(config, port)
    daemon.wait_ready(60)

    def accounted() -> bool:
        m = daemon.metrics()
        return (m.sum("driftwatch_records_total", outcome="scored")
                + m.sum("driftwatch_dead_letter_total")) == len(payloads)

    wait_for(accounted, 180, "every message scored or dead-lettered")
    wait_for(lambda: committed(broker.bootstrap, group, topic, PARTITIONS) == ends, 60,
             "every offset committed")
    m = daemon.metrics()
    reasons = m.by("driftwatch_dead_letter_total", "reason")
    assert set(reasons) <= set(REASONS)
    # Each kind of damage was seen and named (not all lumped into one reason).
    assert {"oversized", "not_utf8", "not_json", "not_object", "invalid_field"} <= set(reasons)
    assert reasons.get("processing_error", 0) == 0  # nothing valid failed in the pipeline
    dead = int(sum(reasons.values()))
    assert 3_000 < dead < 10_000  # most mutations are invalid; untouched ones and some are not
    letters = read_topic(broker.bootstrap, dlq, 1, dead)
    assert len(letters) == dead
    assert all(dict(letter.headers)["reason"].decode() in REASONS for letter in letters)
    daemon.check_alive()
    assert daemon.terminate() == 0
