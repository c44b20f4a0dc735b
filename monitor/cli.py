"""The `driftwatch` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from monitor.config import ConfigError, load_config

DEFAULT_CONFIG = "driftwatch.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="driftwatch", description="Streaming production monitor for LLM serving."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon: consume, score, export metrics")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default %(default)s)")

    check = sub.add_parser("check-config", help="validate a config and exit (0 = valid)")
    check.add_argument("--config", default=DEFAULT_CONFIG)

    demo = sub.add_parser("demo", help="local broker + replayed traffic + daemon + live summary")
    demo.add_argument("--rate", type=float, default=300.0, help="records per second to replay")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--port", type=int, default=9108, help="metrics port (0 = any free)")

    bench = sub.add_parser("bench", help="benchmarks that print a figure next to a baseline")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    consume = bench_sub.add_parser(
        "consume", help="records/s through decode, validate, batch, metrics vs a raw poll loop"
    )
    consume.add_argument("--records", type=int, default=100_000)
    consume.add_argument("--partitions", type=int, default=4)
    consume.add_argument("--rounds", type=int, default=2)

    args = parser.parse_args(argv)
    try:
        if args.command == "check-config":
            config = load_config(args.config)
            print(f"{args.config}: OK (topics {', '.join(config.kafka.topics)}, "
                  f"group {config.kafka.group_id})")
            return 0
        if args.command == "run":
            config = load_config(args.config)
            _logging(config.log_level)
            from monitor.daemon import run as run_daemon

            return run_daemon(config)
        if args.command == "demo":
            _logging("WARNING")
            from monitor.demo import run_demo

            return run_demo(rate=args.rate, duration_s=args.duration, metrics_port=args.port)
        if args.command == "bench" and args.bench == "consume":
            _logging("WARNING")
            from monitor.bench import bench_consume

            return bench_consume(args.records, args.partitions, args.rounds)
    except ConfigError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # kafka-python is chatty at INFO (every connection and rebalance step).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))


if __name__ == "__main__":
    sys.exit(main())
