"""Scale-out: two daemons in one consumer group split a 6-partition topic, every record is
scored once summed over both, and when one stops the other takes its partitions over."""

from __future__ import annotations

import pytest

from monitor.local import traffic
from monitor.local.broker import free_port
from tests.support import committed, produce, wait_for, write_config

pytestmark = pytest.mark.broker
PARTITIONS = 6


def _payloads(n: int, seed: int) -> list[bytes]:
    return [traffic.encode(r) for r in traffic.wire_records(n, seed=seed,
                                                            start_ms=traffic.FIXED_START_MS)]


def test_two_daemons_split_the_partitions_and_one_takes_over_when_the_other_stops(
        broker, names, daemons, tmp_path) -> None:
    topic, group = names("scale"), names("group")
    broker.create_topics([(topic, PARTITIONS)])
    first_batch = _payloads(3_000, seed=81)
    produce(broker.bootstrap, topic, ((i % PARTITIONS, p, None)
                                      for i, p in enumerate(first_batch)))
    running = []
    for n in range(2):
        port = free_port()
        config = write_config(tmp_path / f"dw-{n}.yaml", broker.bootstrap, port,
                              kafka={"topic": topic, "group_id": group})
        running.append(daemons(config, port))
    a, b = running
    a.wait_ready(60)
    b.wait_ready(60)

    def assigned(d) -> float:
        return d.metrics().sum("driftwatch_assigned_partitions")

    wait_for(lambda: assigned(a) + assigned(b) == PARTITIONS and assigned(a) and assigned(b),
             60, "the group to split the partitions between both daemons")

    def scored(*ds) -> float:
        return sum(d.metrics().sum("driftwatch_records_total", outcome="scored") for d in ds)

    wait_for(lambda: scored(a, b) == 3_000, 60, "both to score the first records")
    a_share = scored(a)
    assert 0 < a_share < 3_000  # both did a share of the work
    assert a.terminate() == 0  # nothing left to read: a clean stop, all committed

    second = _payloads(1_200, seed=82)
    ends = produce(broker.bootstrap, topic, ((i % PARTITIONS, p, None)
                                             for i, p in enumerate(second)))
    wait_for(lambda: assigned(b) == PARTITIONS, 60, "the survivor to own every partition")
    wait_for(lambda: committed(broker.bootstrap, group, topic, PARTITIONS) == ends, 60,
             "every offset committed by the survivor")
    # Summed over instances (what Prometheus' sum by () over `instance` shows), each record
    # was scored exactly once: the clean handover re-read nothing.
    assert a_share + scored(b) == 4_200
    assert b.terminate() == 0
