"""`driftwatch backtest`: the daemon's pipeline over recorded traffic, no broker."""

from __future__ import annotations

import argparse
import sys

from monitor.app.arguments import or_std, readable_file, writable_file
from monitor.cli.common import hint_when_reading_a_terminal, setup_logging, to_output
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    backtest = sub.add_parser("backtest", help="the pipeline over recorded traffic, no broker")
    backtest.add_argument("--config", default=None)
    backtest.add_argument("--input", type=or_std(readable_file), default=None,
                          help="JSONL wire records (default or -: stdin)")
    backtest.add_argument("--output", type=or_std(writable_file), default=None,
                          help="events JSONL (default or -: stdout)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from monitor.app.backtest import run_backtest
    from monitor.pipeline.reference import ReferenceStoreError

    offline = load_offline_config(args.config)
    if args.input is None:
        hint_when_reading_a_terminal("backtest")
    try:
        return to_output(args.output, lambda out: run_backtest(args.input, out, offline))
    except ReferenceStoreError as exc:  # drift.reference.source: snapshot, and none usable
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
