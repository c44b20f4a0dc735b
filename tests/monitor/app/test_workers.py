"""The --workers parent looks after its scoring processes: one that exits unasked is started
again after its backoff, but none once the parent is stopping (a Ctrl-C or a SIGHUP reaches
the whole process group, so the workers exit while the parent still drains); and a worker
whose parent is gone stops."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from monitor.app.workers import Worker, look_after
from monitor.local.broker import free_ports
from tests.support import wait_for


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


def test_a_worker_whose_parent_is_gone_stops(tmp_path: Path) -> None:
    """A --workers parent killed outright cannot stop its scoring processes: each watches
    for it and stops once it is gone (a real parent process exits under a real child)."""
    out = tmp_path / "events.txt"
    child = (
        "import os, sys, threading\n"
        "from monitor.app.daemon import stop_when_orphaned\n"
        "out = open(sys.argv[1], 'a', buffering=1)\n"
        "out.write('child watching\\n')\n"
        "stop = threading.Event()\n"
        "stop_when_orphaned(int(sys.argv[2]), stop, every_s=0.05)\n"
        "out.write('child stopped\\n')\n")
    parent = (
        "import os, subprocess, sys, time\n"
        "out = sys.argv[1]\n"
        "subprocess.Popen([sys.executable, '-c', sys.argv[2], out, str(os.getpid())])\n"
        "deadline = time.monotonic() + 60\n"
        "while 'child watching' not in open(out).read() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "time.sleep(0.5)  # the child keeps watching while its parent lives\n"
        "open(out, 'a').write('parent exiting\\n')\n"
        "os._exit(0)  # as after kill -9: nothing of the parent's runs\n")
    out.touch()
    subprocess.run([sys.executable, "-c", parent, str(out), child], timeout=120, check=True)
    wait_for(lambda: "child stopped" in out.read_text(), 60, "the orphaned child to stop")
    assert out.read_text().splitlines() == ["child watching", "parent exiting",
                                            "child stopped"]


def test_a_worker_port_another_process_holds_is_refused_before_any_worker_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker serves on metrics.port + its number; one taken made that worker exit 2 at
    every start, started again every minute for good, while the rest ran."""
    from monitor.app import workers
    from monitor.cli import main

    started: list[Worker] = []
    monkeypatch.setattr(workers.Worker, "start", lambda self: started.append(self))
    base = free_ports(3)
    with socket.socket() as held:
        held.bind(("127.0.0.1", base + 2))
        held.listen()
        config = tmp_path / "dw.yaml"
        config.write_text(yaml.safe_dump({
            "kafka": {"topic": "t", "bootstrap_servers": ["127.0.0.1:1"]},
            "metrics": {"port": base}, "checkpoint": {"enabled": False}}))
        assert main(["run", "--config", str(config), "--workers", "2"]) == 2
    assert started == []
    assert capsys.readouterr().err == (
        f"driftwatch: cannot serve /metrics on 127.0.0.1:{base + 2} (Address already in use): "
        "scoring worker 2 serves on metrics.port + 2: set metrics.port so that it and the 2 "
        "above it are free\n")
