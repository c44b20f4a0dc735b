"""The human review queue: records sampled for people to label, and what their labels say.

Automatic scores are not ground truth. Records are sampled where a reviewer's time teaches
most, with reasons: borderline scores (toxicity or groundedness within `borderline_width` of
its flag threshold), records a drift explanation named, records of a new error class, and a
uniform share as a control; at most `max_per_hour`. Reviewers' labels come back by
`request_id` (`{request_id, label, reviewer}`).

From the labels come, per flag and segment, the measured precision and recall of
driftwatch's own flags and a label-corrected estimate of the true rate. Only the design
sample counts for these: every record is drawn at its stratum's rate (`borderline` or
`other`, decided by its scores before any label exists), the frame counts every record seen
while the hour's budget lasted, and each labelled design record stands for N_h / n_h
records of its stratum (a stratified estimator, so sampling borderline records far more
often does not bias the rates). Records taken for a drift explanation or a new error class
are reviewed and kept, but do not enter the estimates: they were not drawn at random.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.config import ConfigError
from monitor.config.acting import ReviewSettings
from monitor.telemetry.metrics import METRICS as m
from monitor.types import SEGMENT_LABELS, Segment

log = logging.getLogger(__name__)

STRATA = ("borderline", "other")
# A label, as the flag it judges and whether that flag is true.
LABELS: dict[str, tuple[str, bool]] = {
    "toxic": ("toxic", True), "ok": ("toxic", False), "not_toxic": ("toxic", False),
    "ungrounded": ("ungrounded", True), "grounded": ("ungrounded", False),
    "refusal": ("refusal", True), "not_refusal": ("refusal", False),
}
FLAGS = ("toxic", "ungrounded", "refusal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sampled (
    request_id TEXT PRIMARY KEY,
    segment TEXT NOT NULL,          -- JSON list, in SEGMENT_LABELS order
    stratum TEXT NOT NULL,          -- borderline | other
    design INTEGER NOT NULL,        -- 1: drawn at its stratum's rate (counts for estimates)
    reasons TEXT NOT NULL,          -- JSON list
    flags TEXT NOT NULL,            -- JSON {flag: 0|1} as driftwatch flagged it
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS frame (
    segment TEXT NOT NULL, stratum TEXT NOT NULL, records INTEGER NOT NULL,
    PRIMARY KEY (segment, stratum)
);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL, flag TEXT NOT NULL, truth INTEGER NOT NULL,
    reviewer TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (request_id, flag, reviewer)
);
"""


