"""`driftwatch score`: one JSON line of model scores per wire record."""

from __future__ import annotations

import argparse
import sys

from monitor.app.arguments import or_std, readable_file, writable_file
from monitor.cli.common import hint_when_reading_a_terminal, setup_logging, to_output
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    score = sub.add_parser("score", help="score wire-format JSON lines from a file or stdin")
    score.add_argument("--input", type=or_std(readable_file), default=None,
                       help="JSONL file (default or -: stdin)")
    score.add_argument("--output", type=or_std(writable_file), default=None,
                       help="JSONL file (default or -: stdout)")
    score.add_argument("--config", default=None, help="YAML config (its scorers and scoring)")
    score.add_argument("--read", action="store_true",
                       help="each row also says what was read of its record (labels, numbers, "
                            "event time, the start of its texts): check a producer's records "
                            "or a wire.fields map")
    score.add_argument("--topic", default=None,
                       help="read the lines as messages of this topic, under its own "
                            "wire.topics settings (a sample of one topic of a split deployment)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from monitor.app.score import run_score

    offline = load_offline_config(args.config)
    if args.topic is not None and args.topic not in offline.wire.topics:
        listed = ", ".join(offline.wire.topics) or "none"
        print(f"driftwatch score: --topic {args.topic!r} has no settings under wire.topics "
              f"(it lists: {listed}); without --topic the lines are read under the wire "
              "section's own settings", file=sys.stderr)
        return 2
    if args.input is None:
        hint_when_reading_a_terminal("score")
    return to_output(args.output, lambda out: run_score(args.input, out, offline, args.read,
                                                          args.topic))
