"""`driftwatch demo`: a local broker, replayed traffic, the daemon and a live summary."""

from __future__ import annotations

import argparse

from monitor.cli.common import exit_past_busy_workers, setup_logging


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="local broker + replayed traffic + daemon + live summary")
    demo.add_argument("--rate", type=float, default=100.0, help="records per second to replay")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--port", type=int, default=9108, help="metrics port (0 = any free)")
    demo.add_argument("--until-scored", type=int, default=None, metavar="N",
                      help="stop once N records are scored (--duration still bounds it)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from monitor.local.demo import run_demo

    return exit_past_busy_workers(
        run_demo(rate=args.rate, duration_s=args.duration, metrics_port=args.port,
                 until_scored=args.until_scored))
