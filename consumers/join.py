"""Pairs request and response halves by request_id inside a bounded window (time, count and
bytes).

A half that waits longer than the window, or is pushed out by the count or byte bound,
comes back from `expired()` so the caller can score it alone or dead-letter it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from consumers.wire import Origin, Record, merge_halves

Side = Literal["request", "response"]


@dataclass(frozen=True, slots=True)
class Half:
    """A request or response half waiting for its partner, with its raw bytes and origin."""

    side: Side
    record: Record
    origin: Origin
    raw: bytes
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """A request and response merged into one record, with both Kafka origins."""

    record: Record
    origins: tuple[Origin, Origin]


class Joiner:
    """Pairs request and response halves by request_id within a time window, holding at most
    `max_pending` halves and `max_pending_bytes` of their raw messages (the newest half always
    waits, however large)."""

    def __init__(
        self,
        window_seconds: float,
        max_pending: int,
        clock: Callable[[], float] = time.monotonic,
        max_pending_bytes: int | None = None,
    ) -> None:
        self.window_seconds = window_seconds
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._clock = clock
        # request_id -> (half, arrival); insertion order is arrival order, so expiry pops the front.
        self._pending: OrderedDict[str, tuple[Half, float]] = OrderedDict()
        self._evicted: list[Half] = []
        self.pending_bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def _take(self, rid: str) -> Half:
        half = self._pending.pop(rid)[0]
        self.pending_bytes -= len(half.raw)
        return half

    def _take_oldest(self) -> Half:
        half = self._pending.popitem(last=False)[1][0]
        self.pending_bytes -= len(half.raw)
        return half

    def add(self, half: Half) -> Joined | Half | None:
        """Joined when the other half was waiting; the half itself when it is a duplicate
        of one already waiting on the same side; None when it now waits."""
        rid = half.record.request_id
        waiting = self._pending.get(rid)
        if waiting is not None:
            other = waiting[0]
            if other.side == half.side:
                return half
            self._take(rid)
            request, response = (other, half) if other.side == "request" else (half, other)
            return Joined(
                merge_halves(request.record, response.record), (request.origin, response.origin)
            )
        self._pending[rid] = (half, self._clock())
        self.pending_bytes += len(half.raw)
        if len(self._pending) > self.max_pending:
            self._evicted.append(self._take_oldest())
        if self.max_pending_bytes is not None:
            while self.pending_bytes > self.max_pending_bytes and len(self._pending) > 1:
                self._evicted.append(self._take_oldest())
        return None

    def expired(self) -> list[Half]:
        """Halves whose window has closed, oldest first (count evictions included)."""
        out, self._evicted = self._evicted, []
        deadline = self._clock() - self.window_seconds
        while self._pending:
            _, arrived = next(iter(self._pending.values()))
            if arrived > deadline:
                break
            out.append(self._take_oldest())
        return out

    def drop(self, partitions: Iterable[tuple[str, int]]) -> list[Half]:
        """Forget halves read from these partitions (after a rebalance took them away)."""
        gone = set(partitions)
        dropped = [h for h, _ in self._pending.values() if h.origin[:2] in gone]
        for half in dropped:
            self._take(half.record.request_id)
        dropped += [h for h in self._evicted if h.origin[:2] in gone]
        self._evicted = [h for h in self._evicted if h.origin[:2] not in gone]
        return dropped
