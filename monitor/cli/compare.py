"""`driftwatch compare`: an offline regression gate for a new model version (CI for deploys)."""

from __future__ import annotations

import argparse
import json
import sys

from monitor.app.arguments import readable_file, whole, writable_file
from monitor.cli.common import setup_logging, write_file
from monitor.config import load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="judge a candidate's answers against the baseline's (exit 0 promote, "
        "1 regressed, 2 inconclusive or bad input)",
        description="Two recorded sets of answers to the same prompts (wire-format JSON lines, "
        "paired by request_id) scored by the daemon's scorers and judged by the canary's "
        "gates on paired differences, plus embedding drift of the answers.")
    p.add_argument("--baseline", type=readable_file, required=True,
                   help="the current model's answers")
    p.add_argument("--candidate", type=readable_file, required=True,
                   help="the candidate's answers")
    p.add_argument("--golden", type=readable_file, default=None,
                   help="expected answers, JSON lines {request_id, expected}: adds the "
                   "golden_mismatch and golden_distance gates")
    p.add_argument("--config", default=None, help="YAML config (scorers, scoring, canary gates)")
    p.add_argument("--json", type=writable_file, default=None, help="write the JSON report here")
    p.add_argument("--html", type=writable_file, default=None, help="write the HTML report here")
    p.add_argument("--worst", type=whole(0), default=10, help="regressions shown (default 10)")


def run(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    from rich.console import Console

    from monitor.app.compare import VERDICTS, InputError, compare, read_golden, read_side
    from monitor.app.compare_report import print_table, render_html
    from monitor.app.wiring import offline_decoder

    config = load_offline_config(args.config)
    try:
        decoder = offline_decoder(config)
        baseline, candidate = read_side(args.baseline, decoder), read_side(args.candidate, decoder)
        golden = None
        if args.golden is not None:
            golden, refused = read_golden(args.golden)
            baseline.rejected += refused
        result = compare(baseline, candidate, config, golden, worst=args.worst)
    except InputError as exc:
        print(f"driftwatch compare: {exc}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:  # a CI log: wide enough for every column
        console = Console(width=160)
    print_table(result, console)
    if args.json is not None:
        write_file(args.json, json.dumps(result.to_json(), indent=2, allow_nan=False), "--json")
    if args.html is not None:
        write_file(args.html, render_html(result), "--html")
    return VERDICTS[result.verdict]
