"""`driftwatch events`: the outbox's recent decisions and where each delivery stands.

Reads the outbox file the daemon writes (SQLite WAL allows a reader beside the writer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from monitor.acting.outbox import EventRecord, Outbox, OutboxError
from monitor.app.arguments import whole
from monitor.cli.common import config_path
from monitor.config import load_config
from monitor.types import rfc3339


def as_json(event: EventRecord) -> dict[str, object]:
    d = event.decision
    return {
        "id": event.id, "created": rfc3339(event.created), "type": d.event_type,
        "rule": d.rule, "severity": d.severity, "status": d.status, "segment": d.segment,
        "evidence": d.evidence, "summary": d.summary, "at": rfc3339(d.at),
        "deliveries": [
            {"action": x.action, "state": x.state, "attempts": x.attempts,
             "last_error": x.last_error,
             "delivered": rfc3339(x.delivered) if x.delivered is not None else None}
            for x in event.deliveries
        ],
    }


def run_events(outbox_path: Path, limit: int, json_lines: bool, out: TextIO | None = None
               ) -> int:
    out = out or sys.stdout  # looked up now: a caller may have redirected it
    try:
        box = Outbox(outbox_path, create=False)
        try:
            events = box.recent(limit)
        finally:
            box.close()
    except OutboxError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    if json_lines:
        for event in events:
            out.write(json.dumps(as_json(event), default=str) + "\n")
        return 0
    table = Table(title=f"{len(events)} most recent events in {outbox_path}")
    for column in ("time", "type", "rule", "severity", "status"):
        table.add_column(column, no_wrap=True)
    for column in ("segment", "figures", "deliveries"):
        table.add_column(column)
    for event in events:
        d = event.decision
        figures = "\n".join(f"{k}={v:.4g}" for k, v in d.evidence.items())
        segment = "\n".join(f"{k}={v}" for k, v in sorted(d.segment.items()))
        deliveries = "\n".join(
            f"{x.action}: {x.state}, {x.attempts} tries" + (f"\n  {x.last_error}"
                                                            if x.last_error else "")
            for x in event.deliveries) or "-"
        # As Text, not markup: labels and endpoints' errors are others' text, and rich read
        # `route=/v1/[chat]` as a style (printed `route=/v1/`) and `[/]` as an error.
        table.add_row(*(Text(cell) for cell in (rfc3339(d.at), d.event_type, d.rule,
                                                d.severity, d.status, segment, figures,
                                                deliveries)))
    Console(file=out, width=160).print(table)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="recent decisions in the outbox and their deliveries")
    where = events.add_mutually_exclusive_group()
    where.add_argument("--config", default=None, help="YAML config (its outbox.path)")
    where.add_argument("--outbox", type=Path, default=None, help="outbox file")
    events.add_argument("--limit", type=whole(1), default=20, help="newest N events")
    events.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    path = args.outbox or load_config(config_path(args.config)).outbox.path
    return run_events(path, args.limit, args.json)
