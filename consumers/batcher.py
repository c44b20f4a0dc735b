"""Micro-batches bounded by record count and by the wait of their oldest record."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from consumers.wire import Origin, Record


@dataclass(frozen=True, slots=True)
class Batch:
    """Records to process and, for each, the Kafka positions it accounts for (acked together)."""

    records: list[Record]
    origins: list[tuple[Origin, ...]]

    def positions(self) -> Iterator[Origin]:
        for origins in self.origins:
            yield from origins


class Batcher:
    """Collects records into a batch that is due when full or when its oldest has waited."""

    def __init__(
        self, max_records: int, max_wait_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_records = max_records
        self.max_wait_seconds = max_wait_seconds
        self._clock = clock
        self._records: list[Record] = []
        self._origins: list[tuple[Origin, ...]] = []
        self._opened: float | None = None

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: Record, origins: tuple[Origin, ...]) -> None:
        if self._opened is None:
            self._opened = self._clock()
        self._records.append(record)
        self._origins.append(origins)

    def full(self) -> bool:
        return len(self._records) >= self.max_records

    def time_left(self) -> float:
        """Seconds until the open batch is due; inf when none is open."""
        if self._opened is None:
            return float("inf")
        return max(0.0, self._opened + self.max_wait_seconds - self._clock())

    def take(self, force: bool = False) -> Batch | None:
        """The open batch when it is full, due, or forced; else None."""
        if not self._records or not (force or self.full() or self.time_left() <= 0):
            return None
        batch = Batch(self._records, self._origins)
        self._records, self._origins, self._opened = [], [], None
        return batch

    def drop(self, partitions: Iterable[tuple[str, int]]) -> list[Origin]:
        """Remove records with any origin in these partitions; return all their origins."""
        gone = set(partitions)
        keep = [not any(o[:2] in gone for o in origins) for origins in self._origins]
        dropped = [
            o for k, origins in zip(keep, self._origins, strict=True) if not k for o in origins
        ]
        self._records = [r for k, r in zip(keep, self._records, strict=True) if k]
        self._origins = [o for k, o in zip(keep, self._origins, strict=True) if k]
        if not self._records:
            self._opened = None
        return dropped
