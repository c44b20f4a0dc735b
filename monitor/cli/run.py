"""`driftwatch run`: the daemon, until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys

from monitor.cli.common import (
    DEFAULT_CONFIG,
    config_path,
    exit_past_busy_workers,
    setup_logging,
)
from monitor.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the daemon: consume, score, export metrics")
    run.add_argument("--config", default=None,
                     help=f"YAML config (default {DEFAULT_CONFIG} when it is here, else the "
                          "environment's DRIFTWATCH_* settings alone)")
    run.add_argument("--stage", choices=("all", "score", "decide"), default="all",
                     help="all: score and decide in this process (default); score: score and "
                          "write to kafka.scored_topic; decide: drift, rules and the canary "
                          "gate on the scored topic (a split deployment)")
    run.add_argument("--workers", type=_workers, default=1,
                     help="scoring processes on this machine (default 1: score and decide in "
                          "this one). With N > 1, N `--stage score` processes (metrics on the "
                          "configured port + 1..N) and, for --stage all, this process decides. "
                          "auto: one per CPU core, no more than the GPU's free memory holds or "
                          "the input has partitions")
    # Set by a --workers parent on each scoring process it starts (not for users).
    run.add_argument("--worker-of", type=int, default=None, help=argparse.SUPPRESS)


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: allowed auto or a whole number, 1 or more")
    return count


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load_config(path)
    setup_logging(config.log_level, config.log_format)
    if path is None:
        logging.getLogger("driftwatch").info(
            "no config file (%s is not here): settings from the environment and the defaults",
            DEFAULT_CONFIG)
    from consumers.settings import KafkaSecretError
    from detectors.embedder import ModelNotFound
    from monitor.acting.outbox import OutboxError
    from monitor.acting.webhook import WebhookSecretError
    from monitor.app.daemon import run as run_daemon
    from monitor.config import AdminTokenError
    from monitor.pipeline.checkpoint import CheckpointInUse
    from monitor.pipeline.reference import ReferenceStoreError
    from monitor.telemetry.endpoints import EndpointError

    if args.workers != 1 and args.stage == "decide":
        print("driftwatch: --workers starts scoring processes; --stage decide scores nothing",
              file=sys.stderr)
        return 2
    from monitor.app.state_paths import StatePathError, check_state_paths

    try:
        check_state_paths(config, args.stage)
        if args.workers == "auto":
            from monitor.app.worker_count import auto_workers, input_partitions, within_partitions

            count = within_partitions(auto_workers(config), input_partitions(config.kafka))
            logging.getLogger("driftwatch").info(
                "--workers auto: %d scoring process%s (%s)", count.workers,
                "es" if count.workers > 1 else "", count.reason)
            args.workers = count.workers
        if args.workers > 1:
            from monitor.app.workers import run as run_workers

            return exit_past_busy_workers(run_workers(config, path, args.workers,
                                                      args.stage))
        return exit_past_busy_workers(run_daemon(config, stage=args.stage,
                                                 parent=args.worker_of))
    except (ModelNotFound, OutboxError, ReferenceStoreError, WebhookSecretError,
            KafkaSecretError, CheckpointInUse, AdminTokenError, StatePathError,
            EndpointError) as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
