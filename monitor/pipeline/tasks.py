"""The decide stage's state, one task per partition of the scored topic, as Kafka Streams
keeps one task per input partition: a task is a `Pipeline` (drift, rules, canary gate) of its
own with a checkpoint file of its own, and it moves with its partition.

A task starts the first time its partition delivers a batch, from that partition's checkpoint
when there is one (its previous owner's state: no new warm-up), and is saved and dropped when
the partition is taken away. Before every offset commit the tasks that changed are saved, so
a checkpoint always covers what is committed: after a crash the next owner replays the
uncommitted records, applies those past the checkpoint and skips the rest (see `ledger`).

The checkpoint files are keyed by partition under one directory, which every decide instance
must reach (a shared volume in a split deployment): the state of a segment holds reference
embeddings and calibrated detectors, megabytes that a changelog topic's message limit would
have to chop up, and a file per partition is what the single daemon already writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumers.batcher import Batch
from consumers.offsets import Partition
from monitor.pipeline.checkpoint import Checkpointer, CheckpointError, CheckpointInUse, read
from monitor.pipeline.drift import DriftStage
from monitor.pipeline.pipeline import Pipeline

log = logging.getLogger(__name__)

# How long a new owner waits for the previous one to let go of a partition's checkpoint (a
# member that lost its partitions but still runs holds the file lock until it notices).
_LOCK_WAIT_S = 60.0


@dataclass
class Task:
    """One partition's pipeline, and the parts of it the endpoints ask about."""

    pipeline: Pipeline
    canary: Any = None  # a CanaryGate (acting, a layer above): status(), restore()
    drift: DriftStage | None = None
    checkpoints: Checkpointer | None = None
    shadow: Any = None  # a ShadowGate: status()


def task_path(directory: Path, partition: Partition) -> Path:
    topic, number = partition
    return directory / f"{topic}-{number}.ckpt"


class DecideTasks:
    """Routes each scored record to its partition's task; saves and drops tasks as the
    group moves partitions. `build(checkpoints)` makes one task's pipeline."""

    def __init__(self, build: Callable[[Checkpointer | None], Task],
                 checkpoints: Callable[[Partition], Checkpointer] | None) -> None:
        self._build = build
        self._checkpoints = checkpoints
        self._tasks: dict[Partition, Task] = {}
        self._lock = threading.Lock()  # the worker adds tasks, the poll thread drops them

    @property
    def partitions(self) -> frozenset[Partition]:
        return frozenset(self._tasks)

    def items(self) -> Iterator[tuple[Partition, Task]]:
        yield from list(self._tasks.items())

    def process(self, batch: Batch) -> None:
        """On the worker thread: each partition's records through that partition's task."""
        parts: dict[Partition, list[int]] = {}
        for i, origins in enumerate(batch.origins):
            parts.setdefault(origins[0][:2], []).append(i)
        for partition, idx in parts.items():
            sub = batch if len(idx) == len(batch.records) else Batch(
                [batch.records[i] for i in idx], [batch.origins[i] for i in idx])
            self._task_for(partition).process(sub)

    def save(self) -> bool:
        """Before a commit (poll thread): checkpoint every task that changed. False when one
        could not be (a batch held its lock too long): the commit waits for the next try, so
        a checkpoint never trails what is committed."""
        return all([task.pipeline.save(only_if_changed=True)
                    for task in list(self._tasks.values())])

    def checkpoint_if_due(self) -> None:
        for task in list(self._tasks.values()):
            task.pipeline.checkpoint_if_due()

    def release(self, partitions: set[Partition], lost: bool = False) -> None:
        """The group took `partitions` away: save their tasks (unless lost: the next owner
        may be writing already) and drop them."""
        with self._lock:
            gone = [(p, self._tasks.pop(p)) for p in partitions if p in self._tasks]
        for partition, task in gone:
            if lost:
                task.pipeline.discard()
            else:
                task.pipeline.close()
            if task.checkpoints is not None:
                task.checkpoints.close()
            log.info("decide task %s-%d %s", *partition, "dropped (lost)" if lost
                     else "saved and handed over")

    def close(self) -> None:
        self.release(set(self._tasks))

    def _task_for(self, partition: Partition) -> Pipeline:
        found = self._tasks.get(partition)
        if found is not None:
            return found.pipeline
        checkpoints = self._open(partition) if self._checkpoints is not None else None
        task = self._build(checkpoints)
        task.checkpoints = checkpoints
        with self._lock:
            self._tasks[partition] = task
        log.info("decide task %s-%d started", *partition)
        return task.pipeline

    def _open(self, partition: Partition) -> Checkpointer:
        assert self._checkpoints is not None
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                return self._checkpoints(partition)
            except CheckpointInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


