"""The poll loop: source -> one worker thread -> acks -> commits, with pause/resume backpressure.

The poll thread owns the Kafka consumer (it is not thread-safe); the worker thread
owns the model. Batches cross by queue and come back the same way, so a slow
model pauses partitions instead of starving heartbeats or the commit loop.

A batch whose last step waits on someone else (the score stage's broker
acknowledgements) returns that wait as a `Settle`; a settling thread waits on it
while the worker scores the next batch, and only then is the batch done (and its
offsets committable). A settle that fails (not a stop) has the batch's records processed and
settled again one at a time, as a batch that fails does.

A stop never waits on the model without polling: the poll thread keeps the group
membership alive while the worker finishes, then cancels what is left (`cancel`, which
`process` checks between sub-batches, raising `Cancelled`); cancelled batches stay
uncommitted, to be read again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from consumers.batcher import Batch
from consumers.source import KafkaSource

log = logging.getLogger(__name__)

_POLL_CAP_S = 0.1  # bounds how late a due batch or a stop request is noticed
WORKER_THREAD = "driftwatch-worker"


class Cancelled(Exception):
    """Raised by `process` when the stop's cancel event is set: the batch is left unfinished."""


# What `process` may return: a wait that returns once the batch's effects are durable (raising
# Cancelled when the stop's cancel event ends it first). None: the batch is done already.
Settle = Callable[[], None]
T = TypeVar("T")


def retry_while_waiting(attempt: Callable[[], T], errors: tuple[type[Exception], ...],
                        refused: Callable[[Exception, float], None],
                        cancel: threading.Event, stopping: str) -> T:
    """`attempt()`'s result, tried again while it raises one of `errors` (a durable write a
    full disk refuses), the batch waiting in the worker: raised, the batch would run again
    through every stage. Each refusal goes to `refused(error, seconds until the next try)`;
    the wait doubles from 0.5 s to 30 s, and `cancel` (a stop that can wait no longer) ends
    it with Cancelled(`stopping`), leaving the batch uncommitted, to be read again."""
    delay = 0.5
    while True:
        try:
            return attempt()
        except errors as exc:
            refused(exc, delay)
            if cancel.wait(delay):
                raise Cancelled(stopping) from exc
            delay = min(delay * 2, 30.0)


@dataclass(frozen=True, slots=True)
class _Alone:
    """A batch whose settle failed: to be processed again one record at a time."""

    batch: Batch


@dataclass(frozen=True, slots=True)
class _Done:
    batch: Batch
    failures: dict[int, str] = field(default_factory=dict)
    cancelled: bool = False


