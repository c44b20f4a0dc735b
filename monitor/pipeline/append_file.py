"""A file the daemon appends lines to for as long as it runs (the audit log, the review file),
reopened when log rotation moved it away.

logrotate's default renames the file and lets a new one be created: a writer that kept its
descriptor went on filling the renamed file, and the new one stayed empty, for good. As
logging's WatchedFileHandler does, each write first compares the path's device and inode
with the open file's (one stat a batch) and reopens it when they differ or it is gone.
Truncation in place (`copytruncate`) needs nothing: the file is opened for appending.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO


class AppendFile:
    """Appends bytes to `path`, following it through rotation; an OSError reaches the caller
    and leaves the file closed, to be opened again at the next write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._id: tuple[int, int] | None = None
        self._open()

    def write(self, data: bytes) -> None:
        try:
            if self._file is None or self._moved():
                self.close()
                self._open()
            assert self._file is not None
            self._file.write(data)
            self._file.flush()
        except OSError:
            self.close()  # its buffer may hold what failed: dropped with it
            raise

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # what a full disk left unwritten is lost
                self._file.close()
            self._file = None

    def _open(self) -> None:
        self._file = open(self.path, "ab")  # noqa: SIM115 (lives with the writer)
        st = os.fstat(self._file.fileno())
        self._id = (st.st_dev, st.st_ino)
        # A kill -9 can cut the last line short; end it, so the lines written on stay whole.
        if st.st_size and _last_byte(self.path) != b"\n":
            self._file.write(b"\n")

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._id


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)
