"""`driftwatch bench ...`: benchmarks that print a figure next to a baseline of the same run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.app.arguments import whole
from monitor.cli.common import setup_logging


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print a figure next to a baseline")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    consume = bench_sub.add_parser(
        "consume", help="records/s through decode, validate, batch, metrics vs a raw poll loop"
    )
    consume.add_argument("--records", type=whole(1), default=100_000)
    consume.add_argument("--partitions", type=whole(1), default=4)
    consume.add_argument("--rounds", type=int, default=3,
                         help="timed rounds of each path (median and spread)")
    consume.add_argument("--mapped", action="store_true",
                         help="also time one process reading the records as a gateway names "
                              "their fields (wire.fields: LiteLLM's id, startTime, ...)")
    consume.add_argument("--otlp", action="store_true",
                         help="also time one process reading the records as an OpenTelemetry "
                              "Collector writes their spans (wire.format: otlp_json and "
                              "otlp_proto)")
    consume.add_argument("--workers", type=whole(1), nargs="+", default=[1, 2],
                         help="process counts to time each path with, in one consumer group "
                              "(1 is always timed: the baseline)")
    throughput = bench_sub.add_parser(
        "throughput", help="records/s end to end with every scorer vs naive encode"
    )
    throughput.add_argument("--records", type=whole(1), default=None,
                            help="records a round (default 2,000; with --workers 10,000 a "
                                 "timed round, long enough that a batch's wait at the end is "
                                 "a small part of it)")
    throughput.add_argument("--partitions", type=whole(1), default=4)
    throughput.add_argument("--precision", choices=["auto", "fp32", "fp16", "int8"],
                            default="auto", help="embedding precision (int8: ONNX Runtime)")
    throughput.add_argument("--workers", type=whole(1), nargs="+", default=None,
                            help="time the real daemon, `driftwatch run --workers N`, for each "
                                 "N given (e.g. --workers 1 2), in rounds")
    throughput.add_argument("--backend", nargs="+", default=None,
                            choices=["auto", "torch", "onnx", "static", "hybrid"],
                            help="embedding backends to time with --workers, each a row "
                                 "(static and hybrid distil their table first, once)")
    throughput.add_argument("--rounds", type=int, default=3,
                            help="timed rounds of each path, or of each N with --workers "
                                 "(median and spread)")
    embed = bench_sub.add_parser(
        "embed", help="texts/s of the shared embedder alone vs naive encode, same texts"
    )
    embed.add_argument("--records", type=whole(1), default=2_000,
                       help="records a round; their prompts and responses are embedded")
    embed.add_argument("--batch", type=whole(1), default=1_000,
                       help="texts per call of the embedder (a pipeline batch's worth)")
    embed.add_argument("--rounds", type=int, default=3,
                       help="timed rounds of each path (median and spread)")
    decide = bench_sub.add_parser(
        "decide", help="records/s one deciding process decides vs a raw loop reading them"
    )
    decide.add_argument("--records", type=whole(1), default=50_000,
                        help="scored records a round (the topic filled before the clock starts)")
    decide.add_argument("--partitions", type=whole(1), default=4,
                        help="partitions of the scored topic")
    decide.add_argument("--rounds", type=int, default=3,
                        help="timed rounds of each path (median and spread)")
    decide.add_argument("--segments", type=int, default=None,
                        help="spread the records over this many models (drift segments and "
                             "keys); default: the traffic's own 2")
    rules_bench = bench_sub.add_parser(
        "rules", help="each rule's false decisions on clean real text and delay on a regression"
    )
    rules_bench.add_argument("--records", type=whole(1), default=4_000)
    rules_bench.add_argument("--seeds", type=whole(1), default=3)
    rules_bench.add_argument("--config", type=Path, default=None,
                             help="whose rules (default: the example driftwatch.yaml)")
    drift = bench_sub.add_parser(
        "drift", help="drift detection delay, false alarms and cost vs river (and alibi-detect)"
    )
    drift.add_argument("--ert", type=whole(1), default=1_000)
    drift.add_argument("--window", type=whole(2), default=100)
    drift.add_argument("--runs", type=whole(1), default=20)
    drift.add_argument("--clean-records", type=whole(1), default=20_000)
    drift.add_argument("--questions", type=int, default=3_000,
                       help="QA questions embedded (1,000 are the reference; more than that), "
                            "and two thirds as many dialogue turns")
    drift.add_argument("--embedders", nargs="+", default=None,
                       choices=["torch", "onnx", "static"],
                       help="instead of the peer comparison: the default detector on each "
                            "embedder's vectors, a topic and a subtle shift (static: the "
                            "table distilled from the default model)")
    drift.add_argument("--alibi-python", default=None,
                       help="a Python with alibi-detect[torch] (make bench-drift builds one)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    if getattr(args, "rounds", 1) < 1:
        print(f"driftwatch: --rounds {args.rounds}: give 1 or more (3 for a median and spread)",
              file=sys.stderr)
        return 2
    if args.bench == "consume":
        from monitor.local.bench_consume import bench_consume

        return bench_consume(args.records, args.partitions, args.rounds, args.workers,
                             args.mapped, args.otlp)
    if args.bench == "drift" and args.embedders:
        from monitor.local.bench_drift import bench_embedders

        return bench_embedders(args.embedders, args.ert, args.window, args.runs,
                               args.clean_records)
    if args.bench == "drift":
        from monitor.local.bench_drift import bench_drift

        if args.questions <= 1_000:
            print(f"driftwatch: --questions {args.questions}: the first 1,000 are the "
                  f"reference; give more than 1,000", file=sys.stderr)
            return 2

        return bench_drift(args.ert, args.window, args.runs, args.clean_records,
                           args.alibi_python, args.questions)
    if args.bench == "embed":
        from monitor.local.bench_embed import bench_embed

        return bench_embed(args.records, args.batch, args.rounds)
    if args.bench == "decide":
        from monitor.local.bench_decide import WARMUP_RECORDS, bench_decide

        most = args.records // WARMUP_RECORDS
        if args.segments is not None and not 1 <= args.segments <= most:
            print(f"driftwatch: --segments {args.segments}: give 1 to {most} (each segment's "
                  f"drift reference is its first {WARMUP_RECORDS} records, all within the "
                  f"first round of --records {args.records})", file=sys.stderr)
            return 2
        return bench_decide(args.records, args.rounds, args.partitions, args.segments)
    if args.bench == "rules":
        from monitor.local.bench_rules import run_bench_rules

        return run_bench_rules(args.records, args.seeds, args.config)
    if args.workers:
        from monitor.local.bench_workers import bench_workers

        return bench_workers(args.records or 10_000, args.workers, args.rounds,
                             args.partitions, args.backend)
    from monitor.local.bench import bench_throughput

    return bench_throughput(args.records or 2_000, args.partitions, args.precision,
                            args.rounds)
