"""Unit tests for consumers.processor.BatchWorker: retries, then record-by-record isolation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from consumers.batcher import Batch, Batcher
from consumers.processor import BatchWorker, Settle, StreamProcessor, _Done
from consumers.settings import KafkaSettings
from consumers.wire import Origin, Record


def _batch(*request_ids: str, partition: int = 0) -> Batch:
    return Batch(
        [Record(request_id=rid) for rid in request_ids],
        [(Origin("traffic", partition, i),) for i in range(len(request_ids))],
    )


class Model:
    """A process function: rejects the whole batch if any record is poison, else records ids."""

    def __init__(self, poison: frozenset[str] = frozenset()) -> None:
        self.poison = poison
        self.processed: list[str] = []
        self.calls: list[int] = []  # batch size of every call, including failed ones
        self._lock = threading.Lock()

    def __call__(self, batch: Batch) -> None:
        with self._lock:
            self.calls.append(len(batch.records))
        bad = [r.request_id for r in batch.records if r.request_id in self.poison]
        if bad:
            raise ValueError(f"cannot score {bad[0]}")
        with self._lock:
            self.processed.extend(r.request_id for r in batch.records)


@pytest.fixture
def workers() -> Iterator[list[BatchWorker]]:
    started: list[BatchWorker] = []
    yield started
    for worker in started:
        worker.stop()


def _collect(worker: BatchWorker, expected: int) -> list[_Done]:
    done: list[_Done] = []
    for _ in range(expected):  # each call blocks for at least one result
        if len(done) == expected:
            break
        done += worker.finished(wait_s=5)
    assert len(done) == expected
    return done


def test_a_poison_record_fails_alone_after_retries_and_the_rest_are_processed(
    workers: list[BatchWorker],
) -> None:
    model = Model(poison=frozenset({"poison"}))
    worker = BatchWorker(model, attempts=2)
    workers.append(worker)
    batch = _batch("a", "b", "poison", "c")

    worker.submit(batch)
    (done,) = _collect(worker, 1)

    assert done.batch is batch
    assert set(done.failures) == {2}
    assert done.failures[2].startswith("ValueError")
    assert "cannot score poison" in done.failures[2]
    assert model.processed == ["a", "b", "c"]
    # Two attempts on the whole batch, then each of the four records alone.
    assert model.calls == [4, 4, 1, 1, 1, 1]
    assert worker.in_flight == 0


def test_a_batch_that_works_is_processed_once_with_no_failures(
    workers: list[BatchWorker],
) -> None:
    model = Model()
    worker = BatchWorker(model, attempts=1)
    workers.append(worker)
    batches = [_batch("a", "b"), _batch("c", partition=1), _batch("d", "e", "f")]

    for batch in batches:
        worker.submit(batch)
    assert worker.in_flight == 3
    done = _collect(worker, 3)

    assert [d.batch for d in done] == batches  # one worker thread: done in submit order
    assert all(d.failures == {} for d in done)
    assert model.processed == ["a", "b", "c", "d", "e", "f"]
    assert model.calls == [2, 1, 3]
    assert worker.in_flight == 0


def test_a_failing_batch_does_not_stop_the_worker(workers: list[BatchWorker]) -> None:
    model = Model(poison=frozenset({"x", "y"}))
    worker = BatchWorker(model, attempts=1)
    workers.append(worker)
    worker.submit(_batch("x", "y"))
    worker.submit(_batch("ok"))

    first, second = _collect(worker, 2)

    assert first.failures == {0: "ValueError: cannot score x", 1: "ValueError: cannot score y"}
    assert second.failures == {}
    assert model.processed == ["ok"]


def test_finished_without_waiting_returns_nothing_when_idle(workers: list[BatchWorker]) -> None:
    worker = BatchWorker(Model(), attempts=1)
    workers.append(worker)
    assert worker.finished() == []
    assert worker.in_flight == 0


def test_a_batch_that_settles_later_is_done_only_then_and_the_next_is_processed_meanwhile(
    workers: list[BatchWorker],
) -> None:
    """The score stage's broker acknowledgements: batch 1 waits for its settle while batch 2
    is processed and finished; batch 1 is done (committable) only once its settle returns,
    and one whose settle is cancelled comes back cancelled (uncommitted)."""
    from consumers.processor import Cancelled

    acked = {"b1": threading.Event(), "b3": threading.Event()}
    processed: list[str] = []

    def process(batch: Batch) -> Settle | None:
        rid = batch.records[0].request_id
        processed.append(rid)
        if rid == "b2":
            return None

        def settle() -> None:
            acked[rid].wait(10)
            if rid == "b3":
                raise Cancelled("stopping")

        return settle

    worker = BatchWorker(process, attempts=1)
    workers.append(worker)
    for rid in ("b1", "b2", "b3"):
        worker.submit(_batch(rid))
    first = _collect(worker, 1)
    assert [d.batch.records[0].request_id for d in first] == ["b2"]
    assert processed == ["b1", "b2", "b3"]  # all processed while b1 still waits
    assert worker.in_flight == 2
    acked["b1"].set()
    acked["b3"].set()
    rest = _collect(worker, 2)
    assert [(d.batch.records[0].request_id, d.cancelled) for d in rest] == [
        ("b1", False), ("b3", True)]
    assert worker.in_flight == 0


def test_idle_means_no_batch_queued_or_processing_even_while_one_settles(
    workers: list[BatchWorker],
) -> None:
    release, settled = threading.Event(), threading.Event()
    entered = threading.Event()

    def process(batch: Batch) -> Settle | None:
        entered.set()
        release.wait(10)
        return lambda: settled.wait(10) and None

    worker = BatchWorker(process, attempts=1)
    workers.append(worker)
    assert worker.idle
    worker.submit(_batch("a"))
    assert entered.wait(10)
    assert not worker.idle  # processing
    release.set()
    _wait(lambda: worker.idle)
    assert worker.in_flight == 1  # idle, though its batch still waits on its settle
    settled.set()
    assert [d.cancelled for d in _collect(worker, 1)] == [False]


class _Source:
    """What StreamProcessor needs of a KafkaSource: records handed in by the test are 'read'
    at the next poll into a real Batcher whose wait (10 min) would outlast the test."""

    def __init__(self, max_records: int) -> None:
        self.settings = KafkaSettings(topic="traffic")
        self.before_revoke: object = None
        self.paused = False
        self.acked: list[list[str]] = []
        self._batcher = Batcher(max_records, 600.0)
        self._incoming: list[Record] = []
        self._lock = threading.Lock()

    def hand(self, *request_ids: str) -> None:
        with self._lock:
            self._incoming += [Record(request_id=rid) for rid in request_ids]

    def poll(self, timeout_s: float) -> int:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for i, record in enumerate(incoming):
            self._batcher.add(record, (Origin("traffic", 0, i),))
        if not incoming:
            time.sleep(min(timeout_s, 0.01))
        return len(incoming)

    def take_ready(self, force: bool = False) -> list[Batch]:
        batch = self._batcher.take(force=force)
        return [] if batch is None else [batch]

    def time_to_next_batch(self) -> float:
        return self._batcher.time_left()

    def ack(self, batch: Batch, failures: dict[int, str] | None = None) -> None:
        self.acked.append([r.request_id for r in batch.records])

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def commit(self, force: bool = False, blocking: bool = True) -> dict[object, int]:
        return {}

    def close(self) -> str:
        return "closed"


def test_an_idle_worker_takes_what_was_read_at_once_and_a_busy_one_lets_batches_fill() -> None:
    """Natural batching: the first record does not wait out the batch's 10 minutes, since the
    worker has nothing else to do; what arrives while the worker is busy fills a batch."""
    source = _Source(max_records=3)
    busy, release = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def process(batch: Batch) -> None:
        calls.append([r.request_id for r in batch.records])
        busy.set()
        release.wait(10)

    stop = threading.Event()
    loop = threading.Thread(target=StreamProcessor(source, process).run,  # type: ignore[arg-type]
                            args=(stop,))
    loop.start()
    try:
        source.hand("a")
        assert busy.wait(30), "an idle worker was not handed the record read"
        for rid in ("b", "c", "d"):  # read in three polls while the worker is busy
            source.hand(rid)
            _wait(lambda: not source._incoming)
        release.set()
        _wait(lambda: len(source.acked) == 2)
    finally:
        release.set()
        stop.set()
        loop.join(30)
    assert calls == [["a"], ["b", "c", "d"]]
    assert source.acked == calls


def _wait(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_batch_whose_settle_fails_goes_through_again_record_by_record(
    workers: list[BatchWorker],
) -> None:
    """A settle raising anything but Cancelled left its batch unfinished: never acknowledged,
    so its partitions' commits stopped at it until a restart. Now its records are processed
    and settled one at a time: those that settle are done, the others dead-lettered."""
    processed: list[list[str]] = []

    def process(batch: Batch) -> Settle | None:
        ids = [r.request_id for r in batch.records]
        processed.append(ids)

        def settle() -> None:
            if len(ids) > 1 or ids == ["c"]:  # the whole batch's settle, and c's alone
                raise RuntimeError(f"not acknowledged: {ids}")

        return settle

    worker = BatchWorker(process, attempts=1)
    workers.append(worker)
    worker.submit(_batch("a", "b", "c"))
    [done] = _collect(worker, 1)
    assert not done.cancelled  # finished: its offsets may be committed
    assert done.failures == {2: "RuntimeError: not acknowledged: ['c']"}
    assert processed == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert worker.in_flight == 0
