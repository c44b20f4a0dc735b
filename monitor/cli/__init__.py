"""The `driftwatch` command line: argparse and printing only, one module per verb, each with
`add_parser(sub)` and `run(args)`; `driftwatch.main` collects them (and the chaos and
dashboards verbs).
"""

from monitor.cli.driftwatch import main

__all__ = ["main"]
