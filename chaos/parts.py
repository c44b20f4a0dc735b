"""The real parts a chaos scenario (or a test) drives: topics on a Tansu broker, the daemon as
a process scraped over HTTP, loopback HTTP servers, and the memory a process holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from monitor.local.broker import (
    HEARTBEAT_INTERVAL_MS,
    SESSION_TIMEOUT_MS,
    free_port,
    free_ports,
    listens,
)
from monitor.local.receiver import QuietHandler, serve


def produce(bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes, bytes | None]],
            max_request_size: int = 1_048_576) -> dict[int, int]:
    """Send (partition, value, key) messages; return each partition's end offset (last + 1).

    End offsets come from the produce acks: Tansu's ListOffsets answers the base offset of
    the last batch, not the high watermark, so `end_offsets()` cannot be trusted there.
    `max_request_size` above 1 MiB sends messages larger than a default client would.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=max_request_size)
    futures = [producer.send(topic, value=v, key=k, partition=p) for p, v, k in messages]
    producer.flush()
    ends: dict[int, int] = {}
    for f in futures:
        meta = f.get(timeout=10)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    producer.close()
    return ends


def read_topic(bootstrap: str, topic: str, partitions: int, expected: int,
               timeout_s: float = 20.0, weight: Callable[[Any], int] = lambda _: 1) -> list:
    """Every message of the topic, once `expected` (counted by `weight`: 1 a message by
    default) are there or `timeout_s` has passed."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out: list = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < expected and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=500).values():
            out.extend(msgs)
            seen += sum(weight(m) for m in msgs)
    # Anything beyond `expected` that is already there is read too, so extras are caught.
    for msgs in consumer.poll(timeout_ms=1000).values():
        out.extend(msgs)
    consumer.close()
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def write_config(path: Path, bootstrap: str, port: int, **sections: object) -> Path:
    config: dict[str, object] = {
        "kafka": {"bootstrap_servers": [bootstrap], "commit_interval_ms": 200,
                  "session_timeout_ms": SESSION_TIMEOUT_MS,
                  "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS},
        "metrics": {"port": port},
        "batch": {"max_wait_ms": 50},
        # The spine's scorers; model scorers are tested where they are the point.
        "scorers": ["latency", "tokens", "cost", "status", "length"],
        # State next to the config: runs never resume from each other's checkpoints.
        "checkpoint": {"path": str(path.with_suffix(".checkpoint"))},
    }
    for name, section in sections.items():
        if isinstance(section, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **section}  # type: ignore[dict-item]
        else:
            config[name] = section
    path.write_text(yaml.safe_dump(config))
    return path


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str,
             interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Metrics:
    """Samples parsed from a /metrics page, summed or broken down by label."""

    def __init__(self, text: str) -> None:
        self.samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def sum(self, name: str, **labels: str) -> float:
        return sum(
            s.value for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples:
            if s.name == name:
                out[s.labels[label]] = out.get(s.labels[label], 0.0) + s.value
        return out


class Daemon:
    """`driftwatch run` as a real process, scraped over HTTP."""

    def __init__(self, config: Path, port: int, log: Path, args: Sequence[str] = (),
                 cpus: set[int] | None = None) -> None:
        """`args`: more `driftwatch run` arguments, such as ("--stage", "decide"); `cpus`:
        the only CPUs it may run on (its children inherit them), as a container's cpuset."""
        self.port = port
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "run", "--config", str(config), *args],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env,  # noqa: SIM115
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def metrics(self) -> Metrics:
        return Metrics(self.get("/metrics").text)

    def ready(self) -> bool:
        self.check_alive()
        if not listens(self.process.pid, self.port):  # another process's /readyz is not ours
            return False
        try:
            return self.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"daemon exited with {self.process.returncode}:\n"
                                 + self.log.read_text()[-3000:])

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        wait_for(self.ready, timeout_s, "the daemon to be ready")

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """wait_for while the daemon lives; a death or a timeout says what the daemon said
        and what it was doing (its log's tail, its source metrics)."""
        def alive_and() -> bool:
            self.check_alive()
            return predicate()
        try:
            wait_for(alive_and, timeout_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis()}") from None

    def diagnosis(self) -> str:
        """The log's last lines and the metrics that say where records stop."""
        try:
            page = self.get("/metrics").text
            watched = ("driftwatch_messages_consumed", "driftwatch_records_total",
                       "driftwatch_dead_letter", "driftwatch_partitions_stalled",
                       "driftwatch_consumer_lag", "driftwatch_assigned_partitions",
                       "driftwatch_offset_commits")
            metrics = "\n".join(line for line in page.splitlines()
                                if line.startswith(watched))
        except httpx.HTTPError as exc:
            metrics = f"/metrics did not answer: {exc!r}"
        return (f"daemon log (tail):\n{self.log.read_text()[-4000:]}\n"
                f"daemon metrics:\n{metrics[-4000:]}")

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


__all__ = [
    "Daemon",
    "Metrics",
    "QuietHandler",
    "committed",
    "free_port",
    "free_ports",
    "produce",
    "read_topic",
    "rss_bytes",
    "serve",
    "wait_for",
    "write_config",
]
