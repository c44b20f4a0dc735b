"""The pipeline: one micro-batch in, scores and counts out. Runs on the worker thread.

Scorers are registered by name in the config; each takes the batch's feature
arrays grouped by segment and updates its metrics once per segment, not per record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
import numpy as np

from consumers.batcher import Batch
from consumers.wire import Record
from detectors.operational import OperationalFeatures, status_class
from monitor import metrics as m
from monitor.checkpoint import Checkpointer, Partition
from monitor.config import MODEL_SCORERS
from monitor.decision import Decision
from monitor.drift import DriftEvent, DriftStage, Segment, feature_columns, outcome
from monitor.labels import CappedLabel, SegmentLabeler
from monitor.model_scoring import BatchScores, ModelScorers
from monitor.rules import Observation, RuleEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredBatch:
    """What a scorer sees: the records, their feature arrays, and record indices per segment."""

    records: list[Record]
    features: OperationalFeatures
    segments: dict[Segment, np.ndarray]
    # (status class, error type label) per record: ("ok", "") or ("error", "timeout").
    outcomes: list[tuple[str, str]]


def _latency(b: ScoredBatch) -> None:
    for seg, idx in b.segments.items():
        m.REQUEST_LATENCY.observe_many(seg, b.features.latency_seconds[idx])


def _tokens(b: ScoredBatch) -> None:
    f = b.features
    for seg, idx in b.segments.items():
        m.TOKENS.labels("prompt", *seg).inc(float(np.nansum(f.prompt_tokens[idx])))
        m.TOKENS.labels("completion", *seg).inc(float(np.nansum(f.completion_tokens[idx])))
        m.COMPLETION_TOKENS.observe_many(seg, f.completion_tokens[idx])


def _cost(b: ScoredBatch) -> None:
    for seg, idx in b.segments.items():
        m.COST.labels(*seg).inc(float(np.nansum(b.features.cost_usd[idx])))


def _status(b: ScoredBatch) -> None:
    for seg, idx in b.segments.items():
        counts: dict[tuple[str, str], int] = {}
        for i in idx:
            pair = b.outcomes[i]
            counts[pair] = counts.get(pair, 0) + 1
        for (status, error_type), n in counts.items():
            m.RESPONSES.labels(status, error_type, *seg).inc(n)


def _length(b: ScoredBatch) -> None:
    for seg, idx in b.segments.items():
        m.TEXT_LENGTH.observe_many(("prompt", *seg), b.features.prompt_chars[idx])
        m.TEXT_LENGTH.observe_many(("response", *seg), b.features.response_chars[idx])


SCORERS: dict[str, Callable[[ScoredBatch], None]] = {
    "latency": _latency,
    "tokens": _tokens,
    "cost": _cost,
    "status": _status,
    "length": _length,
}


class Pipeline:
    def __init__(
        self,
        scorers: Sequence[str],
        segment_labels: Sequence[str],
        max_label_values: int,
        max_error_types: int = 20,
        audit_log: Path | None = None,
        models: ModelScorers | None = None,
        fraction: Callable[[], float] = lambda: 1.0,
        drift: DriftStage | None = None,
        on_events: Callable[[list[DriftEvent]], None] | None = None,
        rules: RuleEngine | None = None,
        canary: CanaryUpdate | None = None,
        on_decisions: Callable[[list[Decision]], None] | None = None,
        intake: Callable[[], tuple[int, int]] = lambda: (0, 0),
        rollover_actions: frozenset[str] = frozenset(),
        checkpoints: Checkpointer | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """`on_decisions` must make the decisions durable before it returns (the outbox):
        the batch is acknowledged, and its offsets committed, only after. `intake` gives the
        running totals (messages read, messages dead-lettered) for dead-letter rules.
        `cancel`, once set (a stop), ends a batch between model slices with Cancelled."""
        self._cancel = cancel or threading.Event()
        unknown = sorted(set(scorers) - SCORERS.keys() - MODEL_SCORERS)
        if unknown:
            raise ValueError(f"unknown scorers {unknown}; available: {sorted(SCORERS)}")
        self._scorers = [SCORERS[name] for name in scorers if name in SCORERS]
        self.models = models
        self._fraction = fraction
        if drift is not None and models is None:
            raise ValueError("drift needs the model scorers (embeddings): enable one of "
                             f"{sorted(MODEL_SCORERS)}")
        self.drift = drift
        self._on_events = on_events or _log_events
        self.rules = rules
        self.canary = canary
        if (rules is not None or canary is not None) and on_decisions is None:
            raise ValueError("rules and the canary gate need somewhere to put their decisions")
        self._on_decisions = on_decisions or (lambda decisions: None)
        self._intake = intake
        self._intake_seen = intake()
        self._rollover_actions = rollover_actions
        if models is not None:
            for labels in models.models():
                m.MODEL_INFO.labels(*labels).set(1)
        self._segments = SegmentLabeler(segment_labels, m.SEGMENT, max_label_values)
        self._error_types = CappedLabel(max_error_types)
        self._outcomes: dict[tuple[str | None, str | None], tuple[str, str]] = {}
        self._audit = open(audit_log, "ab") if audit_log else None  # noqa: SIM115 (lives with us)
        # Next offset per partition whose record is in the state (detectors, rules, canary);
        # `_replay`: those of the checkpoint resumed from, until each partition passes them.
        self._positions: dict[Partition, int] = {}
        self._replay: dict[Partition, int] = {}
        self._checkpoints = checkpoints
        self._dirty = False  # state changed since the last checkpoint
        self._lock = threading.Lock()  # a checkpoint at close never sees a batch half-applied
        if checkpoints is not None:
            self._resume(checkpoints)

    def close(self) -> None:
        """Write the last checkpoint (unless a batch is still stuck in the worker)."""
        if self._lock.acquire(timeout=5.0):
            try:
                if self._checkpoints is not None:
                    self._checkpoints.save(self._positions, self.state())
            finally:
                self._lock.release()
        else:
            log.warning("no checkpoint at shutdown: a batch is still being processed")
        if self._audit is not None:
            self._audit.close()

    def state(self) -> dict[str, object]:
        """What a checkpoint holds, by part."""
        parts: dict[str, object] = {"segments": self._segments}
        if self.drift is not None:
            parts["drift"] = self.drift.state()
        if self.rules is not None:
            parts["rules"] = self.rules.state()
        if self.canary is not None:
            parts["canary"] = self.canary.state()
        return parts

    def _resume(self, checkpoints: Checkpointer) -> None:
        checkpoint = checkpoints.load()
        if checkpoint is None:
            return
        parts = checkpoint.parts
        if isinstance(parts.get("segments"), SegmentLabeler):
            self._segments = parts["segments"]  # type: ignore[assignment]
        if self.drift is not None and isinstance(parts.get("drift"), dict):
            self.drift.restore(parts["drift"])  # type: ignore[arg-type]
        if self.rules is not None and isinstance(parts.get("rules"), dict):
            self.rules.restore(parts["rules"])  # type: ignore[arg-type]
        if self.canary is not None and isinstance(parts.get("canary"), dict):
            self.canary.restore(parts["canary"])  # type: ignore[arg-type]
        self._positions = dict(checkpoint.positions)
        self._replay = dict(checkpoint.positions)

    def process(self, batch: Batch) -> None:
        with self._lock:
            if self._replay:
                replayed, fresh = self._split_replayed(batch)
                if replayed.records:
                    m.CHECKPOINT_REPLAYED.inc(len(replayed.records))
                    self._process(replayed, stateful=False)
                batch = fresh
            self._process(batch)
            if self._checkpoints is None:
                return  # nothing to tie positions to: keep the hot path free of the loop
            positions = self._positions
            for origins in batch.origins:
                for topic, partition, offset in origins:
                    if offset >= positions.get((topic, partition), 0):
                        positions[(topic, partition)] = offset + 1
            self._dirty = True
            self._checkpoint_if_due()

    def checkpoint_if_due(self) -> None:
        """From another thread (the poll loop): checkpoint what an idle stream left unsaved.
        Skipped while a batch is being processed; that batch checkpoints itself when due."""
        if self._lock.acquire(blocking=False):
            try:
                self._checkpoint_if_due()
            finally:
                self._lock.release()

    def _checkpoint_if_due(self) -> None:
        if self._checkpoints is not None and self._dirty and self._checkpoints.due():
            self._checkpoints.save(self._positions, self.state())
            self._dirty = False

    def _split_replayed(self, batch: Batch) -> tuple[Batch, Batch]:
        """Records the checkpointed state already holds (every position below the checkpoint's)
        and the rest. A partition leaves the replay once it reaches its checkpoint position."""
        replay = self._replay
        old: list[int] = []
        for i, origins in enumerate(batch.origins):
            if all(offset < replay.get((t, p), 0) for t, p, offset in origins):
                old.append(i)
                continue
            for t, p, offset in origins:
                end = replay.get((t, p))
                if end is not None and offset >= end:
                    del replay[(t, p)]
                    if offset > end:
                        log.warning("partition %s-%d resumes at offset %d but the checkpoint "
                                    "holds its state up to %d: %d records are missing from the "
                                    "state (committed after the last checkpoint)", t, p, offset,
                                    end, offset - end)
        if not old:
            return Batch([], []), batch
        keep = set(old)
        return (Batch([batch.records[i] for i in old], [batch.origins[i] for i in old]),
                Batch([r for i, r in enumerate(batch.records) if i not in keep],
                      [o for i, o in enumerate(batch.origins) if i not in keep]))

    def _process(self, batch: Batch, stateful: bool = True) -> None:
        """Score and count a batch; `stateful`: also feed the detectors, rules and canary."""
        started = time.perf_counter()
        records = batch.records
        if not records:
            return
        scored = ScoredBatch(
            records, operational_features(records), self._group(records),
            self._outcomes_of(records),
        )
        for scorer in self._scorers:
            scorer(scored)
        scores: BatchScores | None = None
        events: list[DriftEvent] = []
        if self.models is not None:
            scores = self.score_models(records)
            self._model_metrics(scored.segments, scores)
            if self.drift is not None and stateful:
                events = self.drift.update(
                    records, scores, feature_columns(scored.features, scores),
                    [outcome(r) for r in records], scored.segments)
                if events:
                    self._on_events(events)
        times = np.array([np.nan if (t := r.event_time) is None else t for r in records])
        newest = float(np.nanmax(times)) if not np.isnan(times).all() else None
        if (self.rules is not None or self.canary is not None) and stateful:
            self._decide(scored, scores, events, times, time.time())
        for seg, idx in scored.segments.items():
            m.RECORDS.labels("scored", *seg).inc(len(idx))
        if newest is not None:
            m.LAST_EVENT_TIME.set(newest)
        if self._audit is not None:
            self._write_audit(batch)
        m.BATCH_SIZE.observe(len(records))
        m.BATCH_SECONDS.observe(time.perf_counter() - started)

    def _decide(self, b: ScoredBatch, scores: BatchScores | None, events: list[DriftEvent],
                times: np.ndarray, now: float) -> None:
        """`times`: each record's event time (NaN: none); `now`: arrival, which bounds them."""
        by_segment = decision_times(times, b.segments, now)
        at = max(by_segment.values())
        signals = rule_signals(b.outcomes, scores)
        decisions: list[Decision] = []
        if self.rules is not None:
            messages, dead = self._intake()
            seen_messages, seen_dead = self._intake_seen
            self._intake_seen = (messages, dead)
            decisions += self.rules.evaluate(Observation(
                at, b.segments, signals, b.features.latency_seconds, events,
                dead_letters=dead - seen_dead, messages=messages - seen_messages,
                times=by_segment))
        if self.canary is not None:
            signals["latency_seconds"] = b.features.latency_seconds
            decisions += self.canary.update(
                [r.model for r in b.records], [r.deployment for r in b.records], signals,
                _aligned(scores), np.minimum(np.nan_to_num(times, nan=now), now))
        if decisions:
            self._on_decisions(decisions)
        for d in decisions:
            if d.status == "firing" and self.drift is not None \
                    and self._rollover_actions.intersection(d.targets):
                self.drift.request_rollover(d.segment, reason=f"rule {d.rule}")

    def score_models(self, records: list[Record]) -> BatchScores:
        assert self.models is not None
        fraction = self._fraction()
        m.SCORED_FRACTION.set(fraction)
        scores = self.models.score(records, fraction, self._cancel.is_set)
        skipped = len(records) - int(scores.sampled.sum()) - scores.over_budget
        if skipped:
            m.MODEL_SKIPPED.labels("overload").inc(skipped)
        if scores.over_budget:
            m.MODEL_SKIPPED.labels("time_budget").inc(scores.over_budget)
        embedder = self.models.embedder
        if embedder is not None:
            stats = embedder.stats.take()
            m.EMBEDDED_TEXTS.labels("embedded").inc(stats.embedded)
            m.EMBEDDED_TEXTS.labels("cache_hit").inc(stats.cache_hits)
            m.EMBEDDER_TRUNCATED.inc(stats.truncated)
            m.EMBEDDER_SECONDS.inc(stats.seconds)
            for size in stats.batches:
                m.EMBEDDER_BATCH.observe(size)
        return scores

    def _model_metrics(self, segments: dict[Segment, np.ndarray], scores: BatchScores) -> None:
        for seg, idx in segments.items():
            m.MODEL_SCORED.labels(*seg).inc(int(scores.sampled[idx].sum()))
            m.TOXICITY.observe_many(("response", *seg), scores.toxicity[idx])
            m.TOXICITY.observe_many(("prompt", *seg), scores.prompt_toxicity[idx])
            m.GROUNDEDNESS.observe_many(seg, scores.groundedness[idx])
            for flag, values in scores.flags.items():
                count = int(values[idx].sum())
                if count:
                    m.FLAGS.labels(flag, *seg).inc(count)

    def _write_audit(self, batch: Batch) -> None:
        assert self._audit is not None
        lines = [
            msgspec.json.encode({"request_id": r.request_id, "positions": list(origins)}) + b"\n"
            for r, origins in zip(batch.records, batch.origins, strict=True)
        ]
        self._audit.write(b"".join(lines))
        self._audit.flush()

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
            outcome = cache.get(pair)
            if outcome is None:
                error_type = "" if r.error_type is None else self._error_types(r.error_type)
                outcome = (status_class(r.status, r.error_type), error_type)
                if len(cache) < 1_000:  # statuses and error types are few; stay bounded anyway
                    cache[pair] = outcome
            out.append(outcome)
        return out


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


def operational_features(records: Sequence[Record]) -> OperationalFeatures:
    return OperationalFeatures.from_rows([
        (r.latency_ms, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.prompt_chars,
         None if r.response is None else len(r.response))
        for r in records
    ])


class CanaryUpdate(Protocol):
    def update(self, models: Sequence[str | None], deployments: Sequence[str | None],
               signals: Mapping[str, np.ndarray], embeddings: np.ndarray | None,
               at: float | np.ndarray) -> list[Decision]: ...


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


def _log_events(events: list[DriftEvent]) -> None:
    # Ids and figures only: prompt and response text stays out of logs at INFO.
    for e in events:
        log.warning("drift detected: %s %s segment=%s statistic=%.4g threshold=%.4g window=%s "
                    "examples=%s", e.kind, e.stream, e.segment, e.statistic, e.threshold,
                    e.window, [rid for rid, _, _ in e.examples])

