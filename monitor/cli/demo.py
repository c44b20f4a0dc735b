"""`driftwatch demo`: a local broker, replayed traffic, the daemon and a live summary."""

from __future__ import annotations

import argparse
import sys

from monitor.app.arguments import positive, whole
from monitor.cli.common import exit_past_busy_workers, setup_logging

DEFAULT_PORT = 9108


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="local broker + replayed traffic + daemon + live summary")
    demo.add_argument("--rate", type=positive, default=100.0, help="records per second to replay")
    demo.add_argument("--duration", type=positive, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--port", type=whole(0, 65_535), default=None,
                      help=f"metrics port (default {DEFAULT_PORT}, or any free one when "
                           f"another process holds it; 0 = any free)")
    demo.add_argument("--until-scored", type=whole(1), default=None, metavar="N",
                      help="stop once N records are scored (--duration still bounds it)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from monitor.local.demo import run_demo

    port = metrics_port(args.port)
    if port is None:
        print(f"driftwatch demo: another process holds port {args.port}; pick another "
              "--port, or 0 for any free one", file=sys.stderr)
        return 2
    return exit_past_busy_workers(
        run_demo(rate=args.rate, duration_s=args.duration, metrics_port=port,
                 until_scored=args.until_scored))


def metrics_port(requested: int | None, default: int = DEFAULT_PORT) -> int | None:
    """The port the demo serves on: the default, or any free one (0) when another process
    holds it, so `make demo` does not fail on a machine that has it taken; a port asked for
    explicitly is used as it is, or None when it is taken."""
    from monitor.local.broker import bindable

    if requested is None:
        return default if bindable(default) else 0
    return requested if requested == 0 or bindable(requested) else None
