"""`driftwatch models distill`: build the static embedding table the config's model implies;
`driftwatch models prepare`: build every local model the config's scorers use (the table under
the static and hybrid backends, the trained toxicity classifier). Both run ahead of the first
start (`make install` prepares the default config); a daemon builds what is missing itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.cli.common import setup_logging
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models", help="prepare local models: the static table, the toxicity classifier")
    verbs = models.add_subparsers(dest="models_command", required=True)
    distill = verbs.add_parser(
        "distill", help="distill scoring.embedding.model into a static table (offline, once)")
    distill.add_argument("--config", default=None)
    distill.add_argument("--model", default=None,
                         help="a local sentence-transformer (default: scoring.embedding.model)")
    distill.add_argument("--dir", default=None,
                         help="where tables are kept (default: scoring.models_dir)")
    prepare = verbs.add_parser(
        "prepare", help="build the models the config's scorers use (offline, reused after)")
    prepare.add_argument("--config", default=None)


def run(args: argparse.Namespace) -> int:
    setup_logging("INFO")
    if args.models_command == "prepare":
        return _prepare(args.config)
    from detectors.embedder import ModelNotFound
    from detectors.static_embedder import DistillSettings, ensure_table

    scoring = load_offline_config(args.config).scoring
    emb = scoring.embedding
    folder = Path(args.dir or scoring.models_dir).expanduser()
    try:  # before the model's work (tens of seconds), not after it
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "--dir" if args.dir else "scoring.models_dir"
        why = ("a file is in the way" if isinstance(exc, FileExistsError | NotADirectoryError)
               else exc.strerror or str(exc))
        print(f"driftwatch: {where} {str(folder)!r}: cannot keep tables there ({why})",
              file=sys.stderr)
        return 2
    try:
        table = ensure_table(args.model or emb.model, folder,
                             DistillSettings(emb.static_pca_dims))
    except ModelNotFound as e:
        print(f"driftwatch: {e}", file=sys.stderr)
        return 2
    print(f"{'built' if table.built else 'reused'} {table.path} "
          f"(fingerprint {table.fingerprint}, from {table.source})")
    return 0


def _prepare(config_path: str | None) -> int:
    from detectors.embedder import ModelNotFound
    from monitor.app.wiring import build_models

    config = load_offline_config(config_path)
    try:
        scorers = build_models(config, live=False)
    except ModelNotFound as e:
        print(f"driftwatch: {e}", file=sys.stderr)
        return 2
    if scorers is None:
        print("no model scorer is on: nothing to prepare")
        return 0
    for role, name, device, backend, _ in scorers.models():
        print(f"{role}: {name} on {device}" + (f" ({backend})" if backend else ""))
    print(f"ready in {config.scoring.models_dir}")
    return 0
