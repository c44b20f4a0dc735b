"""`driftwatch demo` end to end: broker, replayed traffic, daemon, live numbers, clean exit."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.printed import ratio_range

pytestmark = pytest.mark.broker


def test_demo_shows_live_numbers_and_exits_cleanly() -> None:
    done = subprocess.run(
        # Until 301 records are scored, not for a fixed time: a busy machine scores slower.
        [sys.executable, "-m", "monitor.cli", "demo", "--until-scored", "301", "--duration", "240",
         "--port", "0", "--rate", "100"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(
        r"demo summary: (\d+) records scored, (\d+) dead-lettered, (\d+) replayed", done.stdout
    )
    assert summary, done.stdout
    scored, dead, replayed = map(int, summary.groups())
    assert scored > 300
    assert dead >= 1  # one malformed message per hundred
    assert scored + dead <= replayed + replayed // 100 + 1
    assert "records/s" in done.stdout
    assert "latency p50 / p99 (stable)" in done.stdout
    assert "groundedness p50" in done.stdout and "scored fraction" in done.stdout
    # The acting side is wired in: rules, canary gate, outbox and a signing receiver.
    for row in ("decisions", "canary verdict", "shadow verdict (pairs, unpaired)",
                "sent for review", "outbox depth", "webhooks received (signature ok)"):
        assert row in done.stdout, row
    assert re.search(r"replayed,\s+(\d+)\s+signed\s+webhooks\s+received", done.stdout)


def test_bench_consume_prints_each_path_in_one_and_two_processes_and_their_ratios() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "bench", "consume", "--records", "4000",
         "--partitions", "2", "--rounds", "1", "--workers", "2", "--otlp"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    def rate(row: str) -> float:
        found = re.search(re.escape(row) + r"\s+([\d,]+) \(", done.stdout)
        assert found, done.stdout
        return float(found.group(1).replace(",", ""))

    raw = rate("raw kafka-python poll loop (baseline)")
    ours = rate("driftwatch decode+validate+batch+metrics")
    raw_2 = rate("raw kafka-python poll loop, 2 processes")
    ours_2 = rate("driftwatch decode+validate+batch+metrics, 2 processes")
    assert min(raw, ours, raw_2, ours_2) > 0
    ratios = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"ratio (driftwatch(?: 2 processes)? / raw(?: 2 processes)?): ([\d.]+)", done.stdout)}
    assert ratios == pytest.approx({
        "driftwatch / raw": ours / raw, "driftwatch 2 processes / raw": ours_2 / raw,
        "driftwatch 2 processes / raw 2 processes": ours_2 / raw_2}, abs=0.01)
    # The same records as OTLP spans, 8 calls a message: every one read (a rate at all).
    for encoding in ("otlp_json", "otlp_proto"):
        otlp = rate(f"driftwatch, OTLP spans (wire.format: {encoding})")
        ratio = re.search(rf"ratio driftwatch, OTLP spans \({encoding}\) / driftwatch: "
                          r"([\d.]+)", done.stdout)
        assert otlp > 0 and ratio, done.stdout
        low, high = ratio_range(otlp, ours, 0.5, 0.5)  # rates printed to 1
        assert low <= float(ratio.group(1)) <= high, done.stdout


def test_bench_throughput_times_both_paths_in_rounds_and_prints_median_and_spread() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "bench", "throughput", "--records", "24",
         "--partitions", "2", "--rounds", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = [tuple(float(x.replace(",", "")) for x in m.groups()) for m in re.finditer(
        r"round \d: naive ([\d,.]+), driftwatch ([\d,.]+) records/s", done.stdout)]
    assert len(rounds) == 2, done.stdout
    naive, ours = (sorted(path) for path in zip(*rounds, strict=True))

    def row(name: str) -> tuple[float, float, float]:
        found = re.search(re.escape(name) + r"\s+([\d,.]+) \(([\d,.]+)-([\d,.]+)\)",
                          done.stdout)
        assert found, done.stdout
        median, low, high = (float(x.replace(",", "")) for x in found.groups())
        return median, low, high

    # Median (min-max) of the rounds printed above them, and the ratio from those medians.
    assert row("naive SentenceTransformer.encode(prompt, response)") == pytest.approx(
        (sum(naive) / 2, naive[0], naive[1]), abs=0.06)
    assert row("driftwatch end to end (broker, all scorers, metrics)") == pytest.approx(
        (sum(ours) / 2, ours[0], ours[1]), abs=0.06)
    ratio = re.search(r"ratio driftwatch / naive: ([\d.]+); per pair of rounds", done.stdout)
    assert ratio, done.stdout
    # Each round is printed to 0.1: their sums are known to within 0.1 each.
    low, high = ratio_range(sum(ours), sum(naive), 0.1, 0.1)
    assert low <= float(ratio.group(1)) <= high, done.stdout
    assert "2 round(s) of each path taking turns" in done.stdout


def test_bench_drift_prints_delay_false_alarms_and_cost_per_detector() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "bench", "drift", "--ert", "1000", "--window", "30",
         "--runs", "2", "--clean-records", "1000", "--questions", "1500"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {m.group(1).strip(): m for m in re.finditer(
        r"^(driftwatch OnlineMMD.*?|river ADWIN.*?)\s+([\d.]+|nan)\s+(\d+)/(\d+)\s+(\d+)"
        r"\s+([\d,]+) \(([\d,]+)-([\d,]+)\)$",
        done.stdout, re.MULTILINE)}
    default = "driftwatch OnlineMMD (256 RFF, windows 7/30) x3 seeds"
    one_window = "driftwatch OnlineMMD (256 RFF, window 30 only) x3 seeds"
    assert set(rows) == {default, one_window,
                         "driftwatch OnlineMMD (512 RFF, windows 7/30) x3 seeds",
                         "river ADWIN on PC1 (delta 0.002)"}, done.stdout
    ours = rows[default]
    assert ours.group(4) == "6"  # 2 runs for each of 3 detector seeds, pooled
    # Measured (3 runs): 8/9 runs detected 9.2 records after the shift (one window: 7/9).
    assert int(ours.group(3)) >= 4  # the topic shift is found in most runs
    assert float(ours.group(2)) < 30  # within a window of the shift
    assert float(ours.group(2)) < float(rows[one_window].group(2))  # the short window helps
    for row in rows.values():  # each cost is a median within the range of its rounds
        low, median, high = (int(row.group(k).replace(",", "")) for k in (7, 6, 8))
        assert 0 <= low <= median <= high, row.group(0)
    assert "alibi-detect not run" in done.stdout
