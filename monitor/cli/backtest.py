"""`driftwatch backtest`: the daemon's pipeline over recorded traffic, no broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor.cli.common import setup_logging, to_output
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    backtest = sub.add_parser("backtest", help="the pipeline over recorded traffic, no broker")
    backtest.add_argument("--config", default=None)
    backtest.add_argument("--input", default=None, help="JSONL wire records (default: stdin)")
    backtest.add_argument("--output", type=Path, default=None, help="events JSONL (stdout)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from monitor.app.backtest import run_backtest

    offline = load_offline_config(args.config)
    return to_output(args.output, lambda out: run_backtest(args.input, out, offline))
