"""The review queue's Kafka side in the daemon: records to review go out on `review.topic`;
reviewers' labels come back on `review.labels_topic`, read by a thread of their own."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

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
    producer = KafkaProducer(acks="all", linger_ms=5, **config.kafka.client_options())

    def publish(lines: list[dict[str, object]]) -> None:
        # Best effort, as the sample is: a line the producer or the broker refuses is logged
        # and counted, never raised into the pipeline, which would run the batch again and
        # feed its records to the detectors and rules a second time.
        sent, errors = [], []
        for line in lines:
            try:
                sent.append(producer.send(topic, encoded_within(line, LINE_BYTES),
                                          key=str(line["request_id"]).encode()))
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
        self.store, self._stop = store, stop
        self._consumer = consumer or KafkaConsumer(
            config.review.labels_topic, group_id=f"{config.kafka.group_id}-review-labels",
            enable_auto_commit=False, auto_offset_reset="earliest",
            **config.kafka.client_options())

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                polled = self._consumer.poll(timeout_ms=1_000)
                messages = [msg for batch in polled.values() for msg in batch]
                if not messages:
                    continue
                for msg in messages:
                    self._read(msg.value)
                self._consumer.commit()
                export(self.store.estimates())
            except Exception:  # the labels are best effort; the daemon goes on scoring
                log.exception("review labels: reading failed; retrying in 5 s")
                self._stop.wait(5)
        self._consumer.close()

    def _read(self, value: bytes | None) -> None:
        try:
            label = _decode.decode(value or b"")
        except msgspec.DecodeError as exc:
            m.REVIEW_LABELS.labels("invalid").inc()
            log.warning("review labels: a message is not {request_id, label, reviewer}: %s",
                        str(exc)[:200])
            return
        outcome = self.store.add_label(label.request_id, label.label, label.reviewer)
        m.REVIEW_LABELS.labels(outcome).inc()
        if outcome != "stored":
            log.warning("review labels: %s for request %s (label %r)", outcome,
                        label.request_id, label.label[:40])
