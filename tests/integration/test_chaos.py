"""`driftwatch chaos` scenarios not covered elsewhere: a 60 s webhook outage, hostile input with
kill -9 and a frozen broker, the soak; the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chaos.scenarios import hostile, soak, webhook_outage

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def test_a_60_second_webhook_outage_delays_deliveries_and_loses_none(tmp_path: Path) -> None:
    report = webhook_outage(tmp_path, outage_s=60, records=3_000)
    assert report.ok, f"{report.checks} {report.figures}"  # a str: shown in full
    f = report.figures
    decisions = f["decisions with a webhook"]
    assert isinstance(decisions, int) and decisions >= 4
    # Nothing got through for 60 s: every decision was waiting when the outage ended.
    assert f["outbox depth when the outage ended"] == f["peak outbox depth"] == decisions
    assert f["failed attempts during the outage"] > decisions  # each tried, some again
    assert f["longest gap between failed attempts (s)"] <= 10  # retried all along
    assert f["deliveries accepted"] == f["distinct webhook-ids"] == decisions
    assert f["seconds to drain after the outage"] <= 15  # backoff capped at 5 s


def test_the_command_prints_figures_and_checks_and_exits_by_them(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "chaos", "webhook-outage", "--seconds", "5",
         "--records", "600", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chaos: webhook-outage" in done.stdout
    assert "retries carry the decision's one webhook-id" in done.stdout
    assert "holds" in done.stdout and "FAILED" not in done.stdout
    assert (tmp_path / "webhook-outage" / "daemon-0.log").exists()


@pytest.mark.timeout(600)
def test_soak_8k_records_through_the_cpu_path_with_flat_memory(tmp_path: Path) -> None:
    # 200 calibration bootstraps and 150-record references instead of 5,000 and 300: the
    # detectors arm sooner (measured: at 2,038 records, the 25% share; 5,138 with 300-record
    # references), so 8k records still measure memory for a while after warm-up. The 200k
    # soak is `driftwatch chaos soak`.
    report = soak(tmp_path, records=8_000, bootstraps=200, reference_records=150)
    assert report.ok, f"{report.checks} {report.figures}"  # a str: shown in full
    f = report.figures
    assert f["records scored"] == 8_000
    assert 0 < f["warm-up ended at (records)"] < 6_500  # type: ignore[operator]
    assert f["model-scored (sampled under lag)"] >= 600  # the models ran all along
    assert f["checkpoints written"] >= 3
    # Measured on 2 cores: 200k records grew 85-90 MiB after warm-up at the peak (the
    # embedding cache still filling), 60k records 13 MiB after warm-up ended at 40k (once the
    # drift detectors were calibrated), 20k records 30 MiB; without the heap settings of
    # monitor.app.heap the 200k run grew by 184 to 559 MiB.
    growth = f["RSS growth after warm-up (MiB)"]
    assert isinstance(growth, float) and growth <= 150
    rss = (tmp_path / "rss.csv").read_text().splitlines()
    assert rss[0] == "records_scored,rss_mib" and len(rss) > 20  # one sample a second


def test_hostile_messages_kill_9_and_a_frozen_broker_lose_nothing(tmp_path: Path) -> None:
    report = hostile(tmp_path, records=3_000, freeze_s=10)
    assert report.ok, f"{report.checks} {report.figures}"  # a str: shown in full
    f = report.figures
    assert f["hostile kinds"] == 9 and f["hostile messages"] == 23
    assert f["dead letters written as a prefix"] >= 2  # the two over 1 MB, at least once each
    assert isinstance(f["largest dead letter (bytes)"], int)
    assert 900_000 < f["largest dead letter (bytes)"] < 1_000_000
    assert f["/readyz said not ready"] >= 3  # of 9 one-second probes of the 10 s freeze
    assert f["decisions with a webhook"] >= 1
