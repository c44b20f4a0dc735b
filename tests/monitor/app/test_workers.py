"""The --workers parent looks after its scoring processes: one that exits unasked is started
again after its backoff, but none once the parent is stopping (a Ctrl-C or a SIGHUP reaches
the whole process group, so the workers exit while the parent still drains)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from monitor.app.workers import Worker, look_after


def _exited_worker() -> Worker:
    worker = Worker(1, Path("unused.yaml"), 0, 1)
    worker._argv = [sys.executable, "-c", "pass"]  # a real process that exits at once
    worker.start()
    assert worker.process is not None
    worker.process.wait(timeout=60)
    return worker


def test_a_worker_that_exits_unasked_is_started_again_after_its_backoff() -> None:
    worker = _exited_worker()
    first = worker.process
    look_after([worker], threading.Event(), now=1_000.0)  # seen exited: backoff 1 s
    assert worker.process is first and worker.restarts == 0
    look_after([worker], threading.Event(), now=1_002.0)
    assert worker.process is not first and worker.restarts == 1
    assert worker.process is not None
    worker.process.wait(timeout=60)


def test_none_is_started_again_once_the_parent_is_stopping() -> None:
    worker = _exited_worker()
    first = worker.process
    stopping = threading.Event()
    stopping.set()
    for now in (1_000.0, 1_002.0, 1_100.0):
        look_after([worker], stopping, now)
    assert worker.process is first and worker.restarts == 0
