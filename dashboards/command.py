"""`driftwatch dashboards build | push | render`: the command line of this package.
monitor/cli/driftwatch.py adds the subparser with `add_parser` and hands the parsed
arguments to `run`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.app.arguments import http_url, positive, writable_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    dash = sub.add_parser("dashboards", help="Grafana dashboards and Prometheus rules")
    which = dash.add_subparsers(dest="dashboards", required=True)
    build = which.add_parser("build", help="regenerate dashboards/grafana/*.json and alerts.yml")
    build.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if a committed file is stale")
    push = which.add_parser("push", help="upload the dashboards to Grafana (idempotent)")
    push.add_argument("--url", type=http_url, required=True, help="Grafana base URL, e.g. http://grafana:3000")
    push.add_argument("--token-env", required=True,
                      help="environment variable holding a service account token")
    push.add_argument("--folder", default="driftwatch", help="folder title (default %(default)s)")
    render = which.add_parser("render", help="plot the main panels from a Prometheus to a PNG")
    source = render.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", type=http_url, help="Prometheus base URL")
    source.add_argument("--demo", action="store_true",
                        help="run the demo (broker, traffic, daemon) and a local Prometheus "
                             "for --minutes first, then plot: how overview.png is made")
    render.add_argument("--rate", type=positive, default=40.0, help="--demo: records/s replayed")
    render.add_argument("--output", type=writable_file, default=Path("dashboards/overview.png"))
    render.add_argument("--minutes", type=positive, default=15.0, help="time range to plot")


def run(args: argparse.Namespace) -> int:
    if args.dashboards == "build":
        from dashboards.build import build

        return build(check=args.check)
    if args.dashboards == "push":
        from dashboards.push import PushError, push

        try:
            uids = push(args.url, args.token_env, args.folder)
        except PushError as exc:
            print(f"driftwatch: {exc}", file=sys.stderr)
            return 1
        print(f"pushed {len(uids)} dashboards to folder {args.folder!r}: {', '.join(uids)}")
        return 0
    from dashboards.render import RenderError, render, render_demo

    try:
        if args.demo:
            return render_demo(args.output, args.minutes, args.rate)
        return render(args.prometheus, args.output, args.minutes)
    except RenderError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 1
