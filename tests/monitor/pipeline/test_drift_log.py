"""The drift stage's log line of each kind of finding: figures that mean something for it
(no `statistic=nan threshold=nan` for river's detectors, which carry none)."""

from __future__ import annotations

import logging

import pytest

from monitor.pipeline.stages import _log_events
from monitor.types import DriftEvent

SEG = ("m", "v1", "stable", "")


def test_each_kind_logs_its_own_figures(caplog: pytest.LogCaptureFixture) -> None:
    events = [
        DriftEvent("embedding", "prompt", SEG, 3, 1.902, 1.768, window=25,
                   examples=(("req-1", "text", 0),)),
        DriftEvent("feature", "latency_seconds", SEG, 9, 0.4125, 0.05, q_value=0.00123),
        DriftEvent("change", "error_rate", SEG, 9, float("nan"), float("nan")),
        DriftEvent("new_error_class", "outcome", SEG, 2, 1.0, float("nan"),
                   examples=(("req-7", "timeout", -1),)),
    ]
    with caplog.at_level(logging.WARNING, logger="monitor.pipeline.stages"):
        _log_events(events)
    lines = [r.getMessage() for r in caplog.records]
    seg = str(SEG)
    assert lines == [
        f"drift detected: embedding prompt segment={seg} statistic=1.902 threshold=1.768 "
        "window=25 examples=['req-1']",
        f"drift detected: feature latency_seconds segment={seg} statistic=0.4125 q=0.00123 "
        "fdr=0.05",
        f"drift detected: change error_rate segment={seg} (streaming change detector, an "
        "early signal; the feature window test confirms)",
        f"new error class 'timeout' in segment {seg}, first records ['req-7']",
    ]
    assert not any("nan" in line for line in lines)
