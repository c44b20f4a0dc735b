"""The decide stage's tasks: one pipeline and checkpoint per scored partition, saved before
commits and handed over with the partition."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from consumers.batcher import Batch
from consumers.wire import Origin, Record
from monitor.config.checkpoint import CheckpointSettings
from monitor.pipeline.checkpoint import Checkpointer, read
from monitor.pipeline.pipeline import Pipeline
from monitor.pipeline.stages import OperationalStage, Work
from monitor.pipeline.tasks import DecideTasks, Task, task_path


class Counting:
    """A stage whose state is the request ids it has seen."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process(self, work: Work) -> None:
        if work.stateful:
            self.seen += [r.request_id for r in work.batch.records]

    def state(self) -> dict[str, object]:
        return {"seen": list(self.seen)}

    def restore(self, parts: Mapping[str, object]) -> None:
        self.seen = list(parts["seen"])  # type: ignore[call-overload]

    def close(self) -> None:
        return None


def _tasks(directory: Path, built: list[Counting]) -> DecideTasks:
    def build(checkpoints: Checkpointer | None) -> Task:
        stage = Counting()
        built.append(stage)
        return Task(Pipeline(OperationalStage([], [], 10), [stage], checkpoints))

    def open_checkpoints(partition: tuple[str, int]) -> Checkpointer:
        settings = CheckpointSettings(path=task_path(directory, partition))
        return Checkpointer(settings, {"seen": "v1", "segments": "v1"})

    return DecideTasks(build, open_checkpoints)


def _batch(*items: tuple[int, int]) -> Batch:
    return Batch([Record(request_id=f"p{p}-{o}") for p, o in items],
                 [(Origin("scored", p, o),) for p, o in items])


def test_each_partition_has_a_task_and_its_state_moves_with_it(tmp_path: Path) -> None:
    built: list[Counting] = []
    first = _tasks(tmp_path, built)
    first.process(_batch((0, 0), (1, 0), (0, 1)))
    assert first.partitions == {("scored", 0), ("scored", 1)}
    assert sorted(s.seen for s in built) == [["p0-0", "p0-1"], ["p1-0"]]  # routed by partition
    assert first.save() is True  # before a commit: both changed, both written
    assert task_path(tmp_path, ("scored", 0)).exists()
    assert task_path(tmp_path, ("scored", 1)).exists()
    first.process(_batch((1, 1)))
    first.release({("scored", 1)})  # revoked: saved, dropped, its file lock let go
    assert first.partitions == {("scored", 0)}

    # The next owner of partition 1 resumes its state from the file, and a record the state
    # already holds (offset 1, read again after the commit) is not applied twice.
    built_again: list[Counting] = []
    second = _tasks(tmp_path, built_again)
    second.process(_batch((1, 1), (1, 2)))
    assert built_again[0].seen == ["p1-0", "p1-1", "p1-2"]
    first.close()
    second.close()


def test_a_lost_partition_is_dropped_without_writing_over_the_next_owner(
        tmp_path: Path) -> None:
    built: list[Counting] = []
    tasks = _tasks(tmp_path, built)
    tasks.process(_batch((0, 0)))
    assert tasks.save()
    tasks.process(_batch((0, 1)))  # applied, not checkpointed yet
    tasks.release({("scored", 0)}, lost=True)
    # The file still holds the last save (offset 0 applied): a lost task writes nothing.
    assert read(task_path(tmp_path, ("scored", 0))).positions == {("scored", 0): 1}
    resumed: list[Counting] = []
    _tasks(tmp_path, resumed).process(_batch((0, 1)))
    assert resumed[0].seen == ["p0-0", "p0-1"]  # from the last save, then the replay applied
