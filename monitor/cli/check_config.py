"""`driftwatch check-config`: validate a config and say what it sets up."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import DEFAULT_CONFIG, config_path
from monitor.config import environment_warnings, load_config, load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check-config", help="validate a config and exit (0 = valid)")
    check.add_argument("--config", default=None,
                       help=f"YAML config (default {DEFAULT_CONFIG} when it is here, else "
                            "the environment's DRIFTWATCH_* settings alone)")
    check.add_argument("--offline", action="store_true",
                       help="validate for score and backtest (no kafka section needed)")


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    source = path or "the environment (no config file)"
    # After the load: a config that fails notes these under its error already.
    if args.offline:
        offline = load_offline_config(path)
        _warn(environment_warnings())
        print(f"{source}: OK for score and backtest ({len(offline.rules)} rule(s), "
              f"scorers {', '.join(offline.scorers)})")
        return 0
    config = load_config(path)
    _warn([*environment_warnings(), *config.metrics.warnings()])
    print(f"{source}: OK (topics {', '.join(config.kafka.topics)}, "
          f"group {config.kafka.group_id})")
    if config.canary.enabled:
        from monitor.acting.canary_plan import bounds_lines

        print("canary: records per arm to promote an identical canary (measured: "
              "driftwatch canary plan)")
        print("\n".join(bounds_lines(config.canary)))
    return 0


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
