"""A dead letter can always be written, and one that cannot be stops only its partition: the
writer on its own (a producer that fails on cue), then a KafkaSource on a real broker."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from consumers.dead_letter import DeadLetter, DeadLetterWriter, bounded
from consumers.decode import Rejection
from consumers.processor import StreamProcessor
from consumers.settings import BatchSettings, KafkaSettings
from consumers.source import KafkaSource, NullObserver
from consumers.wire import Origin
from monitor.local import traffic
from tests.support import committed, produce, read_topic, wait_for

ORIGIN = Origin("in", 3, 42)


def _letter(value: bytes, key: bytes | None = None, origin: Origin = ORIGIN) -> DeadLetter:
    return DeadLetter(value, key, origin, Rejection("not_json", "bad"), (origin,))


def test_a_letter_that_fits_is_written_as_it_is() -> None:
    letter = _letter(b"x" * 1_000)
    assert bounded(letter, 10_000) is letter


def test_a_letter_over_the_limit_keeps_a_prefix_its_length_and_hash() -> None:
    value, key = b"v" * 50_000, b"k" * 5_000
    cut = bounded(_letter(value, key), 20_000)
    headers = dict(cut.headers())
    assert cut.size() <= 20_000
    assert value.startswith(cut.value) and len(cut.value) > 15_000
    assert headers["truncated"] == b"true"
    assert headers["original_value_bytes"] == b"50000"
    assert headers["original_value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["original_key_sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert key.startswith(cut.key) and len(cut.key) == 1_024
    assert headers["reason"] == b"not_json" and headers["original_offset"] == b"42"


class _Future:
    def __init__(self, ok: bool | None) -> None:
        self.ok = ok
        self.exception = KafkaTimeoutError("no ack") if ok is False else None

    def succeeded(self) -> bool:
        return self.ok is True

    def failed(self) -> bool:
        return self.ok is False


class _Producer:
    """Fails the first `failures` sends: alternately raising in send() and failing later."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[bytes | None] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: list) -> _Future:
        if self.failures > 0:
            self.failures -= 1
            if self.failures % 2:
                raise MessageSizeTooLargeError("too large for the broker")
            return _Future(False)
        self.sent.append(value)
        return _Future(True)

    def flush(self, timeout: float) -> None: ...


def test_failed_writes_are_retried_then_stop_only_their_partition_until_one_succeeds() -> None:
    now = [0.0]
    producer = _Producer(failures=6)
    writer = DeadLetterWriter(producer, "dlq", attempts=3,  # type: ignore[arg-type]
                              clock=lambda: now[0])
    writer.send(_letter(b"bad"))
    stuck_at = None
    for step in range(200):
        now[0] = step * 1.0
        if writer.flush(1.0):
            break
        if writer.stuck() and stuck_at is None:
            stuck_at = now[0]
            assert writer.stuck().keys() == {("in", 3)}
            error = writer.stuck()[("in", 3)]
            assert "too large" in error or "no ack" in error
    else:
        pytest.fail("the letter was never written")
    assert stuck_at is not None  # past 3 failures it was reported stuck ...
    assert producer.sent == [b"bad"] and not writer.stuck()  # ... and written in the end
    assert now[0] - stuck_at >= 30  # retried slowly while stuck


def test_letters_of_a_revoked_partition_are_dropped() -> None:
    writer = DeadLetterWriter(_Producer(failures=100), "dlq", attempts=1)  # type: ignore[arg-type]
    writer.send(_letter(b"a", origin=Origin("in", 1, 0)))
    writer.send(_letter(b"b", origin=Origin("in", 2, 0)))
    writer.flush(0.1)
    writer.drop([("in", 1)])
    assert set(writer.stuck()) == {("in", 2)} and len(writer) == 1


class _Unavailable:
    """A topic the producer has no metadata for: each send waits max_block_ms, then raises."""

    def __init__(self) -> None:
        self.available = False
        self.tries = 0
        self.sent: list[bytes | None] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: list) -> _Future:
        self.tries += 1
        if not self.available:
            raise KafkaTimeoutError("Failed to update metadata after 1.0 secs.")
        self.sent.append(value)
        return _Future(True)

    def flush(self, timeout: float) -> None: ...


