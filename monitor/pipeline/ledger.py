"""The replay ledger: which Kafka positions the pipeline's state holds, tied to checkpoints.

Per partition it keeps the next offset whose record is not yet in the state (detectors,
rules, canary). After a restart from a checkpoint, records below the checkpoint's positions
are a replay: scored and counted again (at least once), but not applied to the state twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from consumers.batcher import Batch
from consumers.offsets import Partition
from monitor.pipeline.checkpoint import Checkpoint, Checkpointer

log = logging.getLogger(__name__)


class ReplayLedger:
    """Positions applied to the state, the replay after a resume, and when to checkpoint."""

    def __init__(self, checkpoints: Checkpointer | None = None) -> None:
        self._checkpoints = checkpoints
        self._positions: dict[Partition, int] = {}
        # Those of the checkpoint resumed from, until each partition passes them.
        self._replay: dict[Partition, int] = {}
        self._dirty = False  # state changed since the last checkpoint

    def resume(self) -> Checkpoint | None:
        """The checkpoint to restore the stages from, if any; its positions become the replay."""
        if self._checkpoints is None:
            return None
        checkpoint = self._checkpoints.load()
        if checkpoint is not None:
            self._positions = dict(checkpoint.positions)
            self._replay = dict(checkpoint.positions)
        return checkpoint

    @property
    def replaying(self) -> bool:
        return bool(self._replay)

    def split(self, batch: Batch) -> tuple[Batch, Batch]:
        """Records the checkpointed state already holds (every position below the checkpoint's)
        and the rest. A partition leaves the replay once it reaches its checkpoint position."""
        replay = self._replay
        old: list[int] = []
        for i, origins in enumerate(batch.origins):
            if all(offset < replay.get((t, p), 0) for t, p, offset in origins):
                old.append(i)
                continue
            for t, p, offset in origins:
                end = replay.get((t, p))
                if end is not None and offset >= end:
                    del replay[(t, p)]
                    if offset > end:
                        log.warning("partition %s-%d resumes at offset %d but the checkpoint "
                                    "holds its state up to %d: %d records are missing from the "
                                    "state (committed after the last checkpoint)", t, p, offset,
                                    end, offset - end)
        if not old:
            return Batch([], []), batch
        keep = set(old)
        return (Batch([batch.records[i] for i in old], [batch.origins[i] for i in old]),
                Batch([r for i, r in enumerate(batch.records) if i not in keep],
                      [o for i, o in enumerate(batch.origins) if i not in keep]))

    def applied(self, batch: Batch, state: Callable[[], dict[str, object]]) -> None:
        """`batch` is in the state now; checkpoint `state()` if one is due."""
        if self._checkpoints is None:
            return  # nothing to tie positions to: keep the hot path free of the loop
        positions = self._positions
        for origins in batch.origins:
            for topic, partition, offset in origins:
                if offset >= positions.get((topic, partition), 0):
                    positions[(topic, partition)] = offset + 1
        self._dirty = True
        self.save_if_due(state)

    def save_if_due(self, state: Callable[[], dict[str, object]]) -> None:
        if self._checkpoints is not None and self._checkpoints.due():
            self.save_if_changed(state)

    def save_if_changed(self, state: Callable[[], dict[str, object]]) -> None:
        if self._checkpoints is not None and self._dirty:
            self._checkpoints.save(self._positions, state())
            self._dirty = False

    def save(self, state: Callable[[], dict[str, object]]) -> None:
        if self._checkpoints is not None:
            self._checkpoints.save(self._positions, state())
