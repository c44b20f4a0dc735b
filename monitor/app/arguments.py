"""argparse types shared by the command lines (driftwatch's verbs, chaos, dashboards): file
and number arguments checked when parsed, so a typo is one line naming the argument (exit 2),
not a traceback after the models have loaded."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO


class StreamError(OSError):
    """A verb's input or output that cannot be read or written as given (a standard stream
    the caller closed, a full disk, a path the system refuses): one line naming it, exit 2,
    not a traceback."""


def standard_input() -> IO[bytes]:
    """stdin's bytes; StreamError where the caller closed it (`<&-`: Python has none)."""
    if sys.stdin is None:
        raise StreamError("standard input is closed: name a file with --input")
    return sys.stdin.buffer


def readable_file(text: str) -> Path:
    """argparse type of a file a verb reads: one that exists, is not a directory and may be
    read."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: not readable (permission denied)")
    return path


def writable_file(text: str) -> Path:
    """argparse type of a file a verb writes (created or replaced): its directory must exist
    and take it, checked before the work whose result it holds."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r}: {str(folder)!r} " + ("is not a directory" if folder.exists()
                                             else "does not exist"))
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: not writable (permission denied)")
    return path


def or_std(check: Callable[[str], Path]) -> Callable[[str], Path | None]:
    """`check`, with "-" for stdin or stdout (None), as Unix tools take it."""
    def parse(text: str) -> Path | None:
        return None if text == "-" else check(text)
    return parse


def http_url(text: str) -> str:
    """argparse type of an http(s) base URL (a daemon, Grafana, Prometheus): a scheme, a host
    and a port that parse, so a typo is refused here, not met as httpx's InvalidURL."""
    from urllib.parse import urlsplit

    if any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(f"{text!r}: a URL has no spaces or control characters")
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 - raises ValueError for a port that is no number or too large
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise argparse.ArgumentTypeError(f"{text!r}: give http://HOST[:PORT] or https://...")
    return text.rstrip("/")


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type of a whole number from `minimum` (to `maximum`): a count, a limit, an
    offset, a port. Out of range is refused when parsed, not met as an IndexError later."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"{minimum} or more" if maximum is None else f"{minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"{value}: give {allowed}")
        return value
    return parse


def positive(text: str) -> float:
    """argparse type of a finite number above 0: a rate, a duration."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
    return value
