"""`driftwatch backtest`: the daemon's pipeline (scorers, drift, rules, canary gate) over
recorded traffic, in order, with no broker. Every detection and every decision is a JSON line
with the 0-based index of the record at which it fired; a summary table follows on stderr.
Same code path as the daemon, so it predicts it (time is event time in both)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from consumers.batcher import Batch
from consumers.decode import Rejection, each
from consumers.wire import Record
from monitor.app.arguments import standard_input
from monitor.app.wiring import (
    OFFLINE_BATCH,
    bounded_lines,
    build_parts,
    offline_decoder,
    wire,
)
from monitor.config import OfflineConfig
from monitor.pipeline.model_scoring import ModelScorers
from monitor.pipeline.pipeline import Pipeline
from monitor.types import Decision, DriftEvent, IntakeCounts


def backtest(lines: Iterable[bytes], config: OfflineConfig,
             models: ModelScorers | None = None) -> Iterator[dict[str, object]]:
    """Events as dicts, in the order they fired. `models`: loaded ones to reuse (their
    embedding cache too), such as across backtests of one stream under two configs."""
    fired: list[dict[str, object]] = []
    intake = IntakeCounts()  # messages read, dead-lettered: what a dead-letter rule sees

    def collect(events: list[DriftEvent]) -> None:
        fired.extend(_event(e) for e in events)

    def decided(decisions: list[Decision]) -> None:
        fired.extend(_decision(d, len(batch)) for d in decisions)

    pipeline = wire(config, build_parts(config, live=False, models=models), on_decisions=decided,
                    intake=intake, on_events=collect)
    decoder = offline_decoder(config)
    batch: list[Record] = []
    positions: list[int] = []
    for index, line in enumerate(lines):
        decoded = decoder.decode(line.rstrip(b"\r\n"))
        intake.messages += 1
        if isinstance(decoded, Rejection):
            intake.dead_letters += 1
            yield {"index": index, "type": "dead_letter", "reason": decoded.reason,
                   "detail": decoded.detail}
            continue
        for record in each(decoded):  # an OTLP message's calls share its index
            batch.append(record)  # type: ignore[arg-type]
            positions.append(index)
        if len(batch) >= OFFLINE_BATCH:
            yield from _run(pipeline, batch, positions, fired)
            batch, positions = [], []
    yield from _run(pipeline, batch, positions, fired)


def _run(pipeline: Pipeline, batch: list[Record], positions: list[int],
         fired: list[dict[str, object]]) -> Iterator[dict[str, object]]:
    if not batch:
        return
    pipeline.process(Batch(batch, [()] * len(batch)))
    for event in fired:
        event["index"] = positions[int(event.pop("batch_index"))]  # type: ignore[call-overload]
        yield event
    fired.clear()


def _event(e: DriftEvent) -> dict[str, object]:
    return {
        "batch_index": e.index, "type": f"drift.{e.kind}", "stream": e.stream,
        "segment": list(e.segment), "statistic": e.statistic, "threshold": e.threshold,
        "q_value": None if e.q_value != e.q_value else e.q_value, "window": e.window,
        "examples": [{"request_id": rid, "text": text, "nearest_reference": ref}
                     for rid, text, ref in e.examples],
    }


def _decision(d: Decision, batch_size: int) -> dict[str, object]:
    return {
        "batch_index": d.index if d.index >= 0 else batch_size - 1, "type": d.event_type,
        "rule": d.rule, "severity": d.severity, "status": d.status, "segment": d.segment,
        "evidence": d.evidence, "summary": d.summary, "actions": list(d.targets),
        "details": d.details,
    }


def run_backtest(input_path: str | Path | None, output: IO[bytes], config: OfflineConfig
                 ) -> int:
    source = open(input_path, "rb") if input_path else standard_input()  # noqa: SIM115
    encoder = msgspec.json.Encoder()
    summary: Counter[str] = Counter()
    first: dict[str, int] = {}
    try:
        for event in backtest(bounded_lines(source), config):
            output.write(encoder.encode(event) + b"\n")
            key = str(event["type"]) + (f" {event['stream']}" if "stream" in event else "")
            if "rule" in event:
                key = f"{event['type']} {event['rule']} ({event['status']})"
            summary[key] += 1
            first.setdefault(key, int(event["index"]))  # type: ignore[call-overload]
    finally:
        if input_path:
            source.close()
        output.flush()
    print(f"{'event':<40}{'count':>8}{'first at':>10}", file=sys.stderr)
    for key, count in sorted(summary.items()):
        print(f"{key:<40}{count:>8}{first[key]:>10}", file=sys.stderr)
    if not summary:
        print("no events", file=sys.stderr)
    return 0
