"""Rules: conditions over detector outputs and rates, evaluated per segment after each batch,
turned into decisions (firing, repeated once per cooldown, resolved) for the outbox."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.rate_shift import RateShift
from monitor.config.acting import (
    Action,
    DriftCondition,
    LabelledCondition,
    LatencyCondition,
    RateCondition,
    Rule,
)
from monitor.telemetry.metrics import METRICS as m
from monitor.types import SEGMENT_LABELS, Decision, DriftEvent, Segment, incident_key

GLOBAL: Segment = ("", "", "", "")  # dead letters have no trustworthy segment
# A stored firing time this far past the wall clock cannot be real (decoders bound event
# times to a day past arrival by default).
FUTURE_SKEW_S = 86_400.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    """What the rules see of one batch."""

    at: float  # event time of the batch's newest record (wall clock when none carries one)
    segments: dict[Segment, np.ndarray]  # record indices per segment
    signals: dict[str, np.ndarray]  # per record: 1, 0 or NaN (see SIGNAL_SCORERS, "error")
    latency_seconds: np.ndarray
    drift: Sequence[DriftEvent] = ()
    dead_letters: int = 0  # messages dead-lettered since the previous observation
    messages: int = 0  # messages consumed since the previous observation
    # Per segment: its newest event time in the batch, bounded by arrival (default: `at`).
    times: Mapping[Segment, float] = field(default_factory=dict)
    # The review queue's label-corrected rate and the labels behind it, by flag and segment.
    corrected: Callable[[str, Segment], tuple[float, int] | None] | None = None

    def time_of(self, seg: Segment) -> float:
        return self.times.get(seg, self.at)


class _Values:
    """The last `records` values, or those of the last `seconds` of event time."""

    def __init__(self, records: int, seconds: float | None) -> None:
        self.records, self.seconds = records, seconds
        self._chunks: deque[tuple[float, np.ndarray]] = deque()
        self._n = 0

    def extend(self, at: float, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if values.size:
            self._chunks.append((at, values))
            self._n += values.size
        if self.seconds is not None:
            while self._chunks and self._chunks[0][0] < at - self.seconds:
                self._n -= self._chunks.popleft()[1].size
            return
        while self._chunks and self._n - self._chunks[0][1].size >= self.records:
            self._n -= self._chunks.popleft()[1].size
        if self._n > self.records:  # cut the oldest chunk so exactly `records` remain
            at0, oldest = self._chunks[0]
            self._chunks[0] = (at0, oldest[self._n - self.records:])
            self._n = self.records

    def __len__(self) -> int:
        return self._n

    def array(self) -> np.ndarray:
        return np.concatenate([v for _, v in self._chunks]) if self._chunks else np.empty(0)


def _rolling_means(before: np.ndarray, new: np.ndarray, size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and count of the last `size` values after each of `new`, `before` preceding it."""
    values = np.concatenate([before[-size:], new])
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(values.size - new.size + 1, values.size + 1)
    starts = np.maximum(0, ends - size)
    counts = ends - starts
    return (sums[ends] - sums[starts]) / counts, counts


@dataclass
class _State:
    firing: bool = False
    last_fired: float | None = None
    # The rule's clock on this segment: the latest time it has seen, so out-of-order event
    # times across partitions (a catch-up) never move it back and cooldowns stay monotonic.
    clock: float = float("-inf")
    consecutive: int = 0  # the most consecutive windows of one stream (drift rules)
    # Drift rules: consecutive windows flagged per "detector:stream"; None in checkpoints
    # written before streams were counted apart.
    per_stream: dict[str, int] | None = None
    since_detection: int = 0
    window: _Values | None = None
    shift: RateShift | None = None  # rate rules against the segment's reference rate
    evidence: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)


