"""`driftwatch demo`'s port: the default, or any free one when another process holds it (so
`make demo` does not fail for it); a port asked for and taken is a clear refusal."""

from __future__ import annotations

import socket

import pytest

from monitor.cli import main
from monitor.cli.demo import metrics_port


def test_the_default_port_or_any_free_one_when_it_is_taken() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert metrics_port(None, default=taken) == 0
        assert metrics_port(taken) is None
    assert metrics_port(None, default=taken) == taken  # free again
    assert metrics_port(0) == 0


def test_a_taken_port_asked_for_exits_2_before_starting_anything(
        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert main(["demo", "--port", str(taken), "--duration", "1"]) == 2
    assert capsys.readouterr().err == (
        f"driftwatch demo: another process holds port {taken}; pick another --port, or 0 "
        "for any free one\n")
