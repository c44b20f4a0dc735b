"""The `driftwatch` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor.config import ConfigError, load_config, load_offline_config

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
    check.add_argument("--offline", action="store_true",
                       help="validate for score and backtest (no kafka section needed)")

    demo = sub.add_parser("demo", help="local broker + replayed traffic + daemon + live summary")
    demo.add_argument("--rate", type=float, default=100.0, help="records per second to replay")
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.add_argument("--port", type=int, default=9108, help="metrics port (0 = any free)")

    score = sub.add_parser("score", help="score wire-format JSON lines from a file or stdin")
    score.add_argument("--input", type=Path, default=None, help="JSONL file (default: stdin)")
    score.add_argument("--output", type=Path, default=None, help="JSONL file (default: stdout)")
    score.add_argument("--config", default=None, help="YAML config (its scorers and scoring)")

    backtest = sub.add_parser("backtest", help="the pipeline over recorded traffic, no broker")
    backtest.add_argument("--config", default=None)
    backtest.add_argument("--input", default=None, help="JSONL wire records (default: stdin)")
    backtest.add_argument("--output", type=Path, default=None, help="events JSONL (stdout)")

    reference = sub.add_parser(
        "reference", help="build or list drift reference snapshots, or roll a daemon's over")
    reference.add_argument("action", choices=["build", "list", "rollover"])
    reference.add_argument("--name", default="default")
    reference.add_argument("--store", type=Path, default=Path("state/references"))
    reference.add_argument("--input", type=Path, default=None, help="JSONL wire records")
    reference.add_argument("--limit", type=int, default=None, help="use the first N records")
    reference.add_argument("--topic", default=None, help="read a topic's offset range instead")
    reference.add_argument("--bootstrap", default=None,
                           help="HOST:PORT, with --topic (default: the config's kafka section, "
                                "whose security settings apply too)")
    reference.add_argument("--from-offset", type=int, default=0, help="per partition")
    reference.add_argument("--to-offset", type=int, default=None, help="exclusive")
    reference.add_argument("--config", default=None)
    reference.add_argument("--url", default="http://127.0.0.1:9108",
                           help="rollover: the daemon's metrics address (default %(default)s)")
    reference.add_argument("--segment", action="append", default=[], metavar="LABEL=VALUE",
                           help="rollover: only segments with this label value (repeatable)")

    evaluate = sub.add_parser(
        "evaluate", help="ROC AUC of the scorers on labelled data, next to a length baseline"
    )
    evaluate.add_argument("which", choices=["toxicity", "groundedness", "all"])
    evaluate.add_argument("--limit", type=int, default=1000, help="pairs/texts (0 = all)")
    evaluate.add_argument("--config", default=None)

    events = sub.add_parser("events", help="recent decisions in the outbox and their deliveries")
    where = events.add_mutually_exclusive_group()
    where.add_argument("--config", default=None, help="YAML config (its outbox.path)")
    where.add_argument("--outbox", type=Path, default=None, help="outbox file")
    events.add_argument("--limit", type=int, default=20, help="newest N events")
    events.add_argument("--json", action="store_true", help="JSON lines instead of a table")

    from chaos.command import add_parser as add_chaos
    from dashboards.command import add_parser as add_dashboards
    from monitor.canary_plan import add_parser as add_canary

    add_dashboards(sub)
    add_chaos(sub)
    add_canary(sub)

    bench = sub.add_parser("bench", help="benchmarks that print a figure next to a baseline")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    consume = bench_sub.add_parser(
        "consume", help="records/s through decode, validate, batch, metrics vs a raw poll loop"
    )
    consume.add_argument("--records", type=int, default=100_000)
    consume.add_argument("--partitions", type=int, default=4)
    consume.add_argument("--rounds", type=int, default=2)
    throughput = bench_sub.add_parser(
        "throughput", help="records/s end to end with every scorer vs naive encode"
    )
    throughput.add_argument("--records", type=int, default=2_000)
    throughput.add_argument("--partitions", type=int, default=4)
    rules_bench = bench_sub.add_parser(
        "rules", help="each rule's false decisions on clean real text and delay on a regression"
    )
    rules_bench.add_argument("--records", type=int, default=4_000)
    rules_bench.add_argument("--seeds", type=int, default=3)
    rules_bench.add_argument("--config", type=Path, default=None,
                             help="whose rules (default: the example driftwatch.yaml)")
    drift = bench_sub.add_parser(
        "drift", help="drift detection delay, false alarms and cost vs river (and alibi-detect)"
    )
    drift.add_argument("--ert", type=int, default=1_000)
    drift.add_argument("--window", type=int, default=100)
    drift.add_argument("--runs", type=int, default=20)
    drift.add_argument("--clean-records", type=int, default=20_000)
    drift.add_argument("--alibi-python", default=None,
                       help="a Python with alibi-detect[torch] (make bench-drift builds one)")
    throughput.add_argument("--precision", choices=["auto", "fp32", "fp16", "int8"],
                            default="auto", help="embedding precision (int8: ONNX Runtime)")

    args = parser.parse_args(argv)
    try:
        if args.command == "check-config" and args.offline:
            offline = load_offline_config(args.config)
            print(f"{args.config}: OK for score and backtest ({len(offline.rules)} rule(s), "
                  f"scorers {', '.join(offline.scorers)})")
            return 0
        if args.command == "check-config":
            config = load_config(args.config)
            for warning in config.metrics.warnings():
                print(f"warning: {warning}", file=sys.stderr)
            print(f"{args.config}: OK (topics {', '.join(config.kafka.topics)}, "
                  f"group {config.kafka.group_id})")
            if config.canary.enabled:
                from monitor.canary_plan import bounds_lines

                print("canary: records per arm to promote an identical canary (measured: "
                      "driftwatch canary plan)")
                print("\n".join(bounds_lines(config.canary)))
            return 0
        if args.command == "run":
            config = load_config(args.config)
            _logging(config.log_level)
            from consumers.settings import KafkaSecretError
            from detectors.embedder import ModelNotFound
            from monitor.checkpoint import CheckpointInUse
            from monitor.config import AdminTokenError
            from monitor.daemon import run as run_daemon
            from monitor.outbox import OutboxError
            from monitor.reference import ReferenceError
            from monitor.webhook import WebhookSecretError

            try:
                return _exit_past_busy_workers(run_daemon(config))
            except (ModelNotFound, OutboxError, ReferenceError, WebhookSecretError,
                    KafkaSecretError, CheckpointInUse, AdminTokenError) as exc:
                print(f"driftwatch: {exc}", file=sys.stderr)
                return 2
        if args.command == "demo":
            _logging("WARNING")
            from monitor.demo import run_demo

            return _exit_past_busy_workers(
                run_demo(rate=args.rate, duration_s=args.duration, metrics_port=args.port))
        if args.command in ("score", "backtest"):
            _logging("WARNING")
            from monitor.backtest import run_backtest
            from monitor.score import run_score

            command = run_score if args.command == "score" else run_backtest
            offline = load_offline_config(args.config)
            if args.output is None:
                return command(args.input, sys.stdout.buffer, offline)
            with open(args.output, "wb") as out:
                return command(args.input, out, offline)
        if args.command == "reference":
            _logging("WARNING")
            from consumers.settings import KafkaSecretError
            from monitor.reference_build import request_rollover, run_reference

            if args.action == "rollover":
                return request_rollover(args.url, args.segment)
            try:
                return run_reference(args.action, args.name, args.store, args.input,
                                     args.limit, load_offline_config(args.config), args.topic,
                                     args.bootstrap, (args.from_offset, args.to_offset))
            except KafkaSecretError as exc:
                print(f"driftwatch: {exc}", file=sys.stderr)
                return 2
        if args.command == "evaluate":
            _logging("WARNING")
            from monitor.evaluate import run_evaluate

            return run_evaluate(args.which, args.limit, load_offline_config(args.config))
        if args.command == "events":
            from monitor.events_cli import run_events

            if args.outbox is None:
                path = load_config(args.config or DEFAULT_CONFIG).outbox.path
            else:
                path = args.outbox
            return run_events(path, args.limit, args.json)
        if args.command == "canary":
            from monitor.canary_plan import run as run_canary

            return run_canary(args)
        if args.command == "chaos":
            from chaos.command import run as run_chaos

            return run_chaos(args)
        if args.command == "dashboards":
            from dashboards.command import run as run_dashboards

            return run_dashboards(args)
        if args.command == "bench" and args.bench == "consume":
            _logging("WARNING")
            from monitor.bench import bench_consume

            return bench_consume(args.records, args.partitions, args.rounds)
        if args.command == "bench" and args.bench == "drift":
            _logging("WARNING")
            from monitor.bench_drift import bench_drift

            return bench_drift(args.ert, args.window, args.runs, args.clean_records,
                               args.alibi_python)
        if args.command == "bench" and args.bench == "rules":
            _logging("WARNING")
            from monitor.bench_rules import run_bench_rules

            return run_bench_rules(args.records, args.seeds, args.config)
        if args.command == "bench" and args.bench == "throughput":
            _logging("WARNING")
            from monitor.bench import bench_throughput

            return bench_throughput(args.records, args.partitions, args.precision)
    except ConfigError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _exit_past_busy_workers(code: int) -> int:
    """Return `code`, or exit with it at once when a worker is still inside a model call or
    a background drift calibration:
    the interpreter's teardown would destroy torch's running thread pool and abort (SIGABRT).
    Everything durable (outbox, commits, checkpoint) is already written by then."""
    from consumers.processor import busy_threads
    from monitor.drift import calibrating

    if busy_threads() or calibrating():
        logging.getLogger("driftwatch").warning(
            "exiting while a worker is inside a model call or a drift calibration (what it "
            "was doing stays uncommitted, and is done again on restart)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # kafka-python is chatty at INFO (every connection and rebalance step).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # Its IO thread warns whenever the GIL was busy for 100 ms (the model was running): not news.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
