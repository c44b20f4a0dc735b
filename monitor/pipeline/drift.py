"""The drift stage: per segment, embedding drift on prompts and responses (online MMD) and
feature drift on scalar and categorical features, against a reference.

The reference is a pinned snapshot, or the first `warmup_records` of each segment. It is
never rolled over silently: a new reference takes an explicit command or rule
(`request_rollover`). A command adopts the segment's most recent `warmup_records` records;
a rule's decision, the `warmup_records` records that follow it: a drift is decided within
a few records of its start, so the records before the decision are the old traffic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from consumers.wire import Record
from detectors.feature_drift import StreamingChangeDetectors, WindowedFeatureDrift
from detectors.mmd_online import OnlineMMD
from detectors.operational import OperationalFeatures, status_class
from monitor.config import DriftSettings
from monitor.pipeline.model_scoring import BatchScores
from monitor.pipeline.reference import Reference, ReferenceStore, ReferenceStoreError
from monitor.telemetry.metrics import METRICS as m
from monitor.types import EXAMPLE_TEXT_CHARS, SEGMENT_LABELS, DriftEvent, Segment

log = logging.getLogger(__name__)
STREAMS = ("prompt", "response")
_CLASS_LIMIT = 64  # characters of an error type or status in an error class


def outcome(record: Record) -> str:
    """The categorical error class of a record: "ok", or "error" plus its error type (its
    status when it names none, so a new status is a new class too)."""
    cls = status_class(record.status, record.error_type)
    if cls == "ok":
        return cls
    kind = record.error_type or f"status {(record.status or '').strip().lower()}"
    return f"{cls}:{kind[:_CLASS_LIMIT]}"


def feature_columns(f: OperationalFeatures, scores: BatchScores) -> dict[str, np.ndarray]:
    """The scalar features drift is tested on, one value per record (NaN = missing)."""
    return {
        "latency_seconds": f.latency_seconds, "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens, "cost_usd": f.cost_usd,
        "prompt_chars": f.prompt_chars, "response_chars": f.response_chars,
        "toxicity": scores.toxicity, "groundedness": scores.groundedness,
    }


class _Recent:
    """The last `size` model-scored rows of an armed segment: what a rollover adopts."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._parts: deque[tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]] = \
            deque()
        self.n = 0

    def add(self, vectors: dict[str, np.ndarray], numeric: dict[str, np.ndarray],
            outcomes: list[str]) -> None:
        self._parts.append((vectors, numeric, outcomes))
        self.n += len(outcomes)
        while self._parts and self.n - len(self._parts[0][2]) >= self.size:
            self.n -= len(self._parts.popleft()[2])

    def take(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
        cut = max(0, self.n - self.size)
        parts = list(self._parts)
        prompts = np.concatenate([v["prompt"] for v, _, _ in parts])[cut:]
        responses = np.concatenate([v["response"] for v, _, _ in parts])[cut:]
        numeric = {k: np.concatenate([n[k] for _, n, _ in parts])[cut:] for k in parts[0][1]}
        outcomes = [o for _, _, out in parts for o in out][cut:]
        return prompts, responses, numeric, outcomes


@dataclass
class _SegmentState:
    warmup_prompts: list[np.ndarray] = field(default_factory=list)
    warmup_responses: list[np.ndarray] = field(default_factory=list)
    warmup_numeric: list[dict[str, np.ndarray]] = field(default_factory=list)
    warmup_outcomes: list[str] = field(default_factory=list)
    collected: int = 0
    mmd: dict[str, OnlineMMD] = field(default_factory=dict)
    features: WindowedFeatureDrift | None = None
    changes: StreamingChangeDetectors | None = None
    window_ids: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    recent: _Recent | None = None
    # Embedding detectors being calibrated in the background, and their reference (kept so a
    # checkpoint taken meanwhile calibrates again on restore); records not tested meanwhile.
    pending: Future[dict[str, OnlineMMD]] | None = None
    pending_reference: tuple[np.ndarray, np.ndarray] | None = None
    untested: int = 0
    # Error classes of the reference and those announced since; None: not yet derived (an
    # older checkpoint), taken from the feature detector's reference then.
    known_classes: set[str] | None = None
    announced: int = 0
    # A rule's rollover waits for this many more records, then adopts them (None: none
    # asked); the reason is logged and saved with it.
    rollover_in: int | None = None
    rollover_reason: str = ""

    def __getstate__(self) -> dict[str, object]:
        return {**vars(self), "pending": None}  # a future does not outlive the process


_building: set[int] = set()  # calibrator threads inside a build (torch work)


def calibrating() -> bool:
    """Whether a background calibration is inside torch now: exiting the interpreter under it
    would abort (the CLI exits at once instead, as it does past a busy worker)."""
    return bool(_building)


class _Calibrator:
    """One daemon thread that builds detectors in turn: calibration is torch work that
    releases the GIL, so the batches go on meanwhile. A daemon thread never holds up exit."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[dict[str, OnlineMMD]],
                                            Callable[[], dict[str, OnlineMMD]]]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None

    def submit(self, build: Callable[[], dict[str, OnlineMMD]]) -> Future[dict[str, OnlineMMD]]:
        future: Future[dict[str, OnlineMMD]] = Future()
        self._jobs.put((future, build))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-calibration",
                                            daemon=True)
            self._thread.start()
        return future

    def _run(self) -> None:
        while True:
            future, build = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            _building.add(threading.get_ident())
            try:
                future.set_result(build())
            except BaseException as exc:  # handed to the pipeline thread, which logs it
                future.set_exception(exc)
            finally:
                _building.discard(threading.get_ident())


def _window_texts(held: list[tuple[str, str]], records: Sequence[Record], idx: np.ndarray,
                  stream: str, window: int) -> list[tuple[str, str]]:
    """A detector's window as (request id, text) after the records `idx` (what it `held`
    before them, then theirs): only the last `window` are made."""
    tail = [(records[i].request_id,
             (records[i].user_prompt if stream == "prompt" else records[i].response) or "")
            for i in idx[max(0, len(idx) - window):]]
    return (held + tail)[-window:]


def warmup_name(base: str, segment: Segment, kind: str = "warmup") -> str:
    """Store name of a segment's own reference, from its warm-up or from a rollover (segment
    values may hold any label text)."""
    digest = hashlib.blake2b(json.dumps(segment).encode(), digest_size=6).hexdigest()
    return f"{base}.{kind}.{digest}"


class DriftStage:
    """The drift stage: embedding and feature drift per segment, against its reference."""

    def __init__(self, settings: DriftSettings, device: str,
                 reference: Reference | None = None, store: ReferenceStore | None = None,
                 embedding_model: str = "", calibrate_in_background: bool = False) -> None:
        """`calibrate_in_background`: the daemon's choice, when the settings allow it (a
        backtest calibrates inline, so its detections do not depend on the machine's speed)."""
        self.settings = settings
        self.device = device
        self._reference = reference
        # Warm-up references are saved here, and reused after a restart rather than relearnt
        # from whatever traffic comes first: a reference never rolls over silently.
        self._store = store
        self._embedding_model = embedding_model
        self._segments: dict[Segment, _SegmentState] = {}
        self._calibrated: dict[str, OnlineMMD] = {}  # per stream, for the shared reference
        background = settings.embedding.calibration == "background"
        self._calibrator = _Calibrator() if background and calibrate_in_background else None
        self._labels: tuple[str, ...] = SEGMENT_LABELS
        # Rollover requests arrive from other threads (the admin endpoint); applied in update().
        self._rollovers: queue.SimpleQueue[tuple[dict[str, str], str, bool]] = \
            queue.SimpleQueue()

    @classmethod
    def from_settings(cls, settings: DriftSettings, device: str, embedding_model: str = "",
                      keep_warmup: bool = True, background: bool = False) -> DriftStage:
        """`keep_warmup`: save and reuse warm-up references (the daemon); a backtest leaves
        the store as it found it. `background`: calibrate off the batch path (the daemon)."""
        ref = settings.reference
        store = ReferenceStore(ref.store)
        snapshot = None
        if ref.source == "snapshot":
            snapshot = store.load(ref.name, ref.version, embedding_model)
            log.info("drift reference %s v%d (%d records)", ref.name, snapshot.meta.version,
                     snapshot.meta.records)
        return cls(settings, device, snapshot, store=store if keep_warmup else None,
                   embedding_model=embedding_model, calibrate_in_background=background)

    def request_rollover(self, segment: Mapping[str, str] | None = None,
                         reason: str = "command", following: bool = False) -> None:
        """Adopt the recent records as the reference of every armed segment matching
        `segment` (label -> value; None or empty: all), at the next batch; with `following`
        (a rule's decision that a drift began), the `warmup_records` records that come next
        instead, once they are in (a second request meanwhile changes nothing). The segment
        is judged against its old reference until then. Thread-safe."""
        self._rollovers.put((dict(segment or {}), reason, following))

    def state(self) -> dict[Segment, _SegmentState]:
        """Every tracked segment's warm-up, detectors and recent rows, for a checkpoint."""
        return dict(self._segments)

    def restore(self, segments: Mapping[Segment, object]) -> None:
        """Resume from `state()`, on this stage's device. Segments beyond the cap are dropped."""
        for seg, state in list(segments.items())[: self.settings.max_segments]:
            if not isinstance(state, _SegmentState):
                continue
            for detector in state.mmd.values():
                detector.to(self.device)
            if state.pending_reference is not None:  # saved mid-calibration
                if self._calibrator is not None:
                    self._calibrate(seg, state, *state.pending_reference)
                else:
                    state.mmd, state.pending_reference = self._build(*state.pending_reference), None
            self._segments[seg] = state
            m.DRIFT_REFERENCE_RECORDS.labels(*seg).set(state.collected)
        log.info("drift state of %d segment(s) restored (%d armed)", len(self._segments),
                 sum(s.features is not None for s in self._segments.values()))

    def update(self, records: Sequence[Record], scores: BatchScores,
               numeric: dict[str, np.ndarray], outcomes: Sequence[str],
               segments: dict[Segment, np.ndarray]) -> list[DriftEvent]:
        """Feed one batch (model-scored rows only); return the detections it caused."""
        while not self._rollovers.empty():
            self._rollover(*self._rollovers.get())
        if scores.prompt_embeddings is None or scores.response_embeddings is None:
            return []
        # New error classes are looked for in every record (not only those sampled for
        # embeddings) after the segment's reference is complete: from here, or from the
        # record that completed it in this batch.
        check_from = {seg: 0 for seg in segments
                      if (st := self._segments.get(seg)) is not None and st.features is not None}
        sampled = np.flatnonzero(scores.sampled)
        row_of = np.full(len(records), -1)
        row_of[sampled] = np.arange(len(sampled))
        events: list[DriftEvent] = []
        for seg, idx in segments.items():
            idx = idx[scores.sampled[idx]]
            if idx.size == 0:
                continue
            state = self._state(seg)
            if state is None:
                continue
            if state.features is None:  # warm-up: exactly the first warmup_records form it
                need = self.settings.reference.warmup_records - state.collected
                head, idx = idx[:need], idx[need:]
                self._collect(seg, state, *self._slice(scores, row_of, numeric, outcomes, head))
                if state.features is not None and head.size:
                    check_from[seg] = int(head[-1]) + 1
                if idx.size == 0:
                    continue
            if state.pending is not None:
                self._install(seg, state, idx.size)
            vectors, seg_numeric, seg_outcomes = self._slice(scores, row_of, numeric, outcomes,
                                                             idx)
            events += self._detect(seg, state, records, idx, vectors, seg_numeric,
                                   seg_outcomes)
            if state.recent is None:
                state.recent = _Recent(self.settings.reference.warmup_records)
            state.recent.add(vectors, seg_numeric, seg_outcomes)
            if state.rollover_in is not None:
                state.rollover_in -= len(seg_outcomes)
                if state.rollover_in <= 0:
                    state.rollover_in = None
                    self._adopt(seg, state, state.rollover_reason)
        if self.settings.new_error_classes.enabled:
            for seg, start in check_from.items():
                idx = segments[seg]
                events += self._new_classes(seg, self._segments[seg], records,
                                            idx[idx >= start], outcomes)
        return events

    @staticmethod
    def _slice(scores: BatchScores, row_of: np.ndarray, numeric: dict[str, np.ndarray],
               outcomes: Sequence[str], idx: np.ndarray
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
        assert scores.prompt_embeddings is not None and scores.response_embeddings is not None
        vectors = {"prompt": scores.prompt_embeddings[row_of[idx]],
                   "response": scores.response_embeddings[row_of[idx]]}
        return vectors, {k: v[idx] for k, v in numeric.items()}, [outcomes[i] for i in idx]

    # -- internals --------------------------------------------------------------------------

    def _state(self, seg: Segment) -> _SegmentState | None:
        state = self._segments.get(seg)
        if state is None:
            if len(self._segments) >= self.settings.max_segments:
                m.DRIFT_SEGMENTS_UNTRACKED.inc()
                return None
            state = self._segments[seg] = _SegmentState()
            # A segment's rolled-over reference wins over the shared snapshot or its warm-up.
            r = self._saved(seg, "rollover") or self._reference or self._saved(seg, "warmup")
            if r is not None:
                self._arm(seg, state, r.prompt_embeddings, r.response_embeddings, r.numeric,
                          list(r.categorical.get("outcome", [])), shared=r is self._reference)
        return state

    def _saved(self, seg: Segment, kind: str) -> Reference | None:
        if self._store is None:
            return None
        name = warmup_name(self.settings.reference.name, seg, kind)
        if not self._store.versions(name):
            return None
        try:
            reference = self._store.load(name, embedding_model=self._embedding_model)
        except ReferenceStoreError as exc:
            log.warning("%s; warming up again", exc)
            return None
        log.info("reusing the %s reference of segment %s (%s v%d)", kind, seg, name,
                 reference.meta.version)
        return reference

    def _rollover(self, wanted: dict[str, str], reason: str, following: bool) -> None:
        matched = 0
        for seg, state in self._segments.items():
            labels = dict(zip(self._labels, seg, strict=True))
            if any(labels.get(k) != v for k, v in wanted.items()) or state.features is None:
                continue
            matched += 1
            if following:
                if state.rollover_in is None:
                    state.rollover_in = self.settings.reference.warmup_records
                    state.rollover_reason = reason
                    log.warning("drift reference of segment %s rolls over to its next %d "
                                "records (%s)", seg, state.rollover_in, reason)
                continue
            recent = state.recent
            need = min(self.settings.reference.warmup_records, 50)
            if recent is None or recent.n < need:
                log.warning("rollover of segment %s refused: %d recent records, at least %d "
                            "needed; the reference stays", seg, 0 if recent is None else recent.n,
                            need)
                continue
            self._adopt(seg, state, reason)
        if not matched:
            log.warning("rollover requested for %s: no armed segment matches", wanted or "all")

    def _adopt(self, seg: Segment, state: _SegmentState, reason: str) -> None:
        """The segment's recent records become its reference: saved, armed, counted."""
        assert state.recent is not None
        prompts, responses, numeric, outcomes = state.recent.take()
        version = self._snapshot(warmup_name(self.settings.reference.name, seg, "rollover"),
                                 prompts, responses, numeric, outcomes,
                                 f"rollover:{reason}:{list(seg)}")
        self._arm(seg, state, prompts, responses, numeric, outcomes)
        m.DRIFT_ROLLOVERS.labels(*seg).inc()
        log.warning("drift reference of segment %s rolled over to its last %d records "
                    "(%s%s)", seg, len(outcomes), reason,
                    f", saved as v{version}" if version else "")

    def _collect(self, seg: Segment, state: _SegmentState, vectors: dict[str, np.ndarray],
                 numeric: dict[str, np.ndarray], outcomes: list[str]) -> None:
        if not outcomes:
            return
        state.warmup_prompts.append(vectors["prompt"])
        state.warmup_responses.append(vectors["response"])
        state.warmup_numeric.append(numeric)
        state.warmup_outcomes += outcomes
        state.collected += len(outcomes)
        m.DRIFT_REFERENCE_RECORDS.labels(*seg).set(state.collected)
        if state.collected >= self.settings.reference.warmup_records:
            keys = state.warmup_numeric[0].keys()
            prompts = np.concatenate(state.warmup_prompts)
            responses = np.concatenate(state.warmup_responses)
            numeric = {k: np.concatenate([n[k] for n in state.warmup_numeric]) for k in keys}
            self._snapshot(warmup_name(self.settings.reference.name, seg), prompts, responses,
                           numeric, state.warmup_outcomes, f"warmup:{list(seg)}")
            self._arm(seg, state, prompts, responses, numeric, state.warmup_outcomes)
            state.warmup_prompts, state.warmup_responses, state.warmup_numeric = [], [], []

    def _snapshot(self, name: str, prompts: np.ndarray, responses: np.ndarray,
                  numeric: dict[str, np.ndarray], outcomes: list[str], source: str) -> int:
        """Save a reference the segment is armed with; its version, 0 when not saved. A store
        that cannot take it (a full disk) leaves the detectors armed all the same, in memory
        and in the checkpoints: raised, it would have the batch run again, collecting its
        records into the reference a second time."""
        if self._store is None:
            return 0
        try:
            return self._store.save(name, prompts, responses, numeric, {"outcome": outcomes},
                                    source, self._embedding_model).version
        except OSError as exc:
            m.DRIFT_REFERENCE_SAVE_FAILURES.inc()
            log.error("reference %s not saved under %s (%r): the segment is armed with it all "
                      "the same; a restart without a checkpoint would learn it again", name,
                      self._store.root, exc)
            return 0

    def _arm(self, seg: Segment, state: _SegmentState, prompts: np.ndarray,
             responses: np.ndarray, numeric: dict[str, np.ndarray],
             outcomes: list[str], shared: bool = False) -> None:
        """`shared`: the snapshot every segment uses, calibrated once and cloned after."""
        started = time.monotonic()
        state.mmd, state.window_ids = {}, {stream: [] for stream in STREAMS}
        if shared and self._calibrated:
            state.mmd = {stream: d.clone() for stream, d in self._calibrated.items()}
        elif shared or self._calibrator is None:
            state.mmd = self._build(prompts, responses)
            if shared:
                self._calibrated = {stream: d.clone() for stream, d in state.mmd.items()}
        else:
            self._calibrate(seg, state, prompts, responses)
        f = self.settings.features
        state.features = WindowedFeatureDrift(numeric, {"outcome": outcomes}, f.window_size,
                                              fdr=f.fdr, psi_threshold=f.psi_threshold)
        # Streaming detectors need no reference: they watch for a change in the live stream.
        state.changes = StreamingChangeDetectors(rates=["error_rate"], means=["latency_seconds"])
        state.collected = len(outcomes)
        state.known_classes, state.announced = set(outcomes), 0
        m.DRIFT_REFERENCE_RECORDS.labels(*seg).set(state.collected)
        if state.pending is None:
            log.info("drift detectors armed for segment %s on %d reference records in %.1f s",
                     seg, len(outcomes), time.monotonic() - started)

    def _build(self, prompts: np.ndarray, responses: np.ndarray) -> dict[str, OnlineMMD]:
        e = self.settings.embedding
        return {stream: OnlineMMD(ref, ert=e.ert, window_size=e.window_size,
                                  n_features=e.n_features, n_bootstraps=e.n_bootstraps,
                                  scales=e.scales, device=self.device, seed=e.seed)
                for stream, ref in zip(STREAMS, (prompts, responses), strict=True)}

    def _calibrate(self, seg: Segment, state: _SegmentState, prompts: np.ndarray,
                   responses: np.ndarray) -> None:
        assert self._calibrator is not None
        state.mmd, state.untested = {}, 0
        state.pending_reference = (prompts, responses)
        state.pending = self._calibrator.submit(lambda: self._build(prompts, responses))
        log.info("drift: calibrating the embedding detectors of segment %s in the background "
                 "(%d reference records); its records are tested for embedding drift once "
                 "done", seg, len(prompts))

    def _install(self, seg: Segment, state: _SegmentState, records: int) -> None:
        """Put calibrated detectors in place, or count `records` as untested meanwhile."""
        assert state.pending is not None
        if not state.pending.done():
            state.untested += records
            m.DRIFT_UNTESTED.labels(*seg).inc(records)
            return
        future, state.pending = state.pending, None
        try:
            state.mmd = future.result()
        except Exception:
            log.exception("drift: background calibration of segment %s failed; calibrating "
                          "inline", seg)
            assert state.pending_reference is not None
            state.mmd = self._build(*state.pending_reference)
        state.pending_reference = None
        log.info("drift detectors armed for segment %s; %d record(s) came while they were "
                 "calibrated and were not tested for embedding drift", seg, state.untested)

    def _detect(self, seg: Segment, state: _SegmentState, records: Sequence[Record],
                idx: np.ndarray, vectors: dict[str, np.ndarray],
                numeric: dict[str, np.ndarray], outcomes: list[str]) -> list[DriftEvent]:
        events: list[DriftEvent] = []
        for stream, detector in state.mmd.items():
            # After a detection the reset detector takes the rest of the batch, so a batch
            # detects exactly what the same records one at a time would.
            pos, detected = 0, False
            while pos < len(idx):
                start = detector.t
                detector.update(vectors[stream][pos:])
                if not (detector.drift_detected and detector.detected_at is not None):
                    state.window_ids[stream] = _window_texts(
                        state.window_ids[stream], records, idx[pos:], stream,
                        detector.window_size)
                    break
                end = pos + detector.detected_at - start + 1  # records up to the crossing
                # The examples come from the window the detector holds: this stretch's end.
                ids = _window_texts(state.window_ids[stream], records, idx[pos:], stream,
                                    detector.window_size)
                examples = tuple(
                    (rid, text[:EXAMPLE_TEXT_CHARS], ref_row)
                    for (rid, text), ref_row, _ in detector.explain(ids, k=3)
                )
                events.append(DriftEvent("embedding", stream, seg, int(idx[end - 1]),
                                         detector.detected_statistic,
                                         detector.detected_threshold, examples=examples,
                                         window=detector.detected_scale))
                m.DRIFT_DETECTIONS.labels("embedding", stream).inc()
                detector.reset()
                state.window_ids[stream] = []
                pos, detected = end, True
            m.DRIFT_STATISTIC.labels(stream, *seg).set(detector.statistic)
            m.DRIFT_THRESHOLD.labels(stream, *seg).set(detector.threshold)
            m.DRIFT_DETECTED.labels(stream, *seg).set(detected)
        assert state.features is not None and state.changes is not None
        state.changes.update({"error_rate": np.array([o != "ok" for o in outcomes], dtype=float),
                              "latency_seconds": numeric["latency_seconds"]})
        for name in state.changes.drifted:
            events.append(DriftEvent("change", name, seg, int(idx[-1]), float("nan"),
                                     float("nan")))
            m.DRIFT_DETECTIONS.labels("change", name).inc()
        state.features.update(numeric, {"outcome": outcomes})
        for result in state.features.results if state.features.drift_detected else []:
            if result.drift:
                events.append(DriftEvent("feature", result.feature, seg, int(idx[-1]),
                                         result.statistic, state.features.fdr,
                                         q_value=result.q_value))
                m.DRIFT_DETECTIONS.labels("feature", result.feature).inc()
        return events

    def _new_classes(self, seg: Segment, state: _SegmentState, records: Sequence[Record],
                     idx: np.ndarray, outcomes: Sequence[str]) -> list[DriftEvent]:
        """One event per error class the segment's reference never saw, at its first record,
        with the ids of its first records in the batch; up to `max_per_segment` classes."""
        settings = self.settings.new_error_classes
        if state.announced >= settings.max_per_segment:
            return []
        known = state.known_classes
        if known is None:
            assert state.features is not None
            known = state.known_classes = set(
                state.features.categorical_reference.get("outcome", ()))
        first: dict[str, list[int]] = {}
        for i in idx.tolist():
            cls = outcomes[i]
            if cls not in known and len(seen := first.setdefault(cls, [])) < settings.example_ids:
                seen.append(i)
        events: list[DriftEvent] = []
        for cls, rows in first.items():
            if state.announced >= settings.max_per_segment:
                break
            known.add(cls)
            state.announced += 1
            m.DRIFT_NEW_ERROR_CLASSES.labels(*seg).inc()
            events.append(DriftEvent(
                "new_error_class", "outcome", seg, rows[0], float(len(rows)), float("nan"),
                examples=tuple((records[i].request_id, cls, -1) for i in rows)))
            if state.announced == settings.max_per_segment:
                log.warning("drift: segment %s has shown %d new error classes, the most "
                            "announced per segment (drift.new_error_classes.max_per_segment); "
                            "later ones show in the outcome's feature drift only", seg,
                            state.announced)
        return events
