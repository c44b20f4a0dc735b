"""Which offsets may be committed: per partition, everything below the oldest offset not done.

Offsets finish out of order (a join half waits while later records are scored),
so the commit point only moves over a contiguous run of finished offsets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from consumers.wire import Origin

Partition = tuple[str, int]


class _PartitionOffsets:
    __slots__ = ("commit_point", "done", "first", "pending")

    def __init__(self, first: int) -> None:
        self.first = first
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.commit_point = first  # next offset to consume after everything committed-able

    def finish_many(self, offsets: list[int]) -> None:
        self.done.update(offsets)
        self.advance()

    def advance(self) -> None:
        pending, done = self.pending, self.done
        while pending and pending[0] in done:
            done.discard(pending[0])
            self.commit_point = pending.popleft() + 1


class OffsetTracker:
    """Tracks offsets in flight per partition and the points that may be committed."""

    def __init__(self) -> None:
        self._parts: dict[Partition, _PartitionOffsets] = {}
        self._committed: dict[Partition, int] = {}

    def started(self, origin: Origin) -> None:
        """An offset was read and is now in flight."""
        self.started_many(origin[:2], [origin.offset])

    def started_many(self, tp: Partition, offsets: list[int]) -> None:
        """Offsets of one partition, in the order read, are now in flight."""
        if not offsets:
            return
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _PartitionOffsets(offsets[0])
        part.pending.extend(offsets)

    def finish(self, origins: Iterable[Origin]) -> None:
        """These offsets are fully handled (scored and counted, or dead-lettered)."""
        by_partition: dict[Partition, list[int]] = {}
        for topic, partition, offset in origins:
            by_partition.setdefault((topic, partition), []).append(offset)
        for tp, offsets in by_partition.items():
            part = self._parts.get(tp)
            if part is not None:  # None: partition revoked while the batch was in flight
                part.finish_many(offsets)

    def commit_points(self) -> dict[Partition, int]:
        """Offsets to commit now (`offset + 1` of the last contiguous done), changed ones only."""
        return {
            tp: part.commit_point
            for tp, part in self._parts.items()
            if self._committed.get(tp) != part.commit_point
        }

    def position(self, tp: Partition) -> int | None:
        part = self._parts.get(tp)
        return None if part is None else part.commit_point

    def uncommitted(self) -> int:
        """Offsets read and not yet covered by a commit (finished or not)."""
        return sum(len(p.pending) + p.commit_point - self._committed.get(tp, p.first)
                   for tp, p in self._parts.items())

    def in_flight(self) -> int:
        return sum(len(p.pending) for p in self._parts.values())

    def mark_committed(self, points: dict[Partition, int]) -> None:
        self._committed.update(points)

    def forget(self, partitions: Iterable[Partition]) -> None:
        for tp in partitions:
            self._parts.pop(tp, None)
            self._committed.pop(tp, None)