def test_a_send_that_waited_in_vain_leaves_the_other_letters_to_a_later_flush() -> None:
    """Each of them waited max_block_ms in turn on the poll thread: a burst of malformed
    records with the dead-letter topic unavailable held the loop a second a letter, past
    max_poll_interval_ms."""
    now = [0.0]
    producer = _Unavailable()
    writer = DeadLetterWriter(producer, "dlq", attempts=3,  # type: ignore[arg-type]
                              clock=lambda: now[0])
    for i in range(10):
        writer.send(_letter(f"bad-{i}".encode(), origin=Origin("in", 0, i)))
    assert producer.tries == 1 and len(writer) == 10
    assert writer.flush(0.1) == [] and producer.tries == 2  # one more try a flush
    producer.available = True
    written: list[DeadLetter] = []
    for step in range(1, 100):
        now[0] = float(step)
        written += writer.flush(0.1)
        if len(written) == 10:
            break
    assert sorted(x.value or b"" for x in written) == sorted(f"bad-{i}".encode()
                                                             for i in range(10))
    assert sorted(producer.sent) == sorted(x.value for x in written)  # each once
    assert len(writer) == 0 and not writer.stuck()


class _Lags(NullObserver):
    def __init__(self) -> None:
        self.lags: list[dict] = []
        self.commits = 0
        self.stalls: list[dict] = []

    def lag(self, lags: dict) -> None:
        self.lags.append(dict(lags))

    def committed(self, points: dict) -> None:
        self.commits += 1

    def stalled(self, partitions: dict) -> None:
        self.stalls.append(dict(partitions))


@pytest.mark.broker
def test_the_backlog_is_known_before_the_first_batch_is_scored(broker, names) -> None:
    topic, group = names("lag"), names("group")
    broker.create_topics([(topic, 1)])
    produce(broker.bootstrap, topic, ((0, traffic.encode(r), None) for r in
                                      traffic.wire_records(3_000, seed=2,
                                                           start_ms=traffic.FIXED_START_MS)))
    observer = _Lags()
    source = KafkaSource(KafkaSettings(bootstrap_servers=[broker.bootstrap], topic=topic,
                                       group_id=group, max_poll_records=500),
                         observer=observer)
    source.open()
    try:
        deadline = time.monotonic() + 60
        while not source.poll(0.5) and time.monotonic() < deadline:
            pass
        assert observer.commits == 0 and observer.lags, "no lag before the first commit"
        assert observer.lags[-1][(topic, 0)] >= 2_500
    finally:
        source.close()


@pytest.mark.broker
def test_a_dead_letter_that_cannot_be_written_stalls_its_partition_and_no_other(
        broker, names) -> None:
    topic, dlq, group = names("stall"), names("stall-dlq"), names("group")
    broker.create_topics([(topic, 2), (dlq, 1)])
    valid = [traffic.encode(r) for r in
             traffic.wire_records(400, seed=4, start_ms=traffic.FIXED_START_MS)]
    messages = [(0, b"{not json", None)] + [(i % 2, v, None) for i, v in enumerate(valid)]
    ends = produce(broker.bootstrap, topic, messages)
    observer = _Lags()
    source = KafkaSource(
        KafkaSettings(bootstrap_servers=[broker.bootstrap], topic=topic, group_id=group,
                      dead_letter_topic=dlq, commit_interval_ms=100, dead_letter_attempts=2),
        batch=BatchSettings(max_records=50, max_wait_ms=20), observer=observer)
    source.open()
    assert source._dead_letters is not None
    real_send = source._dead_letters._producer.send
    broken = threading.Event()
    broken.set()

    def send(*args, **kwargs):  # the broker refuses dead letters until `broken` is cleared
        if broken.is_set():
            raise KafkaTimeoutError("dead-letter topic unavailable")
        return real_send(*args, **kwargs)

    source._dead_letters._producer.send = send  # type: ignore[method-assign]
    source._dead_letters.stuck_retry_s = 2.0  # 30 s in a daemon
    scored: list[str] = []
    stop = threading.Event()
    loop = threading.Thread(target=StreamProcessor(
        source, lambda b: scored.extend(r.request_id for r in b.records)).run, args=(stop,))
    loop.start()
    try:
        wait_for(lambda: (topic, 0) in source.stalled, 60, "partition 0 to stall")
        wait_for(lambda: committed(broker.bootstrap, group, topic, 2)[1] == ends[1], 60,
                 "partition 1 to be committed to its end")
        assert (committed(broker.bootstrap, group, topic, 2)[0] or 0) == 0  # held at the pill
        assert observer.stalls[-1].keys() == {(topic, 0)}
        broken.clear()  # the dead-letter topic is back: the slow retry writes the letter
        wait_for(lambda: committed(broker.bootstrap, group, topic, 2) == ends, 60,
                 "partition 0 to resume and commit to its end")
        assert not source.stalled and observer.stalls[-1] == {}
    finally:
        stop.set()
        loop.join(60)
    assert len(set(scored)) == 400
    [letter] = read_topic(broker.bootstrap, dlq, 1, 1)
    assert letter.value == b"{not json"
