"""The files and directories a daemon writes, checked before it starts anything: one that can
never be created (under a file, in a directory this user may not write, a directory where a
file goes) is a clear error naming its setting, not a traceback from deep in a store, or a
failure hours later at the first decision or the first checkpoint.

Nothing is created here (a store creates its own, with its own permissions), and
`check-config` does not run this: a config is often checked on another machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from monitor.config import Config


class StatePathError(ValueError):
    """A file or directory of the config that this process cannot create or write."""


def check_state_paths(config: Config, stage: str = "all") -> None:
    """Raise StatePathError naming every unusable path that the config's enabled parts
    write in `stage` (score: the audit log alone; decide: the state; all: both)."""
    problems = [f"  {setting} = {str(path)!r}: {problem}"
                for setting, path, directory in _written(config, stage)
                if (problem := unusable(path, directory)) is not None]
    if problems:
        raise StatePathError("\n".join(["cannot write where the config says:", *problems]))


def _written(config: Config, stage: str) -> Iterator[tuple[str, Path, bool]]:
    """(setting, path, is a directory) of what the enabled parts write."""
    if stage != "decide" and config.audit_log is not None:
        yield "audit_log", config.audit_log, False
    if stage == "score":
        return
    if config.rules or config.canary.enabled or config.actions:
        yield "outbox.path", config.outbox.path, False
    if config.checkpoint.enabled:
        yield "checkpoint.path", config.checkpoint.path, False
    if config.review.enabled:
        yield "review.store", config.review.store, False
        if config.review.file is not None:
            yield "review.file", config.review.file, False
    if config.drift.enabled:
        yield "drift.reference.store", config.drift.reference.store, True


def unusable(path: Path, directory: bool) -> str | None:
    """Why `path` (a file, or a directory) cannot be written by this process; None if it can
    (it exists as what it should be and is writable, or its nearest existing ancestor is a
    directory this process may create entries in)."""
    path = path.expanduser()
    if path.exists():
        if directory and not path.is_dir():
            return "exists and is not a directory"
        if not directory and path.is_dir():
            return "is a directory (the setting names a file)"
        if not os.access(path, os.W_OK):
            return "not writable by this user"
        return None
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{str(ancestor)!r} is a file, not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot be created: {str(ancestor)!r} is not writable by this user"
    return None
