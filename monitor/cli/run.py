"""`driftwatch run`: the daemon, until SIGTERM."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import DEFAULT_CONFIG, exit_past_busy_workers, setup_logging
from monitor.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the daemon: consume, score, export metrics")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.log_level)
    from consumers.settings import KafkaSecretError
    from detectors.embedder import ModelNotFound
    from monitor.acting.outbox import OutboxError
    from monitor.acting.webhook import WebhookSecretError
    from monitor.app.daemon import run as run_daemon
    from monitor.config import AdminTokenError
    from monitor.pipeline.checkpoint import CheckpointInUse
    from monitor.pipeline.reference import ReferenceStoreError

    try:
        return exit_past_busy_workers(run_daemon(config))
    except (ModelNotFound, OutboxError, ReferenceStoreError, WebhookSecretError,
            KafkaSecretError, CheckpointInUse, AdminTokenError) as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