class TaskViews:
    """What the HTTP endpoints ask of the decide stage, across its tasks: the canary gate's
    status (`/canary`) and drift rollovers (`/admin/reference/rollover`).

    A model's verdict is made by the one task that owns its partition. This instance answers
    for the models it owns from their live gates, and for every other model from that model's
    owner's latest checkpoint in the shared directory (marked with where it came from and when),
    so every instance gives the same verdict and none makes one of its own on part of the data.
    """

    def __init__(self, tasks: DecideTasks, directory: Path | None,
                 new_gate: Callable[[], Any] | None) -> None:
        self._tasks = tasks
        self._directory = directory
        self._new_gate = new_gate  # an empty CanaryGate, to read a peer's state into
        self._peers: dict[Path, tuple[float, dict[str, object]]] = {}

    def status(self) -> dict[str, object]:
        assert self._new_gate is not None
        base = self._new_gate().status()
        models: dict[str, object] = {}
        for partition, task in self._tasks.items():
            if task.canary is None:
                continue
            for name, verdict in task.canary.status()["models"].items():
                models[name] = {**verdict, "owner": f"{partition[0]}-{partition[1]} (this "
                                "instance)"}
        for name, verdict in self._peer_models(self._tasks.partitions).items():
            models.setdefault(name, verdict)
        return {**base, "models": models}

    @property
    def shadow(self) -> _ShadowViews:
        return _ShadowViews(self._tasks)

    def request_rollover(self, segment: dict[str, str], reason: str = "command") -> None:
        for _, task in self._tasks.items():
            if task.drift is not None:
                task.drift.request_rollover(segment, reason)

    def _peer_models(self, owned: frozenset[Partition]) -> dict[str, object]:
        if self._directory is None or not self._directory.is_dir():
            return {}
        owned_paths = {task_path(self._directory, p) for p in owned}
        out: dict[str, object] = {}
        for path in sorted(self._directory.glob("*.ckpt")):
            if path in owned_paths:
                continue
            for name, verdict in self._peer(path).items():
                out.setdefault(name, verdict)
        return out

    def _peer(self, path: Path) -> dict[str, object]:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return {}
        cached = self._peers.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        models: dict[str, object] = {}
        try:
            checkpoint = read(path)
        except (CheckpointError, OSError) as exc:
            log.debug("peer checkpoint %s unreadable: %s", path, exc)
            return {}
        state = checkpoint.parts.get("canary")
        if isinstance(state, dict) and self._new_gate is not None:
            gate = self._new_gate()
            gate.restore(state)
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(checkpoint.written_at))
            for name, verdict in gate.status()["models"].items():
                models[name] = {**verdict, "owner": f"{path.stem} (another instance; its "
                                f"checkpoint of {when})"}
        self._peers[path] = (mtime, models)
        return models


class _ShadowViews:
    """`/shadow` across the tasks of this instance: the shadow verdicts of the models whose
    partitions it owns (a model's pairs meet in its owner's task)."""

    def __init__(self, tasks: DecideTasks) -> None:
        self._tasks = tasks

    def status(self) -> dict[str, object]:
        base: dict[str, object] = {}
        models: dict[str, object] = {}
        for partition, task in self._tasks.items():
            if task.shadow is None:
                continue
            status = task.shadow.status()
            base = {k: v for k, v in status.items() if k not in ("models", "pending")}
            for name, verdict in status["models"].items():
                models[name] = {**verdict, "owner": f"{partition[0]}-{partition[1]} (this "
                                "instance)"}
        return {**base, "models": models}
