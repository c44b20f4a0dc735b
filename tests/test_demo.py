"""`driftwatch demo` end to end: broker, replayed traffic, daemon, live numbers, clean exit."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.broker


def test_demo_shows_live_numbers_and_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "demo", "--duration", "14", "--port", "0",
         "--rate", "200"],
        capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(
        r"demo summary: (\d+) records scored, (\d+) dead-lettered, (\d+) replayed", done.stdout
    )
    assert summary, done.stdout
    scored, dead, replayed = map(int, summary.groups())
    assert scored > 200
    assert dead >= 1  # one malformed message per hundred
    assert scored + dead <= replayed + replayed // 100 + 1
    assert "records/s" in done.stdout
    assert "latency p50 / p99 (stable)" in done.stdout
