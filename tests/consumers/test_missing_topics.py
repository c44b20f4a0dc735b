"""An input topic the brokers do not have (misspelt, or not created on a cluster that creates
none on demand) is named by the source and makes the daemon not ready: it owned nothing and
passed for a ready standby. The metadata is kafka-python's own, fed a real encoded answer
(Tansu, the test broker, creates every topic asked about, so it cannot show this)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from kafka.cluster import ClusterMetadata
from kafka.protocol.metadata import MetadataResponse

from consumers.settings import JoinSettings, KafkaSettings
from consumers.source import MISSING_AFTER_S, KafkaSource
from monitor.app.daemon import JoinWatch, _log_missing
from monitor.telemetry.endpoints import Health
from tests.consumers.test_offsets_batcher_join import FakeClock

UNKNOWN_TOPIC_OR_PARTITION = 3


def _answer(known: list[str], unknown: list[str]) -> MetadataResponse:
    topic, broker = MetadataResponse.MetadataResponseTopic, MetadataResponse.MetadataResponseBroker
    partition = topic.MetadataResponsePartition(
        error_code=0, partition_index=0, leader_id=0, leader_epoch=0, replica_nodes=[0],
        isr_nodes=[0], offline_replicas=[])
    answer = MetadataResponse(
        throttle_time_ms=0, cluster_id="c", controller_id=0,
        brokers=[broker(node_id=0, host="127.0.0.1", port=9092, rack=None)],
        topics=[*(topic(error_code=0, name=n, is_internal=False, partitions=[partition])
                  for n in known),
                *(topic(error_code=UNKNOWN_TOPIC_OR_PARTITION, name=n, is_internal=False,
                        partitions=[]) for n in unknown)])
    return MetadataResponse.decode(answer.encode(version=9), version=9)


def _source(cluster: ClusterMetadata, clock: FakeClock, **topics: str) -> KafkaSource:
    source = KafkaSource(KafkaSettings(bootstrap_servers=["127.0.0.1:1"], **topics),
                         JoinSettings(), clock=clock)
    source._consumer = SimpleNamespace(_client=SimpleNamespace(cluster=cluster))
    return source


def test_the_topics_the_metadata_has_lacked_for_a_while() -> None:
    cluster, clock = ClusterMetadata(), FakeClock()
    cluster.set_topics(["requests", "respones"])
    source = _source(cluster, clock, request_topic="requests", response_topic="respones")
    assert source.missing_topics() == []  # no answer yet: nothing is known
    cluster.update_metadata(_answer(known=["requests"], unknown=["respones"]))
    assert source.missing_topics() == []  # just now: an answer from before the subscription?
    clock.advance(MISSING_AFTER_S - 0.1)
    assert source.missing_topics() == []
    clock.advance(0.1)
    assert source.missing_topics() == ["respones"]
    cluster.update_metadata(_answer(known=["requests", "respones"], unknown=[]))
    assert source.missing_topics() == []
    clock.advance(MISSING_AFTER_S)
    cluster.update_metadata(_answer(known=["requests"], unknown=["respones"]))
    assert source.missing_topics() == []  # absent again: counted from now, not from before
    assert _source(cluster, clock, topic="requests").missing_topics() == []
    assert KafkaSource(KafkaSettings(topic="t"), JoinSettings()).missing_topics() == []


def test_a_member_reading_a_missing_topic_is_not_ready_nor_a_standby() -> None:
    health = Health()
    health.tick(broker_connected=True, partitions=0, in_group=True, missing_topics=["tpoic"])
    assert health.ready() == (False, {"broker_connected": True, "partitions": 0,
                                      "missing_topics": ["tpoic"]})
    # One of two topics missing: the other's partitions do not make it ready.
    health.tick(broker_connected=True, partitions=3, in_group=True, missing_topics=["r"])
    assert health.ready()[0] is False
    health.tick(broker_connected=True, partitions=0, in_group=True)
    assert health.ready() == (True, {"broker_connected": True, "partitions": 0,
                                     "standby": True})


def test_the_log_says_which_topics_and_when_they_come(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="driftwatch"):
        _log_missing(["a", "b"], [])
        _log_missing([], ["a", "b"])
        _log_missing(["t"], [])
    assert [r.getMessage() for r in caplog.records] == [
        "input topics 'a', 'b' not on the brokers: nothing is read from them, and this process "
        "is not ready, until they are created (a name misspelt in the kafka section, or a "
        "cluster that creates no topic on demand)",
        "input topics 'a', 'b' now on the brokers",
        "input topic 't' not on the brokers: nothing is read from it, and this process is not "
        "ready, until it is created (a name misspelt in the kafka section, or a cluster that "
        "creates no topic on demand)"]


def test_a_member_that_never_finishes_joining_is_said_so(
        caplog: pytest.LogCaptureFixture) -> None:
    """A group whose rebalance never completed left /readyz at 503 and the log silent, even
    at DEBUG, for as long as it lasted."""
    caplog.set_level("INFO", logger="driftwatch")
    watch = JoinWatch("dw")
    for t in (0.0, 10.0, 29.0):
        watch.observe(connected=True, joined=False, now=t)
    assert caplog.records == []  # an ordinary join takes seconds
    watch.observe(connected=True, joined=False, now=31.0)
    watch.observe(connected=True, joined=False, now=60.0)  # said again a minute later
    watch.observe(connected=True, joined=False, now=92.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and warnings[0].startswith(
        "connected to Kafka but not a member of consumer group dw after 31s")
    watch.observe(connected=True, joined=True, now=95.0)
    assert caplog.records[-1].getMessage() == "joined consumer group dw after 95s"
    watch.observe(connected=False, joined=False, now=100.0)  # the broker's absence: said apart
    watch.observe(connected=False, joined=False, now=200.0)
    assert len(caplog.records) == 3
