"""Unit tests for consumers.processor.BatchWorker: retries, then record-by-record isolation."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from consumers.batcher import Batch
from consumers.processor import BatchWorker, _Done
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
    from consumers.processor import Cancelled, Settle

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
