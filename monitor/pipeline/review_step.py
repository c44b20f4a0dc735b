"""The review step: picks the batch's records for human review (monitor.acting.review) and
writes them to the review file and/or hands them to the review topic's producer."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np

from monitor.acting.review import ReviewSampler, review_line
from monitor.pipeline.append_file import AppendFile
from monitor.pipeline.stages import Stateless, Work
from monitor.telemetry.metrics import METRICS as m
from monitor.types import Segment

log = logging.getLogger(__name__)


class ReviewStep(Stateless):
    """After drift and the rules: a batch's records to review, with why each was chosen."""

    def __init__(self, sampler: ReviewSampler,
                 publish: Callable[[list[dict[str, object]]], None] | None = None) -> None:
        """`publish`: sends the lines to `review.topic` and returns once they are sent."""
        self.sampler = sampler
        self._publish = publish
        path = sampler.settings.file
        self._file = AppendFile(path) if path is not None else None

    def process(self, work: Work) -> None:
        if not work.stateful or work.scores is None:
            return
        records, scores = work.batch.records, work.scores
        segment_of: list[Segment] = [("",) * 4] * len(records)
        for seg, idx in work.batch.segments.items():
            for i in idx.tolist():
                segment_of[i] = seg
        named: dict[str, str] = {}
        for e in work.events:  # the records a detector named: its examples
            reason = "new_error_class" if e.kind == "new_error_class" else "drift"
            for rid, _, _ in e.examples:
                named.setdefault(rid, reason)
        values = {"toxicity": np.where(scores.sampled, scores.toxicity, np.nan),
                  "groundedness": np.where(scores.sampled, scores.groundedness, np.nan)}
        chosen = self.sampler.sample([r.request_id for r in records], segment_of, values,
                                     scores.flags, named)
        if not chosen:
            return
        lines = [review_line(
            records[i].request_id, segment_of[i], reasons,
            {k: None if np.isnan(v[i]) else round(float(v[i]), 4) for k, v in values.items()},
            {f: int(bool(v[i])) for f, v in scores.flags.items()}, records[i].prompt_text,
            records[i].response, records[i].context) for i, reasons in chosen]
        if self._file is not None:
            self._write(self._file, lines)
        if self._publish is not None:
            self._publish(lines)

    def _write(self, file: AppendFile, lines: list[dict[str, object]]) -> None:
        try:
            file.write("".join(json.dumps(line) + "\n" for line in lines).encode())
        except OSError as exc:  # a full disk: the sample loses these, the batch goes on
            m.REVIEW_WRITE_FAILURES.labels("file").inc(len(lines))
            log.error("review file %s: %d line(s) not written (%r)", file.path, len(lines),
                      exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
