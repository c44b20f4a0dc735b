"""A 30 s broker outage mid-stream, through `driftwatch chaos broker-outage`'s scenario: the
daemon keeps serving /metrics, reports not ready, reconnects by itself when the broker is back,
and scores what arrives then. Tansu runs memory-only here, so the restarted broker is empty:
the scenario creates the topic again and produces the second part after the restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.scenarios import broker_outage

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def test_the_daemon_rides_out_a_30_second_broker_outage(tmp_path: Path) -> None:
    report = broker_outage(tmp_path, down_s=30, before=500, after=300)
    assert report.ok, f"{report.checks} {report.figures}"  # a str: shown in full
    f = report.figures
    assert f["records scored"] == 800
    assert f["probes during the outage"] >= 20  # one a second, for the whole 30 s
    assert f["/readyz said not ready"] >= f["probes during the outage"] - 2