class RuleEngine:
    """Evaluates every rule on each observation; returns the decisions to put in the outbox.

    `last_fired(key)` tells when an incident last acted (the outbox knows), so a restart
    neither forgets a cooldown nor repeats an action the previous run already took.
    """

    def __init__(self, rules: Sequence[Rule], actions: Mapping[str, Action],
                 labels: Sequence[str] = SEGMENT_LABELS,
                 last_fired: Callable[[str], float | None] | None = None) -> None:
        self.rules = list(rules)
        self._actions = actions
        self._labels = tuple(labels)
        self._last_fired = last_fired or (lambda key: None)  # None: no outbox, no history
        self._states: dict[tuple[str, Segment], _State] = {}

    def state(self) -> dict[tuple[str, Segment], object]:
        """Each rule's per-segment state (windows, consecutive counts, firing), for a checkpoint."""
        return dict(self._states)

    def restore(self, states: Mapping[tuple[str, Segment], object]) -> None:
        """Resume from `state()`; states of rules no longer configured are dropped. The outbox
        stays the judge of cooldowns: it may know of a decision newer than the checkpoint."""
        names = {rule.name for rule in self.rules}
        for (name, seg), state in states.items():
            if name not in names or not isinstance(state, _State):
                continue
            segment = self._segment(seg)
            fired = self._trusted(incident_key(name, segment))
            if state.last_fired is not None and state.last_fired > time.time() + FUTURE_SKEW_S:
                state.last_fired, state.clock = None, float("-inf")  # see _trusted
            if fired is not None and (state.last_fired is None or fired > state.last_fired):
                state.last_fired = fired
            self._states[(name, seg)] = state

    def evaluate(self, obs: Observation) -> list[Decision]:
        decisions: list[Decision] = []
        for rule in self.rules:
            c = rule.when
            if isinstance(c, RateCondition) and c.signal == "dead_letter":
                share = np.zeros(obs.messages)
                share[:obs.dead_letters] = 1.0
                # Where the dead letters fell within the batch is not known: batch-end check.
                decisions += self._rate(rule, c, GLOBAL, share, np.full(share.size, -1), obs.at,
                                        per_record=False)
                continue
            for seg, idx in obs.segments.items():
                if idx.size == 0:
                    continue
                last = int(idx[-1])
                if isinstance(c, DriftCondition):
                    decisions += self._drift(rule, c, seg, idx, obs)
                elif isinstance(c, RateCondition):
                    values = obs.signals.get(c.signal)
                    if values is not None:
                        decisions += self._rate(rule, c, seg, values[idx], idx,
                                                obs.time_of(seg))
                elif isinstance(c, LatencyCondition):
                    decisions += self._latency(rule, c, seg, obs.latency_seconds[idx],
                                               obs.time_of(seg), last)
                elif isinstance(c, LabelledCondition) and obs.corrected is not None:
                    decisions += self._labelled(rule, c, seg, obs.corrected(c.flag, seg),
                                                obs.time_of(seg), last)
        return decisions

    # -- conditions ---------------------------------------------------------------------------

    def _rate(self, rule: Rule, c: RateCondition, seg: Segment, values: np.ndarray,
              positions: np.ndarray, at: float, per_record: bool = True) -> list[Decision]:
        """A record window's rate is checked after every record, so a spike inside one large
        batch is seen wherever the batch boundaries fall (and a backtest matches the daemon
        whatever its batch size). A time window is checked once a batch."""
        if c.relative:
            return self._rate_shift(rule, c, seg, values, positions, at)
        assert c.above is not None
        state = self._state(rule, seg)
        window = state.window = state.window or _Values(c.window_records, c.window_seconds)
        values = values.astype(np.float64)
        keep = ~np.isnan(values)
        values, positions = values[keep], positions[keep]
        before = window.array()
        window.extend(at, values)
        decisions: list[Decision] = []
        if per_record and c.window_seconds is None and values.size and not state.firing:
            rates, counts = _rolling_means(before, values, c.window_records)
            over = np.flatnonzero((counts >= c.min_records) & (rates > c.above))
            if over.size:
                j = int(over[0])
                state.evidence = {"rate": float(rates[j]), "above": c.above,
                                  "records": float(counts[j])}
                summary = (f"{c.signal} share {rates[j]:.3g} (bound {c.above:g}) over "
                           f"{counts[j]} records")
                decisions += self._decide(rule, seg, state, True, at, int(positions[j]),
                                          summary)
        if len(window) < c.min_records:
            return decisions
        rate = float(window.array().mean())
        state.evidence = {"rate": rate, "above": c.above, "records": float(len(window))}
        summary = f"{c.signal} share {rate:.3g} (bound {c.above:g}) over {len(window)} records"
        last = int(positions[-1]) if positions.size else -1
        return decisions + self._decide(rule, seg, state, rate > c.above, at, last, summary)

    def _rate_shift(self, rule: Rule, c: RateCondition, seg: Segment, values: np.ndarray,
                    positions: np.ndarray, at: float) -> list[Decision]:
        """Against the segment's reference rate: decided at the record that raised the alarm
        (per record wherever batch boundaries fall), resolved once the evidence is offset."""
        state = self._state(rule, seg)
        shift = state.shift = state.shift or RateShift(c.above_reference_by,
                                                       c.reference_records, c.ert)
        raised = shift.update(values.astype(np.float64))
        if not shift.ready:
            return []

        def explain(hits: int, records: int, statistic: float) -> str:
            rate = hits / records if records else float("nan")
            state.evidence = {"rate": rate, "records": float(records),
                              "reference_rate": shift.reference, "in_control_rate": shift.p0,
                              "statistic": statistic, "threshold": shift.threshold}
            return (f"{c.signal} share {rate:.3g} over the last {records} records against a "
                    f"reference of {shift.reference:.3g} (CUSUM {statistic:.3g}, threshold "
                    f"{shift.threshold:.3g}, tuned to a rise of {c.above_reference_by:g})")

        decisions: list[Decision] = []
        if raised is not None and not state.firing:  # decided at the record that raised it
            summary = explain(shift.raised_hits, shift.raised_n, shift.threshold)
            decisions = self._decide(rule, seg, state, True, at, int(positions[raised]), summary)
            if shift.alarm:
                return decisions
        summary = explain(shift.run_hits, shift.run_n, shift.statistic)
        last = int(positions[-1]) if positions.size else -1
        return decisions + self._decide(rule, seg, state, shift.alarm, at, last, summary)

    def _latency(self, rule: Rule, c: LatencyCondition, seg: Segment, values: np.ndarray,
                 at: float, index: int) -> list[Decision]:
        state = self._state(rule, seg)
        window = state.window = state.window or _Values(c.window_records, c.window_seconds)
        window.extend(at, values.astype(np.float64))
        if len(window) < c.min_records:
            return []
        q = float(np.quantile(window.array(), c.quantile))
        state.evidence = {"quantile": c.quantile, "latency_seconds": q,
                          "above_seconds": c.above_seconds, "records": float(len(window))}
        summary = (f"p{c.quantile * 100:g} latency {q:.3g}s (bound {c.above_seconds:g}s) over "
                   f"{len(window)} records")
        return self._decide(rule, seg, state, q > c.above_seconds, at, index, summary)

    def _labelled(self, rule: Rule, c: LabelledCondition, seg: Segment,
                  found: tuple[float, int] | None, at: float, index: int) -> list[Decision]:
        """Once a batch: the label-corrected rate, when enough labels stand behind it."""
        if found is None or found[1] < c.min_labels or found[0] != found[0]:
            return []
        rate, labels = found
        state = self._state(rule, seg)
        state.evidence = {"corrected_rate": rate, "above": c.above, "labels": float(labels)}
        summary = (f"label-corrected {c.flag} rate {rate:.3g} (bound {c.above:g}) from "
                   f"{labels} reviewed records")
        return self._decide(rule, seg, state, rate > c.above, at, index, summary)

    def _drift(self, rule: Rule, c: DriftCondition, seg: Segment, idx: np.ndarray,
               obs: Observation) -> list[Decision]:
        """Detections count per stream (detector and stream): `consecutive: K` holds once one
        stream has flagged K windows in a row, so one alarm on the prompts and one on the
        responses at the same record are one window each, not two. Dated at the record that
        completed the count."""
        state = self._state(rule, seg)
        hits = sorted((e for e in obs.drift if e.segment == seg and c.stream in ("any", e.stream)
                       and (c.detector == e.kind or (c.detector == "any"
                                                     and e.kind != "new_error_class"))),
                      key=lambda e: e.index)
        if c.detector == "new_error_class":
            return self._new_classes(rule, c, seg, idx, hits, obs.time_of(seg))
        counts = state.per_stream if state.per_stream is not None else {}
        state.per_stream = counts
        if hits:
            held = state.consecutive >= c.consecutive
            decisive: DriftEvent | None = None  # the detection that completed the condition
            for e in hits:
                key = f"{e.kind}:{e.stream}"
                counts[key] = counts.get(key, 0) + 1
                if decisive is None and not held and counts[key] >= c.consecutive:
                    decisive = e
            decisive = decisive or hits[-1]
            state.consecutive = max(counts.values())
            # Records of the segment after the last detection count towards clearing.
            state.since_detection = int(np.count_nonzero(idx > hits[-1].index))
            state.evidence = {"statistic": decisive.statistic,
                              "threshold": decisive.threshold,
                              "consecutive": float(state.consecutive)}
            if decisive.q_value == decisive.q_value:
                state.evidence["q_value"] = decisive.q_value
            if decisive.window is not None:
                state.evidence["window"] = float(decisive.window)
            state.details = {"detector": decisive.kind, "stream": decisive.stream,
                             "examples": [{"request_id": rid, "text": text,
                                           "nearest_reference": ref}
                                          for rid, text, ref in decisive.examples]}
            index = decisive.index
        else:
            state.since_detection += idx.size
            index = int(idx[-1])
            if state.since_detection >= c.clear_after_records:  # never in a batch that hit
                state.consecutive = 0
                counts.clear()
        what = state.details.get("stream", c.stream)
        summary = (f"{state.details.get('detector', c.detector)} drift on {what} in "
                   f"{state.consecutive} consecutive window(s)")
        return self._decide(rule, seg, state, state.consecutive >= c.consecutive,
                            obs.time_of(seg), index, summary)

    def _new_classes(self, rule: Rule, c: DriftCondition, seg: Segment, idx: np.ndarray,
                     hits: list[DriftEvent], at: float) -> list[Decision]:
        """Each new class is news of its own: a firing decision with every target, whatever
        the cooldown (the drift stage announces a class once per reference). Resolved after
        `clear_after_records` records of the segment without a new class."""
        state = self._state(rule, seg)
        segment = self._segment(seg)
        decisions: list[Decision] = []
        for e in hits:
            m.RULE_FIRING.labels(rule.name, rule.severity, *seg).set(1)
            at = state.clock = max(state.clock, at)
            state.firing, state.last_fired = True, at
            error_class = e.examples[0][1] if e.examples else ""
            ids = [rid for rid, _, _ in e.examples]
            state.evidence = {"first_records": e.statistic}
            state.details = {"detector": e.kind, "stream": e.stream,
                             "error_class": error_class, "request_ids": ids}
            decisions.append(self._decision(
                rule, "firing", segment, state, at, e.index,
                f"new error class {error_class!r}, first seen in {', '.join(ids[:3])}",
                tuple(rule.actions)))
        state.since_detection = (int(np.count_nonzero(idx > hits[-1].index)) if hits
                                 else state.since_detection + idx.size)
        if state.firing and state.since_detection >= c.clear_after_records:
            state.firing = False
            m.RULE_FIRING.labels(rule.name, rule.severity, *seg).set(0)
            at = state.clock = max(state.clock, at)
            decisions.append(self._decision(
                rule, "resolved", segment, state, at, int(idx[-1]),
                f"resolved: no new error class in {state.since_detection} records",
                self._alert_targets(rule)))
        return decisions

    # -- firing, cooldown, resolving -------------------------------------------------------------

    def _decide(self, rule: Rule, seg: Segment, state: _State, holds: bool, at: float,
                index: int, summary: str) -> list[Decision]:
        segment = self._segment(seg)
        m.RULE_FIRING.labels(rule.name, rule.severity, *seg).set(holds)
        at = state.clock = max(state.clock, at)
        if holds:
            cooled = state.last_fired is None or at - state.last_fired >= rule.cooldown_seconds
            targets = tuple(rule.actions) if cooled else self._alert_targets(rule)
            if state.firing and not cooled:
                return []  # still firing, within the cooldown: Alertmanager re-sends itself
            state.firing = True
            if cooled:
                state.last_fired = at
            # Decided even with no targets: the outbox keeps it for `driftwatch events`.
            return [self._decision(rule, "firing", segment, state, at, index, summary, targets)]
        if state.firing:
            state.firing = False
            return [self._decision(rule, "resolved", segment, state, at, index,
                                   f"resolved: {summary}", self._alert_targets(rule))]
        return []

    def _decision(self, rule: Rule, status: str, segment: dict[str, str], state: _State,
                  at: float, index: int, summary: str, targets: tuple[str, ...]) -> Decision:
        where = ", ".join(f"{k}={v}" for k, v in segment.items()) or "all traffic"
        m.RULE_ACTIONS.labels(rule.name, rule.decides).inc()
        return Decision(rule.decides, rule.name, rule.severity, status,  # type: ignore[arg-type]
                        segment, dict(state.evidence), f"{rule.name}: {summary} ({where})",
                        targets, at, index, dict(state.details))

    def _alert_targets(self, rule: Rule) -> tuple[str, ...]:
        return tuple(a for a in rule.actions if self._actions[a].type == "alertmanager")

    def _segment(self, seg: Segment) -> dict[str, str]:
        """The segment's configured labels and their values (empty labels left out)."""
        return {k: v for k, v in zip(self._labels, seg, strict=True) if v}

    def _state(self, rule: Rule, seg: Segment) -> _State:
        state = self._states.get((rule.name, seg))
        if state is None:
            state = self._states[(rule.name, seg)] = _State()
            segment = self._segment(seg)
            state.last_fired = self._trusted(incident_key(rule.name, segment))
        return state

    def _trusted(self, key: str) -> float | None:
        """The outbox's last firing time for `key`, unless it lies beyond any real clock (an
        outbox written before event times were bounded): that would silence the rule."""
        fired = self._last_fired(key)
        if fired is not None and fired > time.time() + FUTURE_SKEW_S:
            log.warning("outbox: last firing of %s is dated %.0f, in the future; ignored for "
                        "its cooldown", key, fired)
            return None
        return fired
