"""`driftwatch score`: wire-format records from a file or stdin, one JSON line of scores each.

Users run it on recorded traffic before they trust the daemon; it is also how the
scorers are evaluated. The model stage is the daemon's (same config, same code).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from consumers.decode import Rejection, each
from consumers.wire import Record
from monitor.app.arguments import standard_input
from monitor.app.wiring import OFFLINE_BATCH, bounded_lines, offline_decoder
from monitor.config import OfflineConfig
from monitor.pipeline.model_scoring import BatchScores, ModelScorers


def _null(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def score_lines(
    lines: Iterable[bytes], config: OfflineConfig, models: ModelScorers | None = None,
    read: bool = False, topic: str | None = None,
) -> Iterator[dict[str, object]]:
    """One output object per input line, in order; bad lines say why (as the dead-letter topic
    would). `read`: each row also says what was read of its record (`read_of`). `topic`: the
    lines are read as that topic's messages (its `wire.topics` settings)."""
    models = models or ModelScorers(config.scorers, config.scoring)
    decoder = offline_decoder(config, topic)
    pending: list[tuple[int, Record | Rejection]] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        pending.extend((number, item) for item in each(decoder.decode(line)))
        if len(pending) >= OFFLINE_BATCH:
            yield from _flush(pending, models, read)
            pending = []
    yield from _flush(pending, models, read)


def _flush(pending: list[tuple[int, Record | Rejection]], models: ModelScorers, read: bool
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
        row = _row(item, scores, j)
        if read:
            row["read"] = read_of(item)
        yield row
        j += 1


# What `read_of` shows of a text: enough to recognise it.
_SHOWN_CHARS = 120


def read_of(record: Record) -> dict[str, object]:
    """What the decoder read of a record (the labels, numbers and event time the daemon uses,
    and the start of the texts the models read), to check a producer's records or a
    `wire.fields` map against a sample before the daemon reads the topic."""
    t = record.event_time
    texts = {"prompt": record.user_prompt, "response": record.response}
    return {
        "event_time": None if t is None else datetime.fromtimestamp(t, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"),
        **{name: getattr(record, name) for name in (
            "model", "model_version", "deployment", "route", "status", "error_type",
            "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd")},
        **{name: None if text is None else text[:_SHOWN_CHARS] for name, text in texts.items()},
        "context_passages": None if record.context is None else len(record.context),
    }


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


def run_score(input_path: Path | None, output: IO[bytes], config: OfflineConfig,
              read: bool = False, topic: str | None = None) -> int:
    source = open(input_path, "rb") if input_path else standard_input()  # noqa: SIM115
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
                for line in bounded_lines(source):
                    progress.advance(task, len(line))
                    yield line

            for row in score_lines(lines(), config, models, read, topic):
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
