"""What every verb shares: the default config path, logging setup, and a safe exit."""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

from monitor.app.arguments import StreamError

DEFAULT_CONFIG = "driftwatch.yaml"


def config_path(given: str | None) -> Path | None:
    """The config file a verb reads: the one given (a missing one is an error there), else
    driftwatch.yaml when it is here, else none: settings from the environment and the
    defaults alone, as a container configured by DRIFTWATCH_* variables runs."""
    if given is not None:
        return Path(given)
    return Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).exists() else None


def hint_when_reading_a_terminal(verb: str) -> None:
    """Say so when a verb waits on stdin and stdin is a terminal: without it, `driftwatch
    score` with no --input looks hung."""
    if sys.stdin is not None and sys.stdin.isatty():
        print(f"driftwatch {verb}: reading wire records (JSON lines) from the terminal; "
              "Ctrl-D ends them, --input FILE reads a file", file=sys.stderr)


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has closed it: `driftwatch score |
    head` once head has its lines. poll() reports POLLERR on such a write end."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def exit_past_busy_workers(code: int) -> int:
    """Return `code`, or exit with it at once when a worker is still inside a model call or
    a background drift calibration:
    the interpreter's teardown would destroy torch's running thread pool and abort (SIGABRT).
    Everything durable (outbox, commits, checkpoint) is already written by then."""
    from consumers.processor import busy_threads
    from monitor.pipeline.drift import calibrating

    if busy_threads() or calibrating():
        logging.getLogger("driftwatch").warning(
            "exiting while a worker is inside a model call or a drift calibration (what it "
            "was doing stays uncommitted, and is done again on restart)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def setup_logging(level: str, log_format: str = "text") -> None:
    """Logging on stderr at `level`, as text lines or (`json`) one JSON object a line."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    formatter: logging.Formatter | None = None
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        # time: ISO 8601 in UTC with microseconds, first; then level, logger and message.
        formatter = JsonFormatter("%(levelname)s %(name)s %(message)s", timestamp="time",
                                  rename_fields={"levelname": "level", "name": "logger"},
                                  reserved_attrs=[*RESERVED_ATTRS, "taskName"])
    # kafka-python is chatty at INFO (every connection and rebalance step).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # Its IO thread warns whenever the GIL was busy for 100 ms (the model was running): not news.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    quiet_closed_socket_reads()
    for handler in logging.getLogger().handlers:
        if formatter is not None:
            handler.setFormatter(formatter)
        if not any(isinstance(f, KafkaRepeats) for f in handler.filters):
            handler.addFilter(KafkaRepeats())


class KafkaRepeats(logging.Filter):
    """kafka-python logs every failed reconnect at ERROR and WARNING, four lines every few
    seconds for as long as a broker is gone: an outage of hours is thousands of the same
    lines, burying the daemon's own. A kafka line whose text, numbers aside, passed within
    `interval` seconds is dropped, and the next that passes says how many were. Installed
    on the handlers: a logger's filter sees only the records of that one logger."""

    _NUMBERS = re.compile(r"\d+(?:\.\d+)?")

    def __init__(self, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka"):
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, self._NUMBERS.sub("#", text))
        now = self._clock()
        with self._lock:
            passed, dropped = self._seen.get(key, (-float("inf"), 0))
            if now - passed < self.interval:
                self._seen[key] = (passed, dropped + 1)
                return False
            if len(self._seen) >= 1_000:  # texts that differ beyond numbers: no growth
                self._seen.clear()
            self._seen[key] = (now, 0)
        if dropped:
            record.msg, record.args = "%s (%d like it in the %.0f s before, not shown)", (
                text, dropped, now - passed)
        return True


class _ClosedSocketRead(logging.Filter):
    """kafka-python 3.0's I/O thread can read a connection that another thread has closed
    meanwhile (a consumer or producer closing at shutdown or on a rebalance): it logs the
    AttributeError of the gone socket, with a traceback, at ERROR, though the transport was
    closed on purpose and nothing is lost. Such a record becomes one DEBUG line (the kafka
    loggers are at WARNING or above, so it is dropped); any other transport error stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not (isinstance(error, AttributeError) and "(closed)" in record.getMessage()):
            return True
        record.msg, record.args = "%s (read after the transport was closed: %r)", (
            record.getMessage(), error)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_closed_socket_reads() -> None:
    """Install the filter on kafka-python's transport logger, once per process."""
    logger = logging.getLogger("kafka.net.transport")
    if not any(isinstance(f, _ClosedSocketRead) for f in logger.filters):
        logger.addFilter(_ClosedSocketRead())


@contextmanager
def _writing(name: str) -> Iterator[None]:
    """An OSError of writing `name` as a StreamError naming it; a reader gone (a broken
    pipe) stays what it is, for main's quiet exit."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise StreamError(f"cannot write {name}: {exc.strerror or exc}") from exc


class _Named:
    """A binary output whose write errors name it (reads name their own file)."""

    def __init__(self, raw: IO[bytes], name: str) -> None:
        self._raw, self._name = raw, name

    def write(self, data: bytes) -> int:
        with _writing(self._name):
            return self._raw.write(data)

    def flush(self) -> None:
        with _writing(self._name):
            self._raw.flush()


def write_file(path: Path, text: str, flag: str) -> None:
    """Write a report a flag names; StreamError naming the flag where the system refuses."""
    with _writing(f"{flag} {str(path)!r}"):
        path.write_text(text, encoding="utf-8")


def to_output(path: Path | None, write: Callable[[IO[bytes]], int]) -> int:
    """Run `write` on the file at `path` (stdout when None); return its exit code.
    StreamError where it cannot be opened or written."""
    if path is None:
        if sys.stdout is None:  # `>&-`: Python leaves no stream at all
            raise StreamError("standard output is closed: name a file with --output")
        return write(cast(IO[bytes], _Named(sys.stdout.buffer, "standard output")))
    name = f"--output {str(path)!r}"
    with _writing(name):
        raw = open(path, "wb")  # noqa: SIM115 - closed below, its error named
    try:
        return write(cast(IO[bytes], _Named(raw, name)))
    finally:
        with _writing(name):  # the last buffered write fails here
            raw.close()

