"""The score stage's last step: each scored record to the internal topic, keyed by its
partition key, acknowledged by the broker before the batch is done (and so before its input
offsets are committed): at least once through the stage, a replayed record scored twice at
worst, never lost.

The wait for the acknowledgements is the batch's `settle`: the worker's settling thread waits
while the next batch is scored, so a broker round trip per batch costs no scoring time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

from kafka.errors import KafkaError, KafkaTimeoutError

from consumers.processor import Cancelled
from monitor.pipeline import scored
from monitor.pipeline.stages import Stateless, Work
from monitor.telemetry.metrics import METRICS, Metrics
from monitor.types import IntakeCounts

log = logging.getLogger(__name__)


class Producer(Protocol):
    """What the stage needs of a kafka-python KafkaProducer."""

    def send(self, topic: str, value: bytes, key: bytes) -> Any: ...


class PublishStage(Stateless):
    """Produces a batch's scored records; its settle waits for the broker's acknowledgement
    of all of them. A failed send is sent again (with a growing pause) until it is
    acknowledged or the daemon stops, which leaves the batch unfinished and its offsets
    uncommitted."""

    def __init__(self, producer: Producer, topic: str, key_labels: tuple[str, ...],
                 cancel: threading.Event | None = None, metrics: Metrics = METRICS,
                 ack_timeout_s: float = 30.0, intake: IntakeCounts | None = None,
                 vectors: str | None = None) -> None:
        """`intake`: the source's running count of dead letters; those since the previous
        batch travel on the batch's first scored record, for the decide stage's rules.
        `vectors`: the name of the embeddings' vectors, on each record that has them."""
        self._vectors = vectors
        self._intake = intake or IntakeCounts()
        self._dead_seen = self._intake.dead_letters
        self._producer = producer
        self._topic = topic
        self._key_labels = key_labels
        self._cancel = cancel or threading.Event()
        self._m = metrics
        self._ack_timeout_s = ack_timeout_s

    def process(self, work: Work) -> None:
        b = work.batch
        dead = self._intake.dead_letters - self._dead_seen
        # Counted as sent now: the records that carry it are sent until acknowledged, or the
        # batch is read again (and its dead letters counted again) by whoever scores it next.
        self._dead_seen += dead
        records = scored.encode_batch(b.records, b.features, work.scores, dead,
                                      work.token_counts, self._vectors)
        sent = self._send(scored.messages(records, self._key_labels))
        work.settle = lambda: self._settle(sent)

    def _send(self, messages: list[scored.Message]) -> list[tuple[scored.Message, Any]]:
        sent: list[tuple[scored.Message, Any]] = []
        for i, m in enumerate(messages):
            try:
                future: Any = self._producer.send(self._topic, value=m.value, key=m.key)
            except KafkaTimeoutError as exc:
                # Waited max_block_ms for the topic's metadata or buffer room: the next would
                # wait as long, each, so they all go to the settle.
                return sent + [(rest, _Refused(exc)) for rest in messages[i:]]
            except KafkaError as exc:
                # Refused before it was queued (no metadata, a full buffer): sent again by the
                # settle like any unacknowledged message. Raising here would retry the whole
                # batch, and send its other messages a second time.
                future = _Refused(exc)
            sent.append((m, future))
        return sent

    def _settle(self, sent: list[tuple[scored.Message, Any]]) -> None:
        """Wait for every acknowledgement; send again what failed, until none does."""
        delay = 0.5
        while sent:
            failed = []
            deadline = time.monotonic() + self._ack_timeout_s  # for them all, not each
            for message, future in sent:
                try:
                    future.get(timeout=max(0.0, deadline - time.monotonic()))
                except KafkaError as exc:
                    failed.append(message)
                    error = exc
                else:
                    self._m.SCORED_PUBLISHED.inc(message.records)
            if not failed:
                return
            log.warning("%d scored-records message(s) not acknowledged by the broker (%r); "
                        "sending again in %.1fs", len(failed), error, delay)
            if self._cancel.wait(delay):
                raise Cancelled("stopping with scored records unacknowledged")
            sent = self._send(failed)
            delay = min(delay * 2, 10.0)


class _Refused:
    """A send the producer refused at once, read like its future: `get` raises the error."""

    def __init__(self, error: KafkaError) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> None:
        raise self.error
