from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.local.broker import LocalBroker, free_port
from monitor.local.receiver import WebhookReceiver
from tests.support import Daemon

SECRET = "whsec_" + base64.b64encode(b"driftwatch-test-secret-0123456789").decode()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """One real Tansu broker for the session; tests isolate by unique topics and groups."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with LocalBroker(log_file=log) as b:
        yield b


@pytest.fixture
def names() -> Callable[[str], str]:
    suffix = uuid.uuid4().hex[:8]
    return lambda base: f"{base}-{suffix}"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[Path, int], Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, port: int, *args: str, cpus: set[int] | None = None) -> Daemon:
        d = Daemon(config, port, tmp_path / f"daemon-{len(started)}.log", args, cpus)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A signature-checking webhook receiver on loopback, scripted by the test."""
    r = WebhookReceiver(SECRET)
    yield r
    r.close()
