"""`driftwatch reference`: build or list drift reference snapshots, or roll a daemon's over."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from monitor.app.arguments import http_url, readable_file, whole
from monitor.cli.common import setup_logging
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    reference = sub.add_parser(
        "reference", help="build or list drift reference snapshots, or roll a daemon's over")
    reference.add_argument("action", choices=["build", "list", "rollover"])
    reference.add_argument("--name", default="default")
    reference.add_argument("--store", type=Path, default=Path("state/references"))
    reference.add_argument("--input", type=readable_file, default=None,
                           help="JSONL wire records")
    reference.add_argument("--limit", type=whole(1), default=None, help="use the first N records")
    reference.add_argument("--topic", default=None, help="read a topic's offset range instead")
    reference.add_argument("--bootstrap", default=None,
                           help="HOST:PORT, with --topic (default: the config's kafka section, "
                                "whose security settings apply too)")
    reference.add_argument("--from-offset", type=whole(0), default=0, help="per partition")
    reference.add_argument("--to-offset", type=whole(0), default=None, help="exclusive")
    reference.add_argument("--config", default=None)
    reference.add_argument("--url", type=http_url, default="http://127.0.0.1:9108",
                           help="rollover: the daemon's metrics address (default %(default)s)")
    reference.add_argument("--segment", action="append", default=[], metavar="LABEL=VALUE",
                           help="rollover: only segments with this label value (repeatable)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from consumers.settings import KafkaSecretError
    from monitor.app.reference_build import ReferenceInputError, request_rollover, run_reference
    from monitor.app.state_paths import unusable
    from monitor.pipeline.reference import ReferenceStoreError, checked_name

    if args.action == "rollover":
        return request_rollover(args.url, args.segment)
    # Checked before the models load and embed, not at the save.
    try:
        checked_name(args.name)
    except ValueError as exc:
        print(f"driftwatch reference: --name: {exc}", file=sys.stderr)
        return 2
    if args.action == "build" and (problem := unusable(args.store, directory=True)):
        print(f"driftwatch reference: --store {str(args.store)!r}: {problem}", file=sys.stderr)
        return 2
    if args.action == "list" and args.store.exists() and not args.store.is_dir():
        print(f"driftwatch reference: --store {str(args.store)!r} is a file, not a store "
              "directory", file=sys.stderr)
        return 2
    if args.action == "build" and (problem := _source_problem(args)):
        print(f"driftwatch reference: {problem}", file=sys.stderr)
        return 2
    try:
        return run_reference(args.action, args.name, args.store, args.input,
                             args.limit, load_offline_config(args.config), args.topic,
                             args.bootstrap, (args.from_offset, args.to_offset))
    except (KafkaSecretError, ReferenceInputError, ReferenceStoreError) as exc:
        print(f"driftwatch reference: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the store cannot be written (or the input read) here
        print(f"driftwatch reference: {exc.filename or args.store}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2


def _source_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with where `reference build` reads from, said before the models load
    and the brokers are waited for (each was read past or met after a 30 s wait)."""
    from consumers.settings import TOPIC, brokers_checked

    reads_topic = args.from_offset != 0 or args.to_offset is not None or args.bootstrap
    if args.topic is None:
        return ("--from-offset, --to-offset and --bootstrap say how to read a topic: give "
                "--topic NAME too" if reads_topic else None)
    if args.input is not None:
        return "give --input FILE or --topic NAME, not both"
    if not re.match(TOPIC, args.topic):
        return (f"--topic {args.topic!r}: a topic's name is 1 to 249 letters, digits, '.', "
                "'_' or '-'")
    if args.to_offset is not None and args.to_offset <= args.from_offset:
        return (f"--to-offset {args.to_offset} is not past --from-offset {args.from_offset}: "
                "the records read are those from the first up to the second")
    if args.bootstrap is not None:
        try:
            brokers_checked([args.bootstrap])
        except ValueError as exc:
            return f"--bootstrap: {exc}"
    return None
