"""The review queue's Kafka side in the daemon: records to review go out on `review.topic`;
reviewers' labels come back on `review.labels_topic`, read by a thread of their own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from monitor.acting.review import ReviewStore, encoded_within, export
from monitor.config import Config
from monitor.telemetry.metrics import METRICS as m

log = logging.getLogger(__name__)
# A review line's bytes on the topic: under the producer's and the usual broker's 1 MiB, with
# room for the key and the record's framing.
LINE_BYTES = 900_000


class Label(msgspec.Struct, frozen=True):
    """One reviewer's label for one record."""

    request_id: str
    label: str
    reviewer: str = "unknown"


_decode = msgspec.json.Decoder(Label)


def review_publisher(config: Config) -> tuple[Callable[[list[dict[str, object]]], None],
                                              Callable[[], None]]:
    """A function that sends the lines to `review.topic` (keyed by request id) and returns
    once the broker has them, and the producer's closer."""
    assert config.review.topic is not None
    topic = config.review.topic
    # max_block_ms: send() waits this long for the topic's metadata or buffer room, in the
    # pipeline; the default 60 s, for every line, let a topic missing on a cluster that does
    # not create topics stall the batch a minute a sampled record.
    producer = KafkaProducer(acks="all", linger_ms=5, max_block_ms=1_000,
                             **config.kafka.client_options())

    def publish(lines: list[dict[str, object]]) -> None:
        # Best effort, as the sample is: a line the producer or the broker refuses is logged
        # and counted, never raised into the pipeline, which would run the batch again and
        # feed its records to the detectors and rules a second time.
        sent, errors = [], []
        for line in lines:
            try:
                sent.append(producer.send(topic, encoded_within(line, LINE_BYTES),
                                          key=str(line["request_id"]).encode()))
            except KafkaTimeoutError as exc:
                # Not taken within max_block_ms: the next lines would wait as long, each.
                errors += [exc] * (len(lines) - len(sent) - len(errors))
                break
            except KafkaError as exc:
                errors.append(exc)
        try:
            producer.flush(timeout=30)
        except KafkaError as exc:  # still sending after 30 s: they may yet arrive
            log.warning("review topic %s: %d line(s) still unacknowledged after 30 s (%r)",
                        topic, sum(not f.is_done for f in sent), exc)
        errors += [f.exception for f in sent if f.is_done and f.failed()]
        if errors:
            m.REVIEW_WRITE_FAILURES.labels("topic").inc(len(errors))
            log.error("review topic %s: %d of %d line(s) not sent (%r)", topic, len(errors),
                      len(lines), errors[0])

    return publish, lambda: producer.close(timeout=5)


class LabelReader(threading.Thread):
    """Reads labels into the review store and exports the estimates after each poll; a bad
    message is counted and logged, never fatal. Offsets are committed after storing."""

    def __init__(self, config: Config, store: ReviewStore, stop: threading.Event,
                 consumer: Any = None) -> None:
        super().__init__(name="driftwatch-review-labels", daemon=True)
        assert config.review.labels_topic is not None
        # Not `_stop`: threading.Thread calls its own `_stop()` once the thread has ended.
        self.store, self._stopping = store, stop
        k = config.kafka
        self._consumer = consumer or KafkaConsumer(
            config.review.labels_topic, group_id=f"{k.group_id}-review-labels",
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms, **k.client_options())

    def run(self) -> None:
        while not self._stopping.is_set():
            polled: dict[Any, list[Any]] = {}
            committed = False
            try:
                polled = self._consumer.poll(timeout_ms=1_000)
                if not polled:
                    continue
                for batch in polled.values():
                    for msg in batch:
                        self._read(msg.value)
                self._consumer.commit()
                committed = True
                export(self.store.estimates())
            except Exception:  # the labels are best effort; the daemon goes on scoring
                log.exception("review labels: reading failed; trying again in 5 s")
                if not committed:
                    self._rewind(polled)
                self._stopping.wait(5)
        # Bounded as the main consumer's close is: the default, request_timeout_ms (305 s),
        # outlasted the daemon's 10 s wait for this thread on every stop.
        self._consumer.close(autocommit=False, timeout_ms=5_000)

    def _rewind(self, polled: dict[Any, list[Any]]) -> None:
        """Back to the first message of a poll that was not stored whole: the consumer's
        position is past it, so the next poll would skip its labels and the next commit
        lose them. Stored twice is harmless (a label replaces itself)."""
        try:
            assigned = self._consumer.assignment()
            for tp, batch in polled.items():
                if batch and tp in assigned:
                    self._consumer.seek(tp, batch[0].offset)
        except (KafkaError, ValueError) as exc:  # a rebalance took them: a new owner reads them
            log.warning("review labels: cannot rewind (%r); uncommitted, they are read "
                        "again after the next rebalance", exc)

    def _read(self, value: bytes | None) -> None:
        try:
            label = _decode.decode(value or b"")
        except (msgspec.DecodeError, RecursionError) as exc:  # too deep: see consumers.decode
            m.REVIEW_LABELS.labels("invalid").inc()
            log.warning("review labels: a message is not {request_id, label, reviewer}: %s",
                        str(exc)[:200])
            return
        outcome = self.store.add_label(label.request_id, label.label, label.reviewer)
        m.REVIEW_LABELS.labels(outcome).inc()
        if outcome != "stored":
            log.warning("review labels: %s for request %s (label %r)", outcome,
                        label.request_id, label.label[:40])
