"""Turns what the Kafka source reports into metrics (consumers know nothing of Prometheus)."""

from __future__ import annotations

from collections.abc import Callable

from consumers.offsets import Partition
from monitor.telemetry.metrics import METRICS, Metrics
from monitor.types import SEGMENT_LABELS, IntakeCounts

_NO_SEGMENT = ("",) * len(SEGMENT_LABELS)


class MetricsObserver:
    """Exports what the Kafka source reports, and counts its intake for dead-letter rules."""

    def __init__(self, on_lag: Callable[[int], None] = lambda total: None,
                 intake: IntakeCounts | None = None, metrics: Metrics = METRICS) -> None:
        self._m = metrics
        self._lag_series: set[Partition] = set()
        self._on_lag = on_lag
        self.intake = intake or IntakeCounts()

    def consumed(self, topic: str, count: int) -> None:
        self._m.MESSAGES_CONSUMED.labels(topic).inc(count)
        self.intake.messages += count

    def dead_lettered(self, reason: str) -> None:
        self._m.DEAD_LETTERS.labels(reason).inc()
        self.intake.dead_letters += 1
        self._m.RECORDS.labels("dead_lettered", *_NO_SEGMENT).inc()

    def duplicate(self) -> None:
        self._m.RECORDS.labels("duplicate", *_NO_SEGMENT).inc()

    def unmatched(self, side: str, outcome: str) -> None:
        self._m.JOIN_UNMATCHED.labels(side, outcome).inc()

    def lag(self, lags: dict[Partition, int]) -> None:
        for (topic, partition), lag in lags.items():
            self._m.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        self._lag_series |= lags.keys()
        self._on_lag(sum(lags.values()))

    def committed(self, points: dict[Partition, int]) -> None:
        self._m.OFFSET_COMMITS.inc(len(points))

    def dead_letter_truncated(self) -> None:
        self._m.DEAD_LETTERS_TRUNCATED.inc()

    def stalled(self, partitions: dict[Partition, str]) -> None:
        self._m.PARTITIONS_STALLED.set(len(partitions))

    def assigned(self, partitions: frozenset[Partition]) -> None:
        self._m.ASSIGNED_PARTITIONS.set(len(partitions))
        # A partition that moved to another instance is that instance's to report.
        for topic, partition in self._lag_series - partitions:
            self._m.CONSUMER_LAG.remove(topic, str(partition))
        self._lag_series &= partitions