def _copy(path: Path, into: sqlite3.Connection) -> None:
    """The store at `path`, read only, into `into`; ConfigError where it is no such store."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as saved:
            saved.backup(into)
    except sqlite3.Error as exc:
        raise ConfigError(f"review.store {str(path)!r}: cannot read it as a review store "
                          f"({exc})") from None


@dataclass(frozen=True)
class Estimate:
    """What the labels say of one flag in one segment."""

    flag: str
    segment: Segment
    labels: int  # labelled design records behind the figures
    precision: float  # NaN until a flagged record is labelled
    recall: float  # NaN until a truly positive record is labelled
    corrected_rate: float  # NaN until every stratum with records has a label


class ReviewStore:
    """SQLite (WAL) under `review.store`: the sampled records, the frame, the labels."""

    def __init__(self, path: Path, scratch: bool = False) -> None:
        """`scratch`: a copy in memory of the store at `path` (empty where there is none),
        for a backtest: its labelled rules read the labels the daemon reads, and what it
        samples never enters the daemon's frame (which would bias the corrected rates) or
        its queue."""
        self.path = path
        if scratch:
            self._db = sqlite3.connect(":memory:", check_same_thread=False,
                                       isolation_level=None)
            if path.is_file():
                _copy(path, self._db)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the pipeline samples, the labels thread labels
        self._estimates: dict[tuple[str, Segment], Estimate] = {}

    def close(self) -> None:
        self._db.close()

    def add_sampled(self, rows: Sequence[tuple[str, Segment, str, bool, list[str],
                                               dict[str, int], float]],
                    frame: dict[tuple[Segment, str], int]) -> set[str]:
        """Store the sampled rows and the frame counts; returns the request ids stored (a
        request already sampled, e.g. answered by stable and by a shadow, is kept once:
        labels come back by request id)."""
        stored: set[str] = set()
        with self._lock, self._db:
            # One transaction (autocommit otherwise): a refused write leaves neither rows nor
            # frame counts, so the estimates never see half a batch.
            self._db.execute("BEGIN")
            for rid, seg, stratum, design, reasons, flags, at in rows:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO sampled VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rid, json.dumps(list(seg)), stratum, int(design), json.dumps(reasons),
                     json.dumps(flags), at))
                if cursor.rowcount:
                    stored.add(rid)
            self._db.executemany(
                "INSERT INTO frame VALUES (?, ?, ?) ON CONFLICT (segment, stratum) "
                "DO UPDATE SET records = records + excluded.records",
                [(json.dumps(list(seg)), stratum, n) for (seg, stratum), n in frame.items()])
        return stored

    def add_label(self, request_id: str, label: str, reviewer: str) -> str:
        """Store one label; returns what happened: stored, unknown_label or not_sampled."""
        judged = LABELS.get(label.strip().lower())
        if judged is None:
            return "unknown_label"
        with self._lock:
            known = self._db.execute("SELECT 1 FROM sampled WHERE request_id = ?",
                                     (request_id,)).fetchone()
            if known is None:
                return "not_sampled"
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)",
                                 (request_id, judged[0], int(judged[1]), reviewer, time.time()))
        return "stored"

    def estimates(self) -> list[Estimate]:
        """Recompute every flag's and segment's figures from the labelled design sample."""
        with self._lock:
            frame = {(seg, stratum): n for seg, stratum, n in
                     self._db.execute("SELECT segment, stratum, records FROM frame")}
            rows = self._db.execute(
                "SELECT s.segment, s.stratum, s.flags, l.flag, AVG(l.truth) FROM sampled s "
                "JOIN labels l ON l.request_id = s.request_id WHERE s.design = 1 "
                "GROUP BY s.request_id, l.flag").fetchall()
        by: dict[tuple[str, str], list[tuple[str, int, float]]] = {}
        for seg, stratum, flags, flag, truth in rows:
            flagged = int(json.loads(flags).get(flag, 0))
            # Reviewers who disagree: the majority (a tie counts as true).
            by.setdefault((flag, seg), []).append((stratum, flagged, float(truth >= 0.5)))
        out = []
        for (flag, seg), labelled in sorted(by.items()):
            out.append(_estimate(flag, tuple(json.loads(seg)), labelled,
                                 {h: frame.get((seg, h), 0) for h in STRATA}))
        with self._lock:
            self._estimates = {(e.flag, e.segment): e for e in out}
        return out

    def corrected(self, flag: str, segment: Segment) -> Estimate | None:
        """The latest estimate of `flag` in `segment` (rules read it each batch)."""
        with self._lock:
            return self._estimates.get((flag, segment))


def _estimate(flag: str, segment: Segment, labelled: list[tuple[str, int, float]],
              frame: dict[str, int]) -> Estimate:
    n = Counter(stratum for stratum, _, _ in labelled)  # labelled records per stratum
    w = np.array([frame.get(stratum, 0) / n[stratum] for stratum, _, _ in labelled])
    x = np.array([f for _, f, _ in labelled], dtype=float)
    y = np.array([t for _, _, t in labelled], dtype=float)
    precision = float((w * x * y).sum() / (w * x).sum()) if (w * x).sum() > 0 else math.nan
    recall = float((w * x * y).sum() / (w * y).sum()) if (w * y).sum() > 0 else math.nan
    covered = all(n[h] for h, records in frame.items() if records > 0)
    total = sum(frame.values())
    rate = float((w * y).sum() / total) if covered and total else math.nan
    return Estimate(flag, segment, len(labelled), precision, recall, rate)


def export(estimates: Sequence[Estimate]) -> None:
    for e in estimates:
        labels = (e.flag, *e.segment)
        m.FLAG_LABELS.labels(*labels).set(e.labels)
        m.FLAG_PRECISION.labels(*labels).set(e.precision)
        m.FLAG_RECALL.labels(*labels).set(e.recall)
        m.CORRECTED_RATE.labels(*labels).set(e.corrected_rate)


@dataclass
class _Budget:
    hour: int = -1
    used: int = 0


class ReviewSampler:
    """Chooses the records of a batch to review, with their reasons, within the budget."""

    def __init__(self, settings: ReviewSettings, store: ReviewStore, toxic_threshold: float,
                 ungrounded_below: float, seed: int = 0) -> None:
        self.settings = settings
        self.store = store
        self._thresholds = {"toxicity": toxic_threshold, "groundedness": ungrounded_below}
        self._rng = np.random.default_rng(seed)
        self._budget = _Budget()

    def sample(self, request_ids: Sequence[str], segments: Sequence[Segment],
               scores: dict[str, np.ndarray], flags: dict[str, np.ndarray],
               named: dict[str, str], now: float | None = None
               ) -> list[tuple[int, list[str]]]:
        """The records to review, in order, with their reasons; `named`: request id -> the
        reason a detector named it (drift, new_error_class). Records the budget cannot take
        are neither sampled nor counted in the frame."""
        s = self.settings
        now = time.time() if now is None else now
        hour = int(now // 3_600)
        if hour != self._budget.hour:
            self._budget = _Budget(hour)
        n = len(request_ids)
        width = s.borderline_width
        borderline = np.zeros(n, dtype=bool)
        for name, threshold in self._thresholds.items():
            values = scores.get(name)
            if values is not None:
                borderline |= np.abs(np.nan_to_num(values, nan=np.inf) - threshold) <= width
        draw = self._rng.random(n) < np.where(borderline, s.borderline_rate, s.uniform_rate)
        chosen: list[tuple[int, list[str]]] = []
        rows = []
        frame: dict[tuple[Segment, str], int] = {}
        for i in range(n):
            if self._budget.used >= s.max_per_hour:
                m.REVIEW_SKIPPED.inc(n - i)
                break
            stratum = "borderline" if borderline[i] else "other"
            frame[(segments[i], stratum)] = frame.get((segments[i], stratum), 0) + 1
            reasons = [stratum if stratum == "borderline" else "uniform"] if draw[i] else []
            if request_ids[i] in named:
                reasons.append(named[request_ids[i]])
            if not reasons:
                continue
            self._budget.used += 1
            chosen.append((i, reasons))
            rows.append((request_ids[i], segments[i], stratum, bool(draw[i]), reasons,
                         {f: int(bool(flags[f][i])) for f in FLAGS if f in flags}, now))
        try:
            stored = self.store.add_sampled(rows, frame)
        except sqlite3.Error as exc:
            # Best effort, as the lines are: raised, it would run the batch again and feed its
            # records to the detectors and rules a second time. The rows and the frame counts
            # go in one transaction, so the estimates leave out the whole batch, unbiased.
            m.REVIEW_WRITE_FAILURES.labels("store").inc(len(rows))
            log.error("review store %s refused %d sampled record(s) (%s: %s); this batch is "
                      "left out of the review sample", self.store.path, len(rows),
                      type(exc).__name__, exc)
            return []
        for _, reasons in chosen:
            for reason in reasons:
                m.REVIEW_SAMPLED.labels(reason).inc()
        return [(i, reasons) for i, reasons in chosen if request_ids[i] in stored]


def encoded_within(line: dict[str, object], max_bytes: int) -> bytes:
    """`line` as UTF-8 JSON of at most `max_bytes` where it can be: past that its texts (the
    prompt, the response, each context passage) are cut, each to the same share of its
    length, and `"cut": true` says so. A long document's review line must still reach the
    review topic, whose broker refuses a message past its limit."""
    value = json.dumps(line, ensure_ascii=False).encode()
    share = 1.0
    while len(value) > max_bytes and share > 0.0:
        share = share * max_bytes / len(value) * 0.9  # the rest of the line does not shrink
        if share < 1e-4:
            share = 0.0
        value = json.dumps(_texts_cut(line, share), ensure_ascii=False).encode()
    return value


def _texts_cut(line: dict[str, object], share: float) -> dict[str, object]:
    def cut(text: object) -> object:
        return text[:int(len(text) * share)] if isinstance(text, str) else text

    context = line.get("context")
    return {**line, "prompt": cut(line.get("prompt")), "response": cut(line.get("response")),
            "context": [cut(p) for p in context] if isinstance(context, list) else context,
            "cut": True}


def review_line(request_id: str, segment: Segment, reasons: list[str],
                scores: dict[str, float | None], flags: dict[str, int], prompt: str | None,
                response: str | None, context: Sequence[str] | None) -> dict[str, object]:
    """One record to review, as written to the review file and topic."""
    return {"request_id": request_id,
            "segment": {k: v for k, v in zip(SEGMENT_LABELS, segment, strict=True) if v},
            "reasons": reasons, "scores": scores, "flags": flags, "prompt": prompt,
            "response": response, "context": list(context or []),
            "labels": sorted(LABELS)}
