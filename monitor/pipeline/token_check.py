"""The tokenization check: reported token counts against a local tokenizer's, per segment.

Counting is stateless (the score stage does it, and a split deployment sends the counts on
with the scored record); judging is stateful (it runs with drift and the rules). Each
record's prompt (with the context passages it does not already contain, as a serving
stack sends them) and response are counted; per segment and stream a line learnt on the
segment's first records says what the stack should report (detectors.token_consistency).
A record off that line is flagged `token_mismatch` (a rule signal, in
driftwatch_flags_total), and the ratios reported / counted go to the drift stage as the
features `prompt_token_ratio` and `completion_token_ratio`, so a shift of the ratio is
feature drift too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from consumers.wire import Record
from detectors.token_consistency import TokenCounter, TokenLine
from monitor.config.scoring import TokenizerSettings
from monitor.pipeline.stages import Stateless, Work
from monitor.telemetry.metrics import METRICS as m
from monitor.types import Segment

STREAMS = {"prompt": "prompt_token_ratio", "completion": "completion_token_ratio"}


def prompt_input(record: Record) -> str | None:
    """The prompt as the model read it: the prompt text plus the context passages that it
    does not already quote."""
    text = record.prompt_text
    if text is None:
        return None
    extra = [c for c in record.context or () if c not in text]
    return "\n".join([text, *extra]) if extra else text


class TokenCountStage(Stateless):
    """Counts each record's prompt and completion tokens with the local tokenizer."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    def process(self, work: Work) -> None:
        records = work.batch.records
        work.token_counts = {
            "prompt": self.counter.count([prompt_input(r) for r in records]),
            "completion": self.counter.count([r.response for r in records])}


class TokenCheckStep:
    """Checks the reported counts per segment and hands on flags and ratios."""

    def __init__(self, settings: TokenizerSettings) -> None:
        self.settings = settings
        self._lines: dict[Segment, dict[str, TokenLine]] = {}

    def process(self, work: Work) -> None:
        counted = work.token_counts
        if not work.stateful or counted is None:
            return
        n = len(work.batch.records)
        features = work.batch.features
        reported = {"prompt": features.prompt_tokens, "completion": features.completion_tokens}
        mismatch = np.full(n, np.nan)
        ratios = {name: np.full(n, np.nan) for name in STREAMS.values()}
        for seg, idx in work.batch.segments.items():
            lines = self._lines.get(seg)
            if lines is None:
                lines = self._lines[seg] = {
                    stream: TokenLine(self.settings.reference_records, self.settings.threshold)
                    for stream in STREAMS}
            for stream, line in lines.items():
                flags, ratio = line.update(counted[stream][idx], reported[stream][idx])
                ratios[STREAMS[stream]][idx] = ratio
                # A record is a mismatch when either stream is; NaN when neither was judged.
                mismatch[idx] = np.fmax(mismatch[idx], flags)
                if line.ready:
                    m.TOKEN_LINE.labels(stream, "slope", *seg).set(line.slope)
                    m.TOKEN_LINE.labels(stream, "offset", *seg).set(line.offset)
            count = int(np.nansum(mismatch[idx]))
            if count:
                m.FLAGS.labels("token_mismatch", *seg).inc(count)
        work.signals["token_mismatch"] = mismatch
        work.numeric.update(ratios)

    def state(self) -> dict[str, object]:
        return {"token_lines": dict(self._lines)}

    def restore(self, parts: Mapping[str, object]) -> None:
        lines = parts.get("token_lines")
        if isinstance(lines, dict):
            self._lines = lines

    def close(self) -> None:
        return None
