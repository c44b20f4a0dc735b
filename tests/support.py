"""The real parts tests drive live in `chaos.parts`, shared with `driftwatch chaos`."""

from chaos.parts import (
    Daemon,
    Metrics,
    QuietHandler,
    committed,
    free_port,
    produce,
    read_topic,
    serve,
    wait_for,
    write_config,
)

__all__ = [
    "Daemon",
    "Metrics",
    "QuietHandler",
    "committed",
    "free_port",
    "produce",
    "read_topic",
    "serve",
    "wait_for",
    "write_config",
]
