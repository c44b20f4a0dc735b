"""The `driftwatch` command line: collects one parser per verb and runs the one asked for."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence

from chaos import command as chaos
from dashboards import command as dashboards
from monitor.app.arguments import StreamError
from monitor.cli import (
    backtest,
    bench,
    canary,
    check_config,
    compare,
    demo,
    evaluate,
    events,
    models,
    reference,
    run,
    score,
)
from monitor.cli.common import stdout_reader_gone
from monitor.config import ConfigError
from monitor.telemetry.metrics import driftwatch_version

# In the order `driftwatch --help` lists them; each has add_parser(sub) and run(args).
VERBS = (run, check_config, demo, score, backtest, compare, reference, evaluate, events,
         dashboards, chaos, canary, models, bench)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="driftwatch", description="Streaming production monitor for LLM serving."
    )
    parser.add_argument("--version", action="version",
                        version=f"driftwatch {driftwatch_version()} (Python "
                                f"{platform.python_version()})")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        before = set(sub.choices)
        verb.add_parser(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(verb=verb)
    if sys.stderr is None:  # `2>&-`: what would be said goes nowhere, and the work is done
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the process's life
    args = parser.parse_args(argv)
    try:
        return args.verb.run(args)
    except (ConfigError, StreamError) as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a verb's own handling (while it imports torch)
        print("driftwatch: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # what any verb's models may meet, said as one line
        from detectors.embedder import DeviceUnavailable, ModelNotFound

        if not isinstance(exc, ModelNotFound | DeviceUnavailable):
            raise
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        # The reader of stdout has what it wanted (`driftwatch score | head`): stop as a tool
        # that SIGPIPE ends does (128 + 13), without a traceback; stdout is pointed at
        # /dev/null so that the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
