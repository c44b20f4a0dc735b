"""A decision: what a rule or the canary gate concluded, on its way to the outbox.

Decisions are plain values; the outbox stores them before the batch that caused them is
committed, and the delivery worker turns them into webhooks and Alertmanager alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EventType = Literal[
    "drift.detected", "quality.regressed", "canary.rollback", "canary.promote",
    "retrain.requested",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]
Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Decision:
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
