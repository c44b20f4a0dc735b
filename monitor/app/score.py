"""`driftwatch score`: wire-format records from a file or stdin, one JSON line of scores each.

Users run it on recorded traffic before they trust the daemon; it is also how the
scorers are evaluated. The model stage is the daemon's (same config, same code).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from consumers.decode import Rejection
from consumers.wire import Record
from monitor.app.wiring import OFFLINE_BATCH, offline_decoder
from monitor.config import OfflineConfig
from monitor.pipeline.model_scoring import BatchScores, ModelScorers


def _null(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def score_lines(
    lines: Iterable[bytes], config: OfflineConfig, models: ModelScorers | None = None
) -> Iterator[dict[str, object]]:
    """One output object per input line, in order; bad lines say why (as the dead-letter topic
    would)."""
    models = models or ModelScorers(config.scorers, config.scoring)
    decoder = offline_decoder(config)
    pending: list[tuple[int, Record | Rejection]] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        pending.append((number, decoder.decode(line)))
        if len(pending) >= OFFLINE_BATCH:
            yield from _flush(pending, models)
            pending = []
    yield from _flush(pending, models)


def _flush(pending: list[tuple[int, Record | Rejection]], models: ModelScorers
           ) -> Iterator[dict[str, object]]:
    records = [r for _, r in pending if isinstance(r, Record)]
    scores = models.score(records) if records else None
    j = 0
    for number, item in pending:
        if isinstance(item, Rejection):
            yield {"line": number, "request_id": None, "error": item.reason,
                   "detail": item.detail}
            continue
        assert scores is not None
        yield _row(item, scores, j)
        j += 1


def _row(record: Record, s: BatchScores, i: int) -> dict[str, object]:
    return {
        "request_id": record.request_id,
        "toxicity": _null(s.toxicity[i]),
        "prompt_toxicity": _null(s.prompt_toxicity[i]),
        "groundedness": _null(s.groundedness[i]),
        "flags": sorted(name for name, values in s.flags.items() if values[i]),
        "novel_numbers": list(s.novel_numbers[i]),
        "novel_names": list(s.novel_names[i]),
    }


def run_score(input_path: Path | None, output: IO[bytes], config: OfflineConfig) -> int:
    source = open(input_path, "rb") if input_path else sys.stdin.buffer  # noqa: SIM115
    total = input_path.stat().st_size if input_path else None
    encoder = msgspec.json.Encoder()
    models = ModelScorers(config.scorers, config.scoring)
    scored = refused = 0
    try:
        with Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,.0f} B"),
                      TimeElapsedColumn(), disable=not sys.stderr.isatty(),
                      console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("score", total=total)

            def lines() -> Iterator[bytes]:
                for line in source:
                    progress.advance(task, len(line))
                    yield line

            for row in score_lines(lines(), config, models):
                output.write(encoder.encode(row) + b"\n")
                if "error" in row:
                    refused += 1
                else:
                    scored += 1
    finally:
        if input_path:
            source.close()
        output.flush()
    print(f"scored {scored} record(s)" + (f"; {refused} line(s) refused, each an error row "
                                         "naming its line" if refused else ""), file=sys.stderr)
    return 0
