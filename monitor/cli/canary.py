"""`driftwatch canary plan`: records per arm the canary gate needs, measured by simulation."""

from __future__ import annotations

import argparse
import sys

from monitor.acting.canary_plan import ASSUMED_RATES, LOOK, plan, render
from monitor.app.arguments import whole
from monitor.config import CanarySettings, load_offline_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    canary = sub.add_parser("canary", help="the canary gate's plan: records needed per arm")
    canary_sub = canary.add_subparsers(dest="canary", required=True)
    p = canary_sub.add_parser(
        "plan", help="records per arm to promote an identical canary, measured by simulation")
    p.add_argument("--config", default=None, help="a config whose canary section to plan")
    p.add_argument("--rate", action="append", default=[], metavar="GATE=RATE",
                   help=f"a stable rate to assume (default: {_RATES})")
    p.add_argument("--runs", type=whole(1), default=200)
    p.add_argument("--max-records", type=whole(LOOK), default=10_000,
                   help=f"records per arm before a run gives up (at least one look: {LOOK})")
    p.add_argument("--seed", type=whole(0), default=0)


# The rates --rate may set: latency_p95's is 5% by its definition (a share above a p95).
_RATES = {gate: rate for gate, rate in ASSUMED_RATES.items() if gate != "latency_p95"}


def parse_rates(items: list[str]) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in items:
        gate, _, value = item.partition("=")
        if gate not in _RATES:
            raise ValueError(f"--rate {item}: the gate must be one of {list(_RATES)}")
        try:
            rates[gate] = float(value)
        except ValueError:
            raise ValueError(f"--rate {item}: the rate must be a number in [0, 1)") from None
        if not 0 <= rates[gate] < 1:
            raise ValueError(f"--rate {item}: the rate must be in [0, 1)")
    return rates


def run(args: argparse.Namespace) -> int:
    settings = load_offline_config(args.config).canary if args.config else CanarySettings()
    try:
        rates = parse_rates(args.rate)
    except ValueError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    print(render(plan(settings, rates, args.runs, args.max_records, args.seed), settings),
          end="")
    return 0
