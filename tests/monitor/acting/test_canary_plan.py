"""The canary gate finishes: an identical canary on real traffic is promoted within about 1,000
records per arm at the defaults, and `driftwatch canary plan` / check-config say how many each
gate needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from detectors.sequential import MeanDifferenceCS, one_sided_level
from monitor.acting.canary_plan import plan, records_to_pass
from monitor.app.backtest import backtest
from monitor.cli import main
from monitor.config import OfflineConfig
from monitor.config.acting import CanarySettings
from monitor.local import traffic

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow


def test_an_identical_canary_on_real_traffic_is_promoted_within_about_1000_per_arm() -> None:
    # HaluEval answers scored by the default toxicity scorer, latencies of one model profile,
    # 2% errors; stable and canary drawn alike.
    mix = traffic.TrafficMix(canary_share=0.5, models=("assistant-small",))
    lines = [traffic.encode(r) for r in traffic.wire_records(
        4_000, seed=5, start_ms=traffic.FIXED_START_MS, mix=mix)]
    config = OfflineConfig(
        scorers=["latency", "status", "toxicity"], drift={"enabled": False},
        canary={"enabled": True, "hard_gates": ["toxic"], "soft_gates": ["error", "latency_p95"]})
    events = [e for e in backtest(lines, config) if str(e["type"]).startswith("canary.")]
    assert [e["type"] for e in events] == ["canary.promote"]
    evidence = events[0]["evidence"]
    assert isinstance(evidence, dict)
    # Before the margins were sized per gate, latency_p95 alone needed 3,000+ records per arm.
    assert 500 <= evidence["records_canary"] <= 1_300
    assert evidence["latency_p95.promote_upper"] <= evidence["latency_p95.margin"] == 0.04


def test_the_plan_measures_promotion_near_1000_per_arm_with_no_false_rollback() -> None:
    settings = CanarySettings(enabled=True)
    p = plan(settings, runs=60, seed=1)
    assert p.unpromoted == 0 and p.promote_median <= 1_200
    rows = {g.gate: g for g in p.gates}
    assert set(rows) == {"toxic", "ungrounded", "refusal", "error", "latency_p95",
                         "embedding_drift"}
    assert all(g.false_rollbacks == 0 for g in p.gates)
    for g in p.gates:  # simulated medians agree with the bound computed at estimate 0
        assert g.median == pytest.approx(g.bound, rel=0.35), g
    # One margin of 0.02 for every gate, as before: latency alone needs over twice as long.
    tight = CanarySettings(enabled=True, margin=0.02)
    assert records_to_pass(tight, "latency_p95", 0.05) > 2 * rows["latency_p95"].bound


def test_the_one_sided_level_keeps_its_bound_for_a_worse_canary() -> None:
    # A canary worse by exactly the margin: promotion (upper <= margin) is a false promote.
    rng = np.random.default_rng(3)
    level, promoted = one_sided_level(0.05), 0
    runs = 400
    for _ in range(runs):
        cs = MeanDifferenceCS(alpha=0.01, tau=0.02)
        for _ in range(60):
            cs.update(rng.random(100) < 0.02, rng.random(100) < 0.04)
            if cs.estimate + cs.half_width(level) <= 0.02:
                promoted += 1
                break
    assert promoted / runs <= 0.05


def test_check_config_prints_each_gates_records_and_plan_rejects_a_bad_rate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "dw.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"topic": "t"}, "canary": {"enabled": True}}))
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "toxic: 758 at a stable rate of 0.02, margin 0.02" in out
    assert "latency_p95: 582 at a stable rate of 0.05, margin 0.04" in out
    assert main(["canary", "plan", "--rate", "toxicity=0.1"]) == 2
    assert "the gate must be one of" in capsys.readouterr().err
    assert main(["canary", "plan", "--runs", "5", "--rate", "toxic=0.001"]) == 0
    out = capsys.readouterr().out
    assert "records per arm to promote (every gate at once): median" in out
    assert "│ toxic           │ hard │       0.001 │" in out


def test_runs_that_never_reach_a_verdict_give_an_infinite_p90_without_warnings() -> None:
    """Interpolating towards a run's infinity was inf - inf: NaN and numpy's warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = plan(CanarySettings(), runs=3, max_records=100, seed=1)
    assert p.promote_p90 == np.inf and p.promote_median == np.inf
    assert all(row.p90 == np.inf or np.isnan(row.rate) for row in p.gates), p.gates
