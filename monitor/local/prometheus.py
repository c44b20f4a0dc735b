"""A real Prometheus on a loopback port (the Debian package's binary), scraping given targets
and loading rule files: for `dashboards render --demo` and the tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from monitor.local.broker import free_port, listens


class PrometheusMissing(RuntimeError):
    """No prometheus binary; the message says how to install it."""


class LocalPrometheus:
    """A Prometheus process on a loopback port, scraping given targets; query it."""

    def __init__(self, targets: list[str], workdir: Path, rule_files: tuple[Path, ...] = (),
                 interval_s: float = 1.0, job: str = "driftwatch", attempts: int = 3) -> None:
        tool = shutil.which("prometheus")
        if tool is None:
            raise PrometheusMissing("prometheus not found: install the Debian package "
                                    "`prometheus` (make test does)")
        config = workdir / "prometheus.yml"
        every = f"{interval_s:g}s"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }))
        log = workdir / "prometheus.log"
        # A free port can be taken by another process before Prometheus binds it (it exits
        # at once then): try another, up to `attempts` times.
        for _ in range(attempts):
            if self._start_once(tool, config, workdir / "tsdb", log):
                return
        raise RuntimeError(f"Prometheus exited at start {attempts} times (exit code "
                           f"{self.process.returncode}, last on port {self.port}); see {log}")

    def _start_once(self, tool: str, config: Path, tsdb: Path, log: Path) -> bool:
        """True once our process is ready on a new free port; False if it exited first."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:  # the child holds its own copy of the handle
            self.process = subprocess.Popen(
                [tool, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prometheus did not get ready within 30 s; see {log}")
            time.sleep(0.2)
        return True

    def _ready(self) -> bool:
        # Ours, not a parallel test's Prometheus that took the free port first.
        if not listens(self.process.pid, self.port):
            return False
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = reply.json()
        if body["status"] != "success":
            raise RuntimeError(f"Prometheus rejected {promql!r}: {body}")
        return body["data"]["result"]

    def rules(self) -> list[dict]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [r for g in body["data"]["groups"] for r in g["rules"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
