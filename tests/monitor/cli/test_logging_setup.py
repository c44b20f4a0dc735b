"""The daemon's logging: kafka-python's read of a connection it closed meanwhile is not logged
as an error with a traceback; its other transport errors are; its lines repeated on every
retry of a broker out of reach pass once a minute, with a count."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError
from kafka.net.transport import KafkaTCPTransport

from monitor.cli.common import KafkaRepeats, _ClosedSocketRead, quiet_closed_socket_reads


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


class _Lines(logging.Handler):
    """The lines a handler emits; with `beside`, also how many connection failures that
    handler (added before this one) had seen at each."""

    def __init__(self, *filters: logging.Filter, beside: _Lines | None = None) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.beside, self.failures_seen = beside, []
        for f in filters:
            self.addFilter(f)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()}")
        if self.beside is not None:
            self.failures_seen.append(_failures(self.beside))


def _failures(handler: _Lines) -> int:
    return sum("Connection failed" in line for line in handler.lines)


def test_a_broker_out_of_reach_is_a_few_lines_a_minute_not_four_a_retry() -> None:
    """A real kafka-python client retrying a refused port: each kind of line passes once per
    interval, the next that passes counting the ones dropped; other loggers untouched."""
    now = [0.0]
    every = _Lines()
    shown = _Lines(KafkaRepeats(interval=60.0, clock=lambda: now[0]), beside=every)
    logger = logging.getLogger("kafka")
    level = logger.level
    for handler in (every, shown):  # `every` first: it sees each record before any filter
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", api_version=(2, 5),
                                 reconnect_backoff_ms=5, reconnect_backoff_max_ms=20)
        try:
            consumer.subscribe(["t"])
            deadline = time.monotonic() + 60
            while _failures(every) < 10 and time.monotonic() < deadline:
                consumer.poll(timeout_ms=50)
            first = _failures(every)
            assert first >= 10
            assert _failures(shown) == 1
            now[0] = 61.0
            while _failures(shown) < 2 and time.monotonic() < deadline:
                consumer.poll(timeout_ms=50)
        finally:
            consumer.close()
            for handler in (every, shown):
                logger.removeHandler(handler)
            logger.setLevel(level)
    passed = [(line, seen) for line, seen in zip(shown.lines, shown.failures_seen, strict=True)
              if "Connection failed" in line]
    assert len(passed) == 2 and "not shown" not in passed[0][0]
    # Dropped between the two that passed: the failures `every` saw in between.
    dropped = passed[1][1] - passed[0][1] - 1
    assert passed[1][0].endswith(f" ({dropped} like it in the 61 s before, not shown)")
    assert dropped >= 9
    # Every kind of line (the bootstrap warnings with their varying backoff too) passed at
    # most twice: once at first, once after the interval.
    assert len(shown.lines) <= 2 * len({line.split(" (")[0] for line in shown.lines}) + 2
    assert len(every.lines) > 3 * len(shown.lines)


def test_other_loggers_pass_every_line() -> None:
    repeats = KafkaRepeats(clock=lambda: 0.0)
    record = logging.LogRecord("driftwatch", logging.WARNING, __file__, 1, "same %d", (1,), None)
    assert all(repeats.filter(record) for _ in range(5))
    kafka = logging.LogRecord("kafka.net.manager", logging.ERROR, __file__, 1, "retry %d",
                              (1,), None)
    assert [repeats.filter(kafka) for _ in range(3)] == [True, False, False]


def test_json_logs_are_one_object_a_line_with_the_traceback_inside() -> None:
    """`log_format: json`, in a process of its own (setup_logging configures the root)."""
    script = (
        "import logging\n"
        "from monitor.cli.common import setup_logging\n"
        "setup_logging('INFO', 'json')\n"
        "log = logging.getLogger('driftwatch')\n"
        "log.warning('drift detected: %s\\nsecond line', 'prompt')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    log.exception('batch failed')\n"
        "logging.getLogger('kafka.net.manager').error('Connection failed')\n"
        "logging.getLogger('kafka.net.manager').error('Connection failed')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr  # the repeated kafka line passes once
    first, second, third = (json.loads(line) for line in lines)
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "WARNING", "logger": "driftwatch",
        "message": "drift detected: prompt\nsecond line"}
    assert datetime.fromisoformat(first["time"]).utcoffset() == timedelta(0)
    assert second["message"] == "batch failed" and second["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in second["exc_info"]
    assert third["logger"] == "kafka.net.manager" and "taskName" not in third
