"""The daemon's logging: kafka-python's read of a connection it closed meanwhile is not logged
as an error with a traceback; its other transport errors are."""

from __future__ import annotations

import logging
import socket

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.transport import KafkaTCPTransport

from monitor.cli.common import _ClosedSocketRead, quiet_closed_socket_reads


def _read(transport: KafkaTCPTransport) -> Exception | None:
    """kafka-python's own receive step; the error it returns."""
    _, error = transport._sock_recv()
    return error


@pytest.fixture
def quieted():
    # Another test of this process may have set the daemon's logging up already.
    logger = logging.getLogger("kafka.net.transport")
    before = list(logger.filters)
    logger.filters[:] = [f for f in before if not isinstance(f, _ClosedSocketRead)]
    quiet_closed_socket_reads()
    quiet_closed_socket_reads()  # once per process, however often it is called
    assert sum(isinstance(f, _ClosedSocketRead) for f in logger.filters) == 1
    yield
    logger.filters[:] = before


def test_a_read_of_a_socket_closed_meanwhile_is_not_an_error(quieted, caplog) -> None:
    # The race: another thread closed the transport (its socket is gone) after the I/O
    # thread was woken to read it.
    transport = KafkaTCPTransport(None, None)
    transport._closed = True
    with caplog.at_level(logging.INFO):
        error = _read(transport)
    assert isinstance(error, KafkaConnectionError)  # the library still aborts the read
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text
    assert "Traceback" not in caplog.text


def test_the_same_record_at_debug_is_one_line_that_says_why(quieted, caplog) -> None:
    transport = KafkaTCPTransport(None, None)
    transport._closed = True
    logger = logging.getLogger("kafka.net.transport")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="kafka.net.transport"):
            _read(transport)
    finally:
        logger.setLevel(level)
    records = [r for r in caplog.records if r.name == "kafka.net.transport"]
    assert [r.levelno for r in records] == [logging.DEBUG], caplog.text
    assert "read after the transport was closed" in records[0].getMessage()
    assert records[0].exc_info is None


def test_an_error_on_an_open_connection_is_still_logged_with_its_traceback(quieted,
                                                                          caplog) -> None:
    # A real socket that is not connected: recv raises OSError (ENOTCONN) on an open transport.
    with socket.socket() as sock:
        transport = KafkaTCPTransport(None, sock)
        with caplog.at_level(logging.INFO):
            error = _read(transport)
    assert isinstance(error, KafkaConnectionError)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Error receiving network data" in errors[0].getMessage()
    assert errors[0].exc_info and isinstance(errors[0].exc_info[1], OSError)
