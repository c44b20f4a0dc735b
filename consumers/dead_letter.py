"""The dead-letter topic: original bytes, with where they came from and why, in headers.

Sends are asynchronous; `flush` says which of them are durably written, so their
offsets may be committed. Failed sends are kept and sent again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from consumers.decode import Rejection
from consumers.wire import Origin

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes | None
    key: bytes | None
    origin: Origin
    rejection: Rejection
    # Kafka positions that are done once this letter is written (a joined record has two).
    settles: tuple[Origin, ...]

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("reason", self.rejection.reason.encode()),
            ("detail", self.rejection.detail.encode()),
            ("original_topic", self.origin.topic.encode()),
            ("original_partition", str(self.origin.partition).encode()),
            ("original_offset", str(self.origin.offset).encode()),
        ]


class DeadLetterWriter:
    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.topic = topic
        self._producer = producer
        self._in_flight: list[tuple[DeadLetter, object]] = []

    def __len__(self) -> int:
        return len(self._in_flight)

    def send(self, letter: DeadLetter) -> None:
        future = self._producer.send(
            self.topic, value=letter.value, key=letter.key, headers=letter.headers()
        )
        self._in_flight.append((letter, future))

    def flush(self, timeout_s: float) -> list[DeadLetter]:
        """Wait for sends; return the letters now durable. Failed ones are sent again."""
        if not self._in_flight:
            return []
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            log.warning("dead-letter topic %s: flush timed out after %.1fs", self.topic, timeout_s)
        written: list[DeadLetter] = []
        waiting: list[tuple[DeadLetter, object]] = []
        failed: list[DeadLetter] = []
        for letter, future in self._in_flight:
            if future.succeeded():
                written.append(letter)
            elif future.failed():
                log.warning("dead-letter send failed, sending again: %s", future.exception)
                failed.append(letter)
            else:
                waiting.append((letter, future))
        self._in_flight = waiting
        for letter in failed:
            self.send(letter)
        return written

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.close(timeout=timeout_s)
