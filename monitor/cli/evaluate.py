"""`driftwatch evaluate`: ROC AUC of the scorers on labelled data, next to a baseline."""

from __future__ import annotations

import argparse

from monitor.app.arguments import whole
from monitor.cli.common import setup_logging
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="ROC AUC of the scorers on labelled data, next to a length baseline"
    )
    evaluate.add_argument("which", choices=["toxicity", "groundedness", "all"])
    evaluate.add_argument("--limit", type=whole(0), default=1000, help="pairs/texts (0 = all)")
    evaluate.add_argument("--config", default=None)


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from monitor.app.evaluate import run_evaluate

    return run_evaluate(args.which, args.limit, load_offline_config(args.config))
