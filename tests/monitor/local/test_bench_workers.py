"""`bench throughput --workers`: the real daemon in one process and split in two scoring
processes and a deciding one, each on a real broker of its own, timed in turns."""

from __future__ import annotations

import re

import pytest

from monitor.local.bench_workers import bench_workers
from tests.printed import ratio_range


def _figure(pattern: str, out: str) -> float:
    found = re.search(pattern, out)
    assert found, f"{pattern!r} not in:\n{out}"
    return float(found[1].replace(",", ""))


def test_one_process_and_the_split_each_time_every_round_and_account_its_cpu(capsys) -> None:
    # Small rounds and detectors (100 warm-up records a segment, 200 calibration bootstraps)
    # and a short group session (the stops here last seconds): the test times nothing; it
    # checks that each topology decides whole rounds and that the figures add up.
    assert bench_workers(records=200, workers=[1, 2], rounds=2, partitions=2,
                         backends=["static"], warmup_records=100, n_bootstraps=200,
                         session_ms=30_000) == 0
    out = capsys.readouterr().out
    assert "200 HaluEval records a round" in out and "2 timed rounds" in out, out
    one = _figure(r"--workers 1, embedding static\s+([\d,.]+) \(", out)
    two = _figure(r"--workers 2, embedding static\s+([\d,.]+) \(", out)
    assert one > 0 and two > 0, out
    ratio = _figure(r"ratio static --workers 2 / --workers 1: ([\d.]+);", out)
    low, high = ratio_range(two, one, 0.05, 0.05)  # rates printed to 0.1
    assert low <= ratio <= high, out

    # CPU by role: the scoring roles worked in their rounds (a round of 200 records scores
    # for a tenth of a CPU-second or more; an unread process would show 0.00), and the
    # totals add up. /proc counts in 10 ms ticks: a broker may spend less than one in a
    # small round (the deciding process too), so theirs are only known not to be negative.
    alone = re.search(r"static --workers 1: one process ([\d.]+); broker ([\d.]+); "
                      r"([\d.]+) in all; by round ([\d.]+), ([\d.]+)\n", out)
    split = re.search(r"static --workers 2: scoring \(2 processes\) ([\d.]+); deciding "
                      r"([\d.]+); broker ([\d.]+); ([\d.]+) in all \(([\d.]+)x --workers 1's\); "
                      r"by round ([\d.]+), ([\d.]+)\n", out)
    assert alone and split, out
    process, broker, total, *rounds = map(float, alone.groups())
    assert process > 0.5 and broker >= 0 and total >= process + broker - 0.02, out
    # Median of two: the mean, each figure printed to 0.01.
    assert total == pytest.approx(sum(rounds) / 2, abs=0.0101), out
    scoring, deciding, broker2, total2, versus, *rounds2 = map(float, split.groups())
    assert scoring > 0.5 and 0 <= deciding < scoring and broker2 >= 0, out
    assert total2 >= scoring + deciding + broker2 - 0.03, out
    assert total2 == pytest.approx(sum(rounds2) / 2, abs=0.0101), out
    low, high = ratio_range(total2, total, 0.005, 0.005)
    assert low <= versus <= high, out
