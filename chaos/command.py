"""`driftwatch chaos SCENARIO`: run a failure scenario against real processes and print its
figures and checks as a table; exit 0 when every check holds. monitor/cli/driftwatch.py adds the
subparser with `add_parser` and hands the parsed arguments to `run`."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from monitor.app.arguments import positive, whole

if TYPE_CHECKING:
    from chaos.scenarios import Report

NAMES = ("kill9", "broker-outage", "webhook-outage", "soak", "hostile")


def add_parser(sub: argparse._SubParsersAction) -> None:
    chaos = sub.add_parser(
        "chaos", help="failure scenarios against a real broker, daemon and webhook receiver")
    chaos.add_argument("scenario", choices=(*NAMES, "all"))
    chaos.add_argument("--records", type=whole(1), default=None,
                       help="records to send (default: the scenario's own: kill9 50,000, "
                            "webhook-outage 3,000, soak 200,000, hostile 20,000)")
    chaos.add_argument("--seconds", type=positive, default=None,
                       help="outage length (broker-outage 30, webhook-outage 60, hostile's "
                            "frozen broker 20)")
    chaos.add_argument("--seed", type=int, default=None, help="seed (default: the scenario's)")
    chaos.add_argument("--workdir", type=Path, default=None,
                       help="keep logs, configs, outbox and audit here (default: a temp dir)")


def run(args: argparse.Namespace) -> int:
    from chaos.scenarios import SCENARIOS

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # the producers' IO-thread chatter
    console = Console()
    names = NAMES if args.scenario == "all" else (args.scenario,)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="driftwatch-chaos-") as tmp:
        for name in names:
            workdir = (args.workdir or Path(tmp)) / name
            options: dict[str, object] = {}
            if args.seed is not None:
                options["seed"] = args.seed
            if args.records is not None and name != "broker-outage":
                options["records"] = args.records
            if args.seconds is not None and name == "broker-outage":
                options["down_s"] = args.seconds
            if args.seconds is not None and name == "webhook-outage":
                options["outage_s"] = args.seconds
            if args.seconds is not None and name == "hostile":
                options["freeze_s"] = args.seconds
            console.print(f"[bold]{name}[/bold]: running (logs in {workdir}) ...")
            try:
                report = SCENARIOS[name](workdir, **options)  # type: ignore[operator]
            except (AssertionError, RuntimeError, OSError) as exc:
                console.print(f"[red]{name} could not finish:[/red] {exc}")
                failed += 1
                continue
            console.print(table(report))
            failed += not report.ok
    return 1 if failed else 0


def table(report: Report) -> Table:
    t = Table(title=f"chaos: {report.scenario}", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for name, value in report.figures.items():
        t.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    for name, held in report.checks.items():
        t.add_row(name, "[green]holds[/green]" if held else "[red]FAILED[/red]")
    return t
