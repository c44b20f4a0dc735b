"""The steps of one micro-batch, each small and with one job, in the order the pipeline runs
them: operational counts, model scores, drift, decisions, the audit log.

Like an arroyo processing strategy, a stage has `process` (one batch), `state` and `restore`
(what a checkpoint keeps of it, by part name) and `close`. A stage reads what the earlier
ones left in the batch's `Work` and adds its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np

from consumers.processor import Settle, retry_while_waiting
from consumers.wire import Origin, Record
from detectors.operational import OperationalFeatures, status_class
from monitor.acting.rules import Observation, RuleEngine
from monitor.acting.shadow import ShadowGate
from monitor.config import MODEL_SCORERS, STATEFUL_SCORERS
from monitor.pipeline.append_file import AppendFile
from monitor.pipeline.drift import DriftStage, feature_columns, outcome
from monitor.pipeline.model_scoring import BatchScores, ModelScorers
from monitor.telemetry.labels import CappedLabel, SegmentLabeler
from monitor.telemetry.metrics import METRICS, Metrics
from monitor.types import SEGMENT_LABELS, Decision, DriftEvent, IntakeCounts, Segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredBatch:
    """What a scorer sees: the records, their feature arrays, and record indices per segment."""

    records: list[Record]
    features: OperationalFeatures
    segments: dict[Segment, np.ndarray]
    # (status class, error type label) per record: ("ok", "") or ("error", "timeout").
    outcomes: list[tuple[str, str]]


@dataclass
class Work:
    """One batch on its way through the stages; each stage adds what it found."""

    batch: ScoredBatch
    origins: list[tuple[Origin, ...]]  # each record's Kafka positions
    times: np.ndarray  # each record's event time in seconds (NaN: none)
    # False for records the checkpointed state already holds (a replay after a restart):
    # they are scored and counted again, but not fed to detectors, rules or the canary.
    stateful: bool = True
    scores: BatchScores | None = None
    events: list[DriftEvent] = field(default_factory=list)
    # Tokens counted by a local tokenizer per stream ("prompt", "completion"), when the
    # tokenization scorer is on: the score stage counts, the stateful check judges.
    token_counts: dict[str, np.ndarray] | None = None
    # Per-record rule signals and drift features from stateful scorers (tokenization).
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    # A wait the batch is not done before (the score stage's broker acknowledgements), left
    # to the worker's settling thread so the next batch is scored meanwhile.
    settle: Settle | None = None


class Stage(Protocol):
    """A step of the pipeline (see the module docstring)."""

    def process(self, work: Work) -> None: ...

    def state(self) -> dict[str, object]: ...

    def restore(self, parts: Mapping[str, object]) -> None: ...

    def close(self) -> None: ...


class Stateless:
    """A stage that keeps nothing across batches: no state to checkpoint, nothing to close."""

    def state(self) -> dict[str, object]:
        return {}

    def restore(self, parts: Mapping[str, object]) -> None:
        return None

    def close(self) -> None:
        return None


# -- Operational: counts every record, by segment --------------------------------------------

def _latency(b: ScoredBatch, m: Metrics) -> None:
    for seg, idx in b.segments.items():
        m.REQUEST_LATENCY.observe_many(seg, b.features.latency_seconds[idx])


def _tokens(b: ScoredBatch, m: Metrics) -> None:
    f = b.features
    for seg, idx in b.segments.items():
        m.TOKENS.labels("prompt", *seg).inc(float(np.nansum(f.prompt_tokens[idx])))
        m.TOKENS.labels("completion", *seg).inc(float(np.nansum(f.completion_tokens[idx])))
        m.COMPLETION_TOKENS.observe_many(seg, f.completion_tokens[idx])


def _cost(b: ScoredBatch, m: Metrics) -> None:
    for seg, idx in b.segments.items():
        m.COST.labels(*seg).inc(float(np.nansum(b.features.cost_usd[idx])))


def _status(b: ScoredBatch, m: Metrics) -> None:
    for seg, idx in b.segments.items():
        counts: dict[tuple[str, str], int] = {}
        for i in idx:
            pair = b.outcomes[i]
            counts[pair] = counts.get(pair, 0) + 1
        for (status, error_type), n in counts.items():
            m.RESPONSES.labels(status, error_type, *seg).inc(n)


def _length(b: ScoredBatch, m: Metrics) -> None:
    for seg, idx in b.segments.items():
        m.TEXT_LENGTH.observe_many(("prompt", *seg), b.features.prompt_chars[idx])
        m.TEXT_LENGTH.observe_many(("response", *seg), b.features.response_chars[idx])


SCORERS: dict[str, Callable[[ScoredBatch, Metrics], None]] = {
    "latency": _latency,
    "tokens": _tokens,
    "cost": _cost,
    "status": _status,
    "length": _length,
}


def operational_features(records: Sequence[Record]) -> OperationalFeatures:
    return OperationalFeatures.from_rows([
        (r.latency_ms, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.prompt_chars,
         None if r.response is None else len(r.response))
        for r in records
    ])


class OperationalStage:
    """Groups a batch by segment (labels capped) and runs the operational scorers on it."""

    def __init__(self, scorers: Sequence[str], segment_labels: Sequence[str],
                 max_label_values: int, max_error_types: int = 20,
                 metrics: Metrics = METRICS, outcome: str = "scored",
                 max_segments: int = 500) -> None:
        """`outcome`: what `count` calls the records (driftwatch_records_total)."""
        self._m = metrics
        self.outcome = outcome
        unknown = sorted(set(scorers) - SCORERS.keys() - MODEL_SCORERS - STATEFUL_SCORERS)
        if unknown:
            raise ValueError(f"unknown scorers {unknown}; available: {sorted(SCORERS)}")
        self._scorers = [SCORERS[name] for name in scorers if name in SCORERS]
        self._segments = SegmentLabeler(segment_labels, SEGMENT_LABELS, max_label_values,
                                        max_segments)
        self._error_types = CappedLabel(max_error_types)
        self._outcomes: dict[tuple[str | None, str | None], tuple[str, str]] = {}

    def scored(self, records: list[Record],
               features: OperationalFeatures | None = None) -> ScoredBatch:
        """The batch with its features (computed here unless given: the decide stage gets
        them from the score stage) and segments; also what starts a `Work`."""
        return ScoredBatch(records, features or operational_features(records),
                           self._group(records), self._outcomes_of(records))

    def process(self, work: Work) -> None:
        for scorer in self._scorers:
            scorer(work.batch, self._m)

    def count(self, work: Work) -> None:
        """After every other stage: the records are scored (or, in the decide stage,
        decided)."""
        m = self._m
        for seg, idx in work.batch.segments.items():
            m.RECORDS.labels(self.outcome, *seg).inc(len(idx))
        m.SEGMENTS.set(self._segments.segments)
        times = work.times
        if not np.isnan(times).all():
            m.LAST_EVENT_TIME.set(float(np.nanmax(times)))
        if work.batch.records:
            m.LAST_PROCESSED_TIME.set_to_current_time()

    def state(self) -> dict[str, object]:
        return {"segments": self._segments}

    def restore(self, parts: Mapping[str, object]) -> None:
        if isinstance(restored := parts.get("segments"), SegmentLabeler):
            # The cap is today's config (the labels and their values are fingerprinted).
            restored.max_segments = self._segments.max_segments
            self._segments = restored

    def close(self) -> None:
        return None

    def _group(self, records: list[Record]) -> dict[Segment, np.ndarray]:
        key = self._segments.key
        groups: dict[Segment, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(key((r.model, r.model_version, r.deployment, r.route)), []).append(i)
        return {seg: np.asarray(idx, dtype=np.intp) for seg, idx in groups.items()}

    def _outcomes_of(self, records: list[Record]) -> list[tuple[str, str]]:
        cache, out = self._outcomes, []
        for r in records:
            pair = (r.status, r.error_type)
            found = cache.get(pair)
            if found is None:
                error_type = "" if r.error_type is None else self._error_types(r.error_type)
                found = (status_class(r.status, r.error_type), error_type)
                if len(cache) < 1_000:  # statuses and error types are few; stay bounded anyway
                    cache[pair] = found
            out.append(found)
        return out


# -- Models: toxicity, groundedness, sanity, embeddings ------------------------------------

class ModelStage(Stateless):
    """Model-scores the batch (a sample under overload) and exports the model metrics."""

    def __init__(self, models: ModelScorers, fraction: Callable[[], float] = lambda: 1.0,
                 cancel: threading.Event | None = None, metrics: Metrics = METRICS) -> None:
        """`cancel`, once set (a stop), ends a batch between model slices with Cancelled."""
        self._m = m = metrics
        self.models = models
        self._fraction = fraction
        self._cancel = cancel or threading.Event()
        for labels in models.models():
            m.MODEL_INFO.labels(*labels).set(1)

    def process(self, work: Work) -> None:
        work.scores = self.score(work.batch.records)
        self._metrics(work.batch.segments, work.scores, self._m)

    def score(self, records: list[Record]) -> BatchScores:
        m = self._m
        fraction = self._fraction()
        m.SCORED_FRACTION.set(fraction)
        scores = self.models.score(records, fraction, self._cancel.is_set)
        skipped = len(records) - int(scores.sampled.sum()) - scores.over_budget
        if skipped:
            m.MODEL_SKIPPED.labels("overload").inc(skipped)
        if scores.over_budget:
            m.MODEL_SKIPPED.labels("time_budget").inc(scores.over_budget)
        for embedder in self.models.embedders():
            stats = embedder.stats.take()
            m.EMBEDDED_TEXTS.labels("embedded").inc(stats.embedded)
            m.EMBEDDED_TEXTS.labels("cache_hit").inc(stats.cache_hits)
            m.EMBEDDER_TRUNCATED.inc(stats.truncated)
            m.EMBEDDER_SECONDS.inc(stats.seconds)
            for size in stats.batches:
                m.EMBEDDER_BATCH.observe(size)
        return scores

    @staticmethod
    def _metrics(segments: dict[Segment, np.ndarray], scores: BatchScores, m: Metrics) -> None:
        for seg, idx in segments.items():
            m.MODEL_SCORED.labels(*seg).inc(int(scores.sampled[idx].sum()))
            m.TOXICITY.observe_many(("response", *seg), scores.toxicity[idx])
            m.TOXICITY.observe_many(("prompt", *seg), scores.prompt_toxicity[idx])
            m.GROUNDEDNESS.observe_many(seg, scores.groundedness[idx])
            for flag, values in scores.flags.items():
                count = int(values[idx].sum())
                if count:
                    m.FLAGS.labels(flag, *seg).inc(count)


# -- Drift ------------------------------------------------------------------------------------

class DriftStep:
    """Feeds the model-scored records to the drift detectors and reports what they find."""

    def __init__(self, drift: DriftStage,
                 on_events: Callable[[list[DriftEvent]], None] | None = None) -> None:
        self.drift = drift
        self._on_events = on_events or DriftLog()

    def process(self, work: Work) -> None:
        if not work.stateful or work.scores is None:
            return
        records = work.batch.records
        work.events = self.drift.update(
            records, work.scores,
            feature_columns(work.batch.features, work.scores) | work.numeric,
            [outcome(r) for r in records], work.batch.segments)
        if work.events:
            self._on_events(work.events)

    def state(self) -> dict[str, object]:
        return {"drift": self.drift.state()}

    def restore(self, parts: Mapping[str, object]) -> None:
        if isinstance(parts.get("drift"), dict):
            self.drift.restore(parts["drift"])  # type: ignore[arg-type]

    def close(self) -> None:
        return None


class DriftLog:
    """The drift stage's log lines. A lasting shift re-fires a reset detector as soon as its
    window refills, several times a second at full traffic: the first finding of a segment's
    stream is logged, and then one line a minute at most, counting those folded into it (the
    metrics and the decisions count every one)."""

    def __init__(self, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str, Segment], tuple[float, int]] = {}

    def __call__(self, events: list[DriftEvent]) -> None:
        # Ids and figures only: prompt and response text stays out of logs at INFO.
        now = self._clock()
        for e in events:
            if e.kind == "new_error_class":  # once per class and segment already
                log.warning("new error class %r in segment %s, first records %s",
                            e.examples[0][1], e.segment, [rid for rid, _, _ in e.examples])
                continue
            key = (e.kind, e.stream, e.segment)
            logged, folded = self._last.get(key, (-float("inf"), 0))
            if now - logged < self.interval:
                self._last[key] = (logged, folded + 1)
                continue
            self._last[key] = (now, 0)
            more = f" ({folded} more in the {now - logged:.0f} s before)" if folded else ""
            if e.kind == "change":  # river's detectors carry no statistic of their own
                log.warning("drift detected: change %s segment=%s (streaming change detector, "
                            "an early signal; the feature window test confirms)%s", e.stream,
                            e.segment, more)
            elif e.kind == "feature":
                log.warning("drift detected: feature %s segment=%s statistic=%.4g q=%.3g "
                            "fdr=%g%s", e.stream, e.segment, e.statistic, e.q_value,
                            e.threshold, more)
            else:
                log.warning("drift detected: %s %s segment=%s statistic=%.4g threshold=%.4g "
                            "window=%s examples=%s%s", e.kind, e.stream, e.segment,
                            e.statistic, e.threshold, e.window,
                            [rid for rid, _, _ in e.examples], more)


# -- Decisions: rules and the canary gate -----------------------------------------------------

class CanaryUpdate(Protocol):
    """What the decision stage needs of a canary gate (monitor.acting.canary.CanaryGate)."""

    def update(self, models: Sequence[str | None], deployments: Sequence[str | None],
               signals: Mapping[str, np.ndarray], embeddings: np.ndarray | None,
               at: float | np.ndarray) -> list[Decision]: ...

    def state(self) -> dict[str, object]: ...

    def restore(self, state: dict[str, object]) -> None: ...


class DecideStage:
    """Runs the rules and the canary gate on the batch and hands their decisions on."""

    def __init__(self, rules: RuleEngine | None, canary: CanaryUpdate | None,
                 on_decisions: Callable[[list[Decision]], None],
                 intake: IntakeCounts | None = None,
                 rollover: Callable[[dict[str, str], str], None] | None = None,
                 rollover_actions: frozenset[str] = frozenset(),
                 shadow: ShadowGate | None = None,
                 corrected: Callable[[str, Segment], tuple[float, int] | None] | None = None,
                 ) -> None:
        """`on_decisions` must make the decisions durable before it returns (the outbox): the
        batch is acknowledged, and its offsets committed, only after. `intake`: the running
        counts of messages read and dead-lettered, for dead-letter rules. A firing decision
        that targets one of `rollover_actions` asks `rollover` for a new drift reference."""
        self.rules = rules
        self.canary = canary
        self.shadow = shadow
        self._corrected = corrected
        self._on_decisions = on_decisions
        self._intake = intake or IntakeCounts()
        self._intake_seen = (self._intake.messages, self._intake.dead_letters)
        self._rollover = rollover
        self._rollover_actions = rollover_actions

    def process(self, work: Work) -> None:
        if not work.stateful:
            return
        b, scores, times, now = work.batch, work.scores, work.times, time.time()
        by_segment = decision_times(times, b.segments, now)
        at = max(by_segment.values())
        signals = rule_signals(b.outcomes, scores) | work.signals
        decisions: list[Decision] = []
        if self.rules is not None:
            messages, dead = self._intake.messages, self._intake.dead_letters
            seen_messages, seen_dead = self._intake_seen
            self._intake_seen = (messages, dead)
            decisions += self.rules.evaluate(Observation(
                at, b.segments, signals, b.features.latency_seconds, work.events,
                dead_letters=dead - seen_dead, messages=messages - seen_messages,
                times=by_segment, corrected=self._corrected))
        # The gates date each record by its event time, never later than arrival.
        bounded = np.minimum(np.nan_to_num(times, nan=now), now)
        if self.canary is not None:
            signals["latency_seconds"] = b.features.latency_seconds
            decisions += self.canary.update(
                [r.model for r in b.records], [r.deployment for r in b.records], signals,
                _aligned(scores), bounded)
        if self.shadow is not None:
            decisions += self.shadow.update(
                [r.request_id for r in b.records], [r.model for r in b.records],
                [r.deployment for r in b.records], signals, b.features.latency_seconds,
                b.features.response_chars, _aligned(scores), bounded)
        if decisions:
            self._on_decisions(decisions)
        for d in decisions:
            if d.status == "firing" and self._rollover is not None \
                    and self._rollover_actions.intersection(d.targets):
                self._rollover(d.segment, f"rule {d.rule}")

    def state(self) -> dict[str, object]:
        parts: dict[str, object] = {}
        if self.rules is not None:
            parts["rules"] = self.rules.state()
        if self.canary is not None:
            parts["canary"] = self.canary.state()
        if self.shadow is not None:
            parts["shadow"] = self.shadow.state()
        return parts

    def restore(self, parts: Mapping[str, object]) -> None:
        if self.rules is not None and isinstance(parts.get("rules"), dict):
            self.rules.restore(parts["rules"])  # type: ignore[arg-type]
        if self.canary is not None and isinstance(parts.get("canary"), dict):
            self.canary.restore(parts["canary"])  # type: ignore[arg-type]
        if self.shadow is not None and isinstance(parts.get("shadow"), dict):
            self.shadow.restore(parts["shadow"])  # type: ignore[arg-type]

    def close(self) -> None:
        return None


def decision_times(times: np.ndarray, segments: Mapping[Segment, np.ndarray], now: float
                   ) -> dict[Segment, float]:
    """Each segment's clock for this batch: its newest event time, never later than arrival
    (`now`), and arrival when its records carry none. The rules keep it monotonic."""
    out: dict[Segment, float] = {}
    for seg, idx in segments.items():
        seg_times = times[idx]
        known = seg_times[~np.isnan(seg_times)]
        out[seg] = min(float(known.max()), now) if known.size else now
    return out


def rule_signals(outcomes: Sequence[tuple[str, str]], scores: BatchScores | None
                 ) -> dict[str, np.ndarray]:
    """Per-record 1/0/NaN signals the rules and the canary gate watch (NaN: not applicable,
    such as a record the models did not score, or groundedness without context)."""
    signals = {"error": np.array([status != "ok" for status, _ in outcomes], dtype=np.float64)}
    if scores is None:
        return signals
    for name, flags in scores.flags.items():
        values = flags.astype(np.float64)
        values[~scores.sampled] = np.nan
        if name in ("ungrounded", "novel_number", "novel_name"):
            values[np.isnan(scores.groundedness)] = np.nan
        signals[name] = values
    return signals


def _aligned(scores: BatchScores | None) -> np.ndarray | None:
    """Response embeddings with one row per record (NaN rows for records not model-scored)."""
    if scores is None or scores.response_embeddings is None:
        return None
    out = np.full((len(scores.sampled), scores.response_embeddings.shape[1]), np.nan,
                  dtype=scores.response_embeddings.dtype)
    out[scores.sampled] = scores.response_embeddings
    return out


# -- Audit ------------------------------------------------------------------------------------

class AuditStage(Stateless):
    """Appends each scored record's request id and Kafka positions to a JSON-lines file,
    followed through log rotation. The log is for reconciliation, so a write the disk
    refuses (full) is tried again while the batch waits, never dropped; raised, it had the
    worker run the batch again (feeding the detectors and rules a second time), then each
    record alone, dead-lettering them all as processing errors."""

    def __init__(self, path: Path, cancel: threading.Event | None = None,
                 metrics: Metrics = METRICS) -> None:
        self._file = AppendFile(path)
        self._cancel = cancel or threading.Event()
        self._m = metrics

    def process(self, work: Work) -> None:
        data = b"".join(
            msgspec.json.encode({"request_id": r.request_id, "positions": list(origins)}) + b"\n"
            for r, origins in zip(work.batch.records, work.origins, strict=True))

        def refused(exc: Exception, delay: float) -> None:
            self._m.AUDIT_WRITE_FAILURES.inc()
            log.error("audit log %s refused %d line(s) (%r); the batch waits, trying again "
                      "in %.0fs", self._file.path, len(work.batch.records), exc, delay)

        retry_while_waiting(lambda: self._file.write(data), (OSError,), refused, self._cancel,
                            "stopping with audit lines the disk refused; their batch is read "
                            "again")

    def close(self) -> None:
        self._file.close()
