"""Leaf data shared by every room of `monitor`: segments, drift events, decisions.

Imports nothing of `monitor`. A decision is what a rule or the canary gate concluded, on its
way to the outbox: the outbox stores it before the batch that caused it is committed, and the
delivery worker turns it into webhooks and Alertmanager alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "EVENT_TYPES", "EXAMPLE_TEXT_CHARS", "SEGMENT_LABELS", "Decision", "DriftEvent",
    "EventType", "IntakeCounts", "Segment", "SegmentLabel", "Severity", "incident_key",
    "rfc3339",
]

# The labels that name a segment, in this order everywhere (metrics, rules, outbox, drift).
SegmentLabel = Literal["model", "model_version", "deployment", "route"]
SEGMENT_LABELS: tuple[str, ...] = SegmentLabel.__args__  # type: ignore[attr-defined]
# A segment: one value per configured label (those not configured are "").
Segment = tuple[str, ...]

EventType = Literal[
    "drift.detected", "drift.new_error_class", "quality.regressed", "canary.rollback",
    "canary.promote", "shadow.regressed", "shadow.ready", "retrain.requested",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
Severity = Literal["info", "warning", "critical"]
# Characters of each example text a drift event shows (ids only in metrics); the scored topic
# carries no more of a text than that.
EXAMPLE_TEXT_CHARS = 300


@dataclass
class IntakeCounts:
    """Messages read and dead-lettered so far: what dead-letter rules compare, as plain
    integers (kept by whoever reads the messages, never read back from metrics)."""

    messages: int = 0
    dead_letters: int = 0


@dataclass(frozen=True)
class DriftEvent:
    """A drift detector's finding in one segment, at one record of a batch."""

    # "embedding", "feature" (window test), "change" (river, early signal) or
    # "new_error_class" (stream "outcome"; examples hold the first records' ids and the class)
    kind: str
    stream: str  # prompt | response | a feature name
    segment: Segment
    index: int  # 0-based index, in the batch, of the record at which it fired
    statistic: float
    threshold: float  # embedding: the calibrated threshold; feature: the FDR level
    q_value: float = float("nan")  # feature tests: Benjamini-Hochberg adjusted p-value
    window: int | None = None  # embedding: the window length (records) that crossed
    # Window examples farthest from the reference: (request_id, text, nearest reference row).
    examples: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class Decision:
    """What a rule or the canary gate decided, with the evidence and the actions to take."""

    event_type: str  # one of EVENT_TYPES
    rule: str  # the rule's name, or "canary-gate"
    severity: str  # info | warning | critical
    # "firing" when the condition starts or is repeated after its cooldown; "resolved" when
    # it clears (only alert targets act on that: webhooks are sent for firing decisions).
    status: Literal["firing", "resolved"]
    segment: dict[str, str]  # label -> value, e.g. {"model": "m", "deployment": "canary"}
    evidence: dict[str, float]  # the figures that decided it (statistic, threshold, rate...)
    summary: str  # one line for humans; no prompt or response text, no links
    targets: tuple[str, ...]  # names of actions in the config's `actions`
    at: float  # event time (seconds since the epoch) of the record that decided it
    index: int = -1  # 0-based index of that record in its batch (a backtest's record index)
    # Texts are allowed here only (truncated): the drift event's farthest/nearest examples.
    details: dict[str, object] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return incident_key(self.rule, self.segment)


def incident_key(rule: str, segment: dict[str, str]) -> str:
    """An incident's identity: one alert per rule and segment."""
    labels = ",".join(f"{k}={v}" for k, v in sorted(segment.items()))
    return f"{rule}|{labels}"


def rfc3339(t: float) -> str:
    """UTC RFC 3339 with milliseconds; a time no datetime can hold (outboxes written before
    event times were bounded) is clamped to 0001-01-01 .. 9999-12-31 rather than raise."""
    try:
        when = datetime.fromtimestamp(t, UTC)
    except (ValueError, OverflowError, OSError):
        when = datetime.max.replace(tzinfo=UTC) if t > 0 else datetime.min.replace(tzinfo=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
