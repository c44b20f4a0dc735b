"""`bench decide`: a real deciding process on a real broker, next to a raw loop reading the
same scored messages."""

from __future__ import annotations

import re

from monitor.local.bench_decide import bench_decide


def test_the_decide_stage_and_the_raw_loop_each_read_every_round(capsys) -> None:
    # Small detectors (100 warm-up records, 200 calibration bootstraps): the test times
    # nothing; it checks that both paths read whole rounds and the table says so. The
    # records spread over 3 models: 3 segments, each armed before the timed rounds.
    assert bench_decide(records=1_200, rounds=2, partitions=2, segments=3,
                        warmup_records=100, n_bootstraps=200) == 0
    out = capsys.readouterr().out
    assert "1,200 scored records a round" in out and "3 keys over 2 partitions" in out, out
    rates = {name: float(re.search(rf"{name}\s+([\d,.]+) \(", out)[1].replace(",", ""))
             for name in ("scored-record decoding", "driftwatch run --stage decide")}
    assert all(rate > 0 for rate in rates.values()), out
    ratio = float(re.search(r"ratio decide / raw loop: ([\d.]+);", out)[1])
    assert abs(ratio - rates["driftwatch run --stage decide"]
               / rates["scored-record decoding"]) < 0.01, out