class BatchWorker:
    """Runs `process` on batches in its own thread. A batch that raises is retried, then each
    record is processed alone so one bad record cannot sink its batch or the daemon. Once
    `cancel` is set, batches raising Cancelled, and those still queued, come back cancelled."""

    def __init__(self, process: Callable[[Batch], Settle | None], attempts: int = 3,
                 cancel: threading.Event | None = None) -> None:
        self._process = process
        self._attempts = attempts
        self.cancel = cancel or threading.Event()
        self._todo: queue.Queue[Batch | _Alone | None] = queue.Queue()
        self._settling: queue.Queue[tuple[Batch, Settle] | None] = queue.Queue()
        self._done: queue.Queue[_Done] = queue.Queue()
        self._in_flight = 0
        self._thread = threading.Thread(target=self._run, name=WORKER_THREAD, daemon=True)
        self._thread.start()
        self._settler = threading.Thread(target=self._settle_run, name="driftwatch-settle",
                                         daemon=True)
        self._settler.start()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def idle(self) -> bool:
        """No batch queued or being processed (one waiting on its settle does not count)."""
        return self._todo.unfinished_tasks == 0

    def submit(self, batch: Batch) -> None:
        self._in_flight += 1
        self._todo.put(batch)

    def finished(self, wait_s: float = 0.0) -> list[_Done]:
        out: list[_Done] = []
        try:
            out.append(self._done.get(timeout=wait_s) if wait_s > 0 else self._done.get_nowait())
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        self._in_flight -= len(out)
        return out

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the thread to end after the batch in hand; True if it did within `timeout_s`.
        A thread still inside native model code is left alone (tearing down a running
        native thread pool aborts the process); see `busy_threads`."""
        deadline = time.monotonic() + timeout_s
        self._todo.put(None)
        self._thread.join(timeout=timeout_s)
        self._settling.put(None)
        self._settler.join(timeout=max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            batch = item.batch if isinstance(item, _Alone) else item
            if self.cancel.is_set():
                self._done.put(_Done(batch, cancelled=True))
            elif isinstance(item, _Alone):
                self._done.put(self._one_by_one(batch))
            elif isinstance(outcome := self._handle(batch), _Done):
                self._done.put(outcome)
            else:
                self._settling.put((batch, outcome))
            self._todo.task_done()

    def _settle_run(self) -> None:
        while (item := self._settling.get()) is not None:
            batch, settle = item
            try:
                settle()
                self._done.put(_Done(batch))
            except Cancelled:
                self._done.put(_Done(batch, cancelled=True))
            except Exception:
                # Left unfinished, its offsets would hold its partitions' commits back until
                # a restart; record by record, each is settled or dead-lettered.
                log.exception("a batch of %d could not be settled; processing its records "
                              "one at a time", len(batch.records))
                self._todo.put(_Alone(batch))

    def _handle(self, batch: Batch) -> _Done | Settle:
        for attempt in range(1, self._attempts + 1):
            try:
                settle = self._process(batch)
                return _Done(batch) if settle is None else settle
            except Cancelled:
                return _Done(batch, cancelled=True)
            except Exception as exc:  # the daemon must outlive any batch
                log.warning("batch of %d failed (attempt %d/%d): %r",
                            len(batch.records), attempt, self._attempts, exc)
                time.sleep(0.05 * attempt)
        return self._one_by_one(batch)

    def _one_by_one(self, batch: Batch) -> _Done:
        failures: dict[int, str] = {}
        for i, (record, origins) in enumerate(zip(batch.records, batch.origins, strict=True)):
            try:
                if (settle := self._process(Batch([record], [origins]))) is not None:
                    settle()
            except Cancelled:
                return _Done(batch, cancelled=True)
            except Exception as exc:
                failures[i] = f"{type(exc).__name__}: {exc}"
        if failures:
            log.error("%d of %d records failed alone; sent to the dead-letter topic",
                      len(failures), len(batch.records))
        else:
            log.info("the %d records went through one at a time", len(batch.records))
        return _Done(batch, failures)


def busy_threads() -> list[str]:
    """Worker threads still running (inside a model call that could not be cancelled)."""
    return [t.name for t in threading.enumerate() if t.name == WORKER_THREAD and t.is_alive()]


class StreamProcessor:
    """Runs the poll loop: batches to the worker, acks, commits and backpressure."""

    def __init__(
        self,
        source: KafkaSource,
        process: Callable[[Batch], Settle | None],
        max_in_flight: int = 8,
        on_loop: Callable[[], None] = lambda: None,
        shutdown_timeout_s: float = 20.0,
        cancel: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.max_in_flight = max_in_flight
        self.shutdown_timeout_s = shutdown_timeout_s
        self._worker = BatchWorker(process, cancel=cancel)
        self._on_loop = on_loop
        self._draining = False
        # What the final commit did, for the last log line.
        self.summary = "not started"
        # A rebalance waits for us no longer than the poll interval: finish what fits in half
        # of it; the rest stays uncommitted and the partition's next owner re-reads it.
        revoke_budget_s = source.settings.max_poll_interval_ms / 2_000
        source.before_revoke = lambda: None if self._draining else self.drain(revoke_budget_s)

    def run(self, stop: threading.Event) -> None:
        """Poll, hand batches to the worker, ack and commit until `stop` is set; then finish
        the batches in hand for up to `shutdown_timeout_s` (polling all along, partitions
        paused, so the group keeps us), cancel what is left, commit, and leave the group."""
        source = self.source
        try:
            while not stop.is_set():
                source.poll(min(_POLL_CAP_S, source.time_to_next_batch()))
                # Natural batching: waiting for a batch to fill only pays while the worker is
                # busy. An idle worker takes what was read at once, so a record waits for
                # max_wait_ms only behind other work, and no core idles at a burst's end.
                for batch in source.take_ready(force=self._worker.idle):
                    self._worker.submit(batch)
                self._ack(self._worker.finished())
                # Hysteresis: kafka-python drops what it prefetched for a paused partition, so
                # pausing and resuming on every batch would refetch the same data over and over.
                if self._worker.in_flight >= self.max_in_flight:
                    source.pause()
                elif source.paused and self._worker.in_flight <= self.max_in_flight // 2:
                    source.resume()
                source.commit()
                self._on_loop()
            source.pause()
            self.drain(self.shutdown_timeout_s, keep_polling=True)
        finally:
            self._worker.cancel.set()
            if self._worker.in_flight:  # cancelled between sub-batches: seconds at most
                self._settle(5.0)
            self.summary = source.close()
            if not self._worker.stop(timeout_s=2.0):
                log.warning("the worker is still inside a model call; its batch stays "
                            "uncommitted and is read again on restart")

    def drain(self, timeout_s: float, keep_polling: bool = False) -> None:
        """Process what was read so far and ack it, for at most `timeout_s` (shutdown and
        rebalance); whatever is unfinished then stays uncommitted, to be read again.
        `keep_polling` (shutdown, on the poll thread): poll while waiting, so the group does
        not evict us for missing max_poll_interval_ms."""
        self._draining = True
        try:
            for batch in self.source.take_ready(force=True):
                self._worker.submit(batch)
            self._settle(timeout_s, keep_polling)
        finally:
            self._draining = False
        if self._worker.in_flight:
            log.warning("%d batch(es) unfinished after %.0fs; their offsets stay uncommitted",
                        self._worker.in_flight, timeout_s)

    def _settle(self, timeout_s: float, keep_polling: bool = False) -> None:
        deadline = time.monotonic() + timeout_s
        while self._worker.in_flight and (left := deadline - time.monotonic()) > 0:
            if keep_polling:
                self.source.poll(0)  # paused: keeps membership, reads nothing
                self._ack(self._worker.finished(wait_s=min(0.2, left)))
            else:
                self._ack(self._worker.finished(wait_s=min(1.0, left)))

    def _ack(self, done: list[_Done]) -> None:
        for d in done:
            if not d.cancelled:
                self.source.ack(d.batch, d.failures)
