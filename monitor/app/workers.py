"""`driftwatch run --workers N`: N scoring processes on this machine, each a member of the
scoring group (Kafka spreads the input partitions over them), next to this process, which
decides (`--stage all`) or only looks after them (`--stage score`).

Processes, not threads: scoring is Python work under one GIL per process. Each worker is a
plain `driftwatch run --stage score` with the same config and its own metrics port (the
configured port plus its number, 1..N; Prometheus scrapes each). A worker that exits when not
asked to is started again after a pause that grows with each failure in a row; its partitions
go to the others meanwhile, and its uncommitted records are scored again (at least once).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from monitor.app import daemon
from monitor.app.worker_count import cpu_cores
from monitor.config import Config
from monitor.telemetry.endpoints import check_port

log = logging.getLogger("driftwatch")

_STOP_WAIT_S = 60.0  # a worker's drain on SIGTERM (its batch in hand, the commit)


class Worker:
    """One scoring process, started again whenever it exits unasked."""

    def __init__(self, number: int, config_path: Path | None, port: int, threads: int) -> None:
        """`threads`: the worker's share of the cores for torch's intra-op pool (each process
        would otherwise start one thread per core, and N of them would fight over them)."""
        self.number = number
        # Without a file the worker reads the environment it inherits, as this process did.
        file = [] if config_path is None else ["--config", str(config_path)]
        self._argv = [sys.executable, "-m", "monitor.cli", "run", *file, "--stage", "score",
                      "--worker-of", str(os.getpid())]
        self._env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                     **os.environ, "DRIFTWATCH_METRICS__PORT": str(port),
                     "DRIFTWATCH_KAFKA__CLIENT_ID": f"driftwatch-score-{number}"}
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._failures = 0  # exits in a row, each without a minute of uptime before it
        self._started_at = 0.0
        self._restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self._argv, env=self._env)
        self._started_at = time.monotonic()
        log.info("scoring worker %d started (pid %d)", self.number, self.process.pid)

    def check(self, now: float) -> None:
        """Start the worker again if it exited, once its backoff has passed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if self._failures and now - self._started_at > 60:
                self._failures = 0
            return
        if self._restart_at is None:
            delay = min(2.0 ** self._failures, 60.0)
            log.error("scoring worker %d exited with %s; starting it again in %.0fs",
                      self.number, self.process.returncode, delay)
            self._failures += 1
            self._restart_at = now + delay
        elif now >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("scoring worker %d did not stop within %.0fs; killing it",
                        self.number, _STOP_WAIT_S)
            self.process.kill()
            return self.process.wait()


def look_after(pool: list[Worker], stop: threading.Event, now: float) -> None:
    """Start again the workers that exited unasked. Once stopping, none: the Ctrl-C or the
    SIGHUP that stops this process reached its workers too (one process group), and each
    that exited while this one was still draining its own was started again."""
    if stop.is_set():
        return
    for worker in pool:
        worker.check(now)


def run(config: Config, config_path: Path | None, workers: int, stage: daemon.Stage = "all",
        stop: threading.Event | None = None) -> int:
    """Start `workers` scoring processes, then decide here (stage all) or wait (score)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda _signum, _frame: stop.set())
    base = config.metrics.port
    for i in range(1, workers + 1 if base else 1):  # else each would exit 2, restarted forever
        check_port(config.metrics.host, base + i,
                   f"scoring worker {i} serves on metrics.port + {i}: set metrics.port so "
                   f"that it and the {workers} above it are free")
    threads = max(1, cpu_cores() // workers)
    pool = [Worker(i, config_path, base + i if base else 0, threads)
            for i in range(1, workers + 1)]
    for worker in pool:
        worker.start()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            look_after(pool, stop, time.monotonic())

    watcher = threading.Thread(target=watch, name="driftwatch-workers", daemon=True)
    watcher.start()
    try:
        if stage == "all":
            return daemon.run(config, stop, stage="decide")
        stop.wait()
        return 0
    finally:
        done.set()
        watcher.join()
        for worker in pool:
            worker.stop()
        deadline = time.monotonic() + _STOP_WAIT_S
        codes = [worker.wait(deadline) for worker in pool]
        log.info("scoring workers stopped: exit codes %s, restarts %s", codes,
                 [w.restarts for w in pool])
