"""The dead-letter topic: original bytes, with where they came from and why, in headers.

Sends are asynchronous; `flush` says which of them are durably written, so their
offsets may be committed. A letter that does not fit the size limit is cut to a prefix
(its full length and SHA-256 in headers), so a dead letter can always be written. A
failed send, synchronous or not, is sent again with backoff; past `attempts` failures its
partition is reported stuck (`stuck()`): it must stop, since its offset cannot be committed,
and the letter is still retried, slowly, so the partition resumes once the write succeeds.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.record.default_records import DefaultRecordBatchBuilder

from consumers.decode import Rejection
from consumers.wire import Origin

log = logging.getLogger(__name__)

Partition = tuple[str, int]
# Room kept for the record batch framing kafka-python adds around one record.
_FRAMING = 512
_KEY_PREFIX = 1_024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message bound for the dead-letter topic, with its origin and reason."""

    value: bytes | None
    key: bytes | None
    origin: Origin
    rejection: Rejection
    # Kafka positions that are done once this letter is written (a joined record has two).
    settles: tuple[Origin, ...]
    # Set when the original did not fit: headers saying what was cut.
    cut: tuple[tuple[str, bytes], ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("reason", self.rejection.reason.encode()),
            ("detail", self.rejection.detail.encode()),
            ("original_topic", self.origin.topic.encode()),
            ("original_partition", str(self.origin.partition).encode()),
            ("original_offset", str(self.origin.offset).encode()),
            *self.cut,
        ]

    def size(self) -> int:
        """Bytes of this letter as one Kafka record, as the producer estimates it."""
        return DefaultRecordBatchBuilder.estimate_size_in_bytes(self.key, self.value,
                                                                self.headers())


def bounded(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """The letter itself when it fits `max_bytes`, else one with the value (and a long key)
    cut to a prefix; headers `truncated`, `original_value_bytes`, `original_value_sha256` (and
    the same for the key) say what the original was."""
    if letter.size() <= max_bytes:
        return letter
    value, key = letter.value or b"", letter.key
    cut: list[tuple[str, bytes]] = [("truncated", b"true")]
    fields = [("value", value)] + ([("key", key)] if key and len(key) > _KEY_PREFIX else [])
    for name, data in fields:
        cut += [(f"original_{name}_bytes", str(len(data)).encode()),
                (f"original_{name}_sha256", hashlib.sha256(data).hexdigest().encode())]
    if key is not None and len(key) > _KEY_PREFIX:
        key = key[:_KEY_PREFIX]
    shell = replace(letter, value=b"", key=key, cut=tuple(cut))
    room = max(0, max_bytes - shell.size() - _FRAMING)
    return replace(shell, value=value[:room])


@dataclass
class _Pending:
    letter: DeadLetter
    failures: int = 0
    next_try: float = 0.0
    future: object | None = None  # the send in flight, if any
    last_error: str = ""


class DeadLetterWriter:
    """Sends dead letters, retries failed sends, and reports which are durably written."""

    def __init__(self, producer: KafkaProducer, topic: str, max_bytes: int = 1_000_000,
                 attempts: int = 5, clock: Callable[[], float] = time.monotonic,
                 stuck_retry_s: float = 30.0) -> None:
        self.topic = topic
        self.max_bytes = max_bytes
        self.attempts = attempts
        self.stuck_retry_s = stuck_retry_s  # between tries of a letter past `attempts`
        self._producer = producer
        self._clock = clock
        self._pending: list[_Pending] = []
        self.truncated = 0  # letters cut to fit, since start
        # A send since the last flush waited max_block_ms in vain (no metadata for the topic,
        # no buffer room): until the next flush the others would each wait as long, on the
        # poll thread, so they are left for a later flush to try.
        self._waited_in_vain = False

    def __len__(self) -> int:
        return len(self._pending)

    def send(self, letter: DeadLetter) -> None:
        fitted = bounded(letter, self.max_bytes)
        if fitted is not letter:
            self.truncated += 1
            log.warning("dead letter from %s-%d@%d is %d bytes, over dead_letter_max_bytes=%d: "
                        "writing a %d-byte prefix with its length and SHA-256 in headers",
                        *letter.origin, len(letter.value or b""), self.max_bytes,
                        len(fitted.value or b""))
        pending = _Pending(fitted)
        self._pending.append(pending)
        self._try(pending)

    def flush(self, timeout_s: float) -> list[DeadLetter]:
        """Wait for sends; return the letters now durable. Failed ones are sent again when
        their backoff has passed."""
        if not self._pending:
            return []
        if any(p.future is not None for p in self._pending):
            try:
                self._producer.flush(timeout=timeout_s)
            except KafkaTimeoutError:
                log.warning("dead-letter topic %s: flush timed out after %.1fs", self.topic,
                            timeout_s)
        written: list[DeadLetter] = []
        waiting: list[_Pending] = []
        now = self._clock()
        for p in self._pending:
            future = p.future
            if future is not None and future.succeeded():  # type: ignore[attr-defined]
                written.append(p.letter)
                if p.failures >= self.attempts:
                    log.warning("dead letter from %s-%d@%d written after %d failed attempts; "
                                "the partition resumes", *p.letter.origin, p.failures)
                continue
            if future is not None and future.failed():  # type: ignore[attr-defined]
                self._failed(p, repr(future.exception), now)  # type: ignore[attr-defined]
            waiting.append(p)
        self._pending = waiting
        self._waited_in_vain = False
        for p in waiting:
            if p.future is None and p.next_try <= now:
                self._try(p)
        return written

    def stuck(self) -> dict[Partition, str]:
        """Partitions with a letter that failed `attempts` times, and its last error."""
        out: dict[Partition, str] = {}
        for p in self._pending:
            if p.failures >= self.attempts:
                for origin in p.letter.settles:
                    out[origin[:2]] = p.last_error
        return out

    def drop(self, partitions: Iterable[Partition]) -> None:
        """Forget letters of partitions no longer ours: their next owner reads them again."""
        gone = set(partitions)
        self._pending = [p for p in self._pending
                         if not {o[:2] for o in p.letter.settles} & gone]

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.close(timeout=timeout_s)

    def _try(self, p: _Pending) -> None:
        if self._waited_in_vain:
            return  # not tried, not failed: due at the next flush
        letter = p.letter
        try:
            p.future = self._producer.send(self.topic, value=letter.value, key=letter.key,
                                           headers=letter.headers())
        except KafkaTimeoutError as exc:
            self._waited_in_vain = True
            self._failed(p, repr(exc), self._clock())
        except (KafkaError, ValueError, TypeError, AssertionError) as exc:
            # Raised by send() itself: too large for the broker's limits, no metadata in
            # time, a full buffer. Never let it take the poll loop down.
            self._failed(p, repr(exc), self._clock())

    def _failed(self, p: _Pending, error: str, now: float) -> None:
        p.future = None
        p.failures += 1
        p.last_error = error
        if p.failures >= self.attempts:
            p.next_try = now + self.stuck_retry_s
            if p.failures == self.attempts:
                log.error("dead letter from %s-%d@%d cannot be written to %s after %d attempts "
                          "(%s): that partition stops until it is; retrying every %.0fs",
                          *p.letter.origin, self.topic, p.failures, error, self.stuck_retry_s)
        else:
            p.next_try = now + min(self.stuck_retry_s, 0.5 * 2 ** (p.failures - 1))
            log.warning("dead-letter send failed (attempt %d/%d), sending again: %s",
                        p.failures, self.attempts, error)
