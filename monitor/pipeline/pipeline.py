"""The pipeline: one micro-batch in, scores, counts and decisions out. Runs on the worker
thread. It only orders its stages (see `stages`) and ties their state to Kafka positions
(see `ledger`); what each stage does lives with the stage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from consumers.batcher import Batch
from consumers.processor import Settle
from consumers.wire import Record
from monitor.pipeline.checkpoint import Checkpointer
from monitor.pipeline.ledger import ReplayLedger
from monitor.pipeline.stages import OperationalStage, Stage, Work
from monitor.telemetry.metrics import METRICS, Metrics

log = logging.getLogger(__name__)


class Pipeline:
    """Runs each batch through the operational stage, then `stages` in order, and checkpoints
    their state with the positions it covers."""

    def __init__(self, operational: OperationalStage, stages: Sequence[Stage] = (),
                 checkpoints: Checkpointer | None = None, metrics: Metrics = METRICS,
                 begin: Callable[[OperationalStage, Batch, bool], Work] | None = None) -> None:
        """`begin`: how a batch becomes a `Work` (default: wire records, scored here; the
        decide stage's tasks pass `scored.beginner(intake)`, for records the score stage
        scored)."""
        self._m = metrics
        self._begin = begin or _begin
        self.operational = operational
        self._stages: list[Stage] = [operational, *stages]  # in the order they run
        self._ledger = ReplayLedger(checkpoints)
        self._lock = threading.Lock()  # a checkpoint at close never sees a batch half-applied
        checkpoint = self._ledger.resume()
        if checkpoint is not None:
            for stage in self._stages:
                stage.restore(checkpoint.parts)

    def close(self) -> None:
        """Write the last checkpoint (unless a batch is still stuck in the worker)."""
        if not self.save():
            log.warning("no checkpoint at shutdown: a batch is still being processed")
        for stage in self._stages:
            stage.close()

    def discard(self) -> None:
        """Close without a checkpoint (the state is another owner's now)."""
        for stage in self._stages:
            stage.close()

    def save(self, only_if_changed: bool = False) -> bool:
        """Checkpoint now, between two batches; False when a batch held on for 5 s."""
        if not self._lock.acquire(timeout=5.0):
            return False
        try:
            if only_if_changed:
                self._ledger.save_if_changed(self.state)
            else:
                self._ledger.save(self.state)
            return True
        finally:
            self._lock.release()

    def state(self) -> dict[str, object]:
        """What a checkpoint holds, by part."""
        parts: dict[str, object] = {}
        for stage in self._stages:
            parts.update(stage.state())
        return parts

    def process(self, batch: Batch) -> Settle | None:
        """Run the stages on `batch`; what is returned, when not None, must return before the
        batch counts as done (see `consumers.processor.Settle`)."""
        with self._lock:
            settles = []
            if self._ledger.replaying:
                replayed, batch = self._ledger.split(batch)
                if replayed.records:
                    self._m.CHECKPOINT_REPLAYED.inc(len(replayed.records))
                    settles.append(self._process(replayed, stateful=False))
            settles.append(self._process(batch))
            self._ledger.applied(batch, self.state)
        return _in_turn([s for s in settles if s is not None])

    def checkpoint_if_due(self) -> None:
        """From another thread (the poll loop): checkpoint what an idle stream left unsaved.
        Skipped while a batch is being processed; that batch checkpoints itself when due."""
        if self._lock.acquire(blocking=False):
            try:
                self._ledger.save_if_due(self.state)
            finally:
                self._lock.release()

    def _process(self, batch: Batch, stateful: bool = True) -> Settle | None:
        """Score and count a batch; `stateful`: also feed the detectors, rules and canary."""
        started = time.perf_counter()
        records = batch.records
        if not records:
            return None
        work = self._begin(self.operational, batch, stateful)
        for stage in self._stages:
            stage.process(work)
        self.operational.count(work)
        self._m.BATCH_SIZE.observe(len(records))
        self._m.BATCH_SECONDS.observe(time.perf_counter() - started)
        return work.settle


def _in_turn(waits: list[Settle]) -> Settle | None:
    if len(waits) < 2:
        return waits[0] if waits else None

    def settle() -> None:
        for wait in waits:
            wait()

    return settle


def _begin(operational: OperationalStage, batch: Batch, stateful: bool) -> Work:
    records = batch.records
    return Work(operational.scored(records), batch.origins, event_times(records), stateful)


def event_times(records: Sequence[Record]) -> np.ndarray:
    """Each record's event time in seconds, NaN where it has none."""
    return np.array([np.nan if (t := r.event_time) is None else t for r in records])
