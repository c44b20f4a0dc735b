"""The drift stage's log lines: figures that mean something for each kind of finding (no
`statistic=nan threshold=nan` for river's detectors, which carry none), and a lasting shift
that re-fires its detector many times a minute is one line a minute, with a count."""

from __future__ import annotations

import logging

import pytest

from monitor.pipeline.stages import DriftLog
from monitor.types import DriftEvent

SEG = ("m", "v1", "stable", "")
OTHER = ("m", "v2", "stable", "")


def _embedding(seg: tuple[str, str, str, str] = SEG) -> DriftEvent:
    return DriftEvent("embedding", "prompt", seg, 3, 1.902, 1.768, window=25,
                      examples=(("req-1", "text", 0),))


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records]
    caplog.clear()
    return lines


def test_each_kind_logs_its_own_figures(caplog: pytest.LogCaptureFixture) -> None:
    events = [
        _embedding(),
        DriftEvent("feature", "latency_seconds", SEG, 9, 0.4125, 0.05, q_value=0.00123),
        DriftEvent("change", "error_rate", SEG, 9, float("nan"), float("nan")),
        DriftEvent("new_error_class", "outcome", SEG, 2, 1.0, float("nan"),
                   examples=(("req-7", "timeout", -1),)),
    ]
    with caplog.at_level(logging.WARNING, logger="monitor.pipeline.stages"):
        DriftLog(clock=lambda: 0.0)(events)
    seg = str(SEG)
    assert _lines(caplog) == [
        f"drift detected: embedding prompt segment={seg} statistic=1.902 threshold=1.768 "
        "window=25 examples=['req-1']",
        f"drift detected: feature latency_seconds segment={seg} statistic=0.4125 q=0.00123 "
        "fdr=0.05",
        f"drift detected: change error_rate segment={seg} (streaming change detector, an "
        "early signal; the feature window test confirms)",
        f"new error class 'timeout' in segment {seg}, first records ['req-7']",
    ]


def test_a_lasting_shift_is_a_line_a_minute_counting_the_findings_folded_in(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    drift_log = DriftLog(interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="monitor.pipeline.stages"):
        drift_log([_embedding()])
        assert len(_lines(caplog)) == 1
        for t in range(1, 60):  # re-fired every second: folded
            now[0] = float(t)
            drift_log([_embedding(), _embedding()])
        assert _lines(caplog) == []
        drift_log([_embedding(OTHER)])  # another segment has its own minute
        assert len(_lines(caplog)) == 1
        now[0] = 61.0
        drift_log([_embedding()])
        (line,) = _lines(caplog)
    assert line.startswith(f"drift detected: embedding prompt segment={SEG}")
    assert line.endswith(" (118 more in the 61 s before)")
