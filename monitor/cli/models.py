"""`driftwatch models distill`: build the static embedding table the config's model implies,
ahead of the first start (a daemon builds it itself when it is missing)."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.common import setup_logging
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="prepare local models: distill the static table")
    verbs = models.add_subparsers(dest="models_command", required=True)
    distill = verbs.add_parser(
        "distill", help="distill scoring.embedding.model into a static table (offline, once)")
    distill.add_argument("--config", default=None)
    distill.add_argument("--model", default=None,
                         help="a local sentence-transformer (default: scoring.embedding.model)")
    distill.add_argument("--dir", default=None,
                         help="where tables are kept (default: scoring.models_dir)")


def run(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    from detectors.embedder import ModelNotFound
    from detectors.static_embedder import DistillSettings, ensure_table

    scoring = load_offline_config(args.config).scoring
    emb = scoring.embedding
    try:
        table = ensure_table(args.model or emb.model, args.dir or scoring.models_dir,
                             DistillSettings(emb.static_pca_dims))
    except ModelNotFound as e:
        print(f"driftwatch: {e}", file=sys.stderr)
        return 2
    print(f"{'built' if table.built else 'reused'} {table.path} "
          f"(fingerprint {table.fingerprint}, from {table.source})")
    return 0
