"""The local Tansu broker is ready only when its own process listens: a free port that another
process took in the meantime must not pass for a started broker (a parallel test's broker
would answer, and stop when that test ends)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from monitor.local.broker import LocalBroker, free_port, listens

pytestmark = pytest.mark.broker


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A loopback port with a listener that is not a broker."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def test_listens_tells_the_owner_of_a_port_from_other_processes(taken: socket.socket) -> None:
    port = taken.getsockname()[1]
    assert listens(os.getpid(), port)
    assert not listens(os.getpid(), free_port())
    assert not listens(os.getppid(), port)  # connectable, but not the parent's


def test_a_given_port_that_is_taken_fails_naming_it(taken: socket.socket,
                                                    tmp_path: Path) -> None:
    port = taken.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
        LocalBroker(port=port, log_file=tmp_path / "tansu.log").start(attempts=3)


def test_a_chosen_port_taken_before_the_broker_binds_is_replaced(tmp_path: Path) -> None:
    broker = LocalBroker(log_file=tmp_path / "tansu.log")
    first = broker.port
    with socket.socket() as other:  # another process's listener gets there first
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", first))
        other.listen()
        with broker:
            assert broker.port != first and broker.bootstrap == f"127.0.0.1:{broker.port}"
            assert broker._process is not None and listens(broker._process.pid, broker.port)
            broker.create_topics([("after-a-taken-port", 2)])
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
            try:
                assert "after-a-taken-port" in admin.list_topics()
            finally:
                admin.close()


def test_free_ports_are_consecutive_bindable_and_outside_what_the_kernel_hands_out() -> None:
    """A daemon's workers bind port + 1 .. port + N: a run of free ports below the ephemeral
    range, where no outgoing connection (nor a bind to port 0) can take one meanwhile; a single
    free_port() is one of them."""
    from monitor.local.broker import free_ports

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    handed_out = set()
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            handed_out.add(s.getsockname()[1])
    assert all(10_000 <= free_port() < low for _ in range(20))
    for _ in range(20):
        base = free_ports(4)
        run = set(range(base, base + 4))
        assert base >= 10_000 and max(run) < low and not run & handed_out
        for port in run:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))  # each of them binds
