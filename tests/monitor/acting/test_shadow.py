"""The shadow gate: pairing by request id, paired always-valid gates, verdicts and status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.acting.shadow import ShadowGate
from monitor.config.acting import ShadowSettings


def _feed(gate: ShadowGate, ids: list[str], deployments: list[str], toxic: np.ndarray,
          at: float = 0.0, latency: np.ndarray | None = None,
          vectors: np.ndarray | None = None) -> list:
    n = len(ids)
    return gate.update(ids, ["m"] * n, deployments, {"toxic": toxic, "error": np.zeros(n)},
                       np.full(n, 0.1) if latency is None else latency, np.full(n, 100.0),
                       vectors, np.full(n, at))


def _pairs(rng: np.random.Generator, n: int, stable_rate: float, shadow_rate: float,
           start: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    """n requests answered by both, stable first then shadow, in one batch."""
    ids = [f"r{start + i}" for i in range(n)]
    stable = (rng.random(n) < stable_rate).astype(float)
    shadow = np.maximum(stable, rng.random(n) < shadow_rate - stable_rate) \
        if shadow_rate >= stable_rate else (rng.random(n) < shadow_rate).astype(float)
    return ids + ids, ["stable"] * n + ["shadow"] * n, np.concatenate([stable, shadow])


def test_pairs_meet_in_either_order_and_a_shadow_without_its_stable_is_counted_unpaired(
        ) -> None:
    gate = ShadowGate(ShadowSettings(enabled=True, window_seconds=60, min_pairs=10))
    # a: stable then shadow (same answer); b: shadow first, its stable (another answer) in
    # the next batch.
    _feed(gate, ["a", "a", "b"], ["stable", "shadow", "shadow"], np.zeros(3), at=0.0,
          vectors=np.eye(4, dtype=np.float32)[[0, 0, 1]])
    _feed(gate, ["b", "c", "d"], ["stable", "shadow", "stable"], np.zeros(3), at=10.0,
          vectors=np.eye(4, dtype=np.float32)[[3, 0, 0]])
    status = gate.status()["models"]["m"]  # type: ignore[index]
    assert (status["pairs"], status["unpaired"]) == (2, 0)
    assert status["mean_cosine"] == pytest.approx(0.5)  # a: same answer, b: another one
    # c waits for its stable past the window: unpaired; d (stable, never mirrored) is not.
    _feed(gate, ["e"], ["canary"], np.zeros(1), at=100.0)
    status = gate.status()["models"]["m"]  # type: ignore[index]
    assert (status["pairs"], status["unpaired"]) == (2, 1)
    assert gate.status()["pending"] == 0
    json.dumps(gate.status(), allow_nan=False)


def test_a_worse_shadow_is_regressed_and_an_equal_one_ready() -> None:
    rng = np.random.default_rng(0)
    settings = ShadowSettings(enabled=True, min_pairs=200, actions=["hook"])
    worse = ShadowGate(settings)
    decisions = []
    for k in range(10):
        decisions += _feed(worse, *_pairs(rng, 100, 0.05, 0.15, start=100 * k), at=float(k))
    assert [d.event_type for d in decisions] == ["shadow.regressed"]
    d = decisions[0]
    assert d.segment == {"model": "m", "deployment": "shadow"} and d.targets == ("hook",)
    assert d.evidence["toxic.lower"] > 0 and "worse than stable on toxic" in d.summary
    assert worse.status()["models"]["m"]["failed"] == ["toxic"]  # type: ignore[index]

    equal = ShadowGate(settings)
    decisions = []
    for k in range(10):
        ids, deployments, toxic = _pairs(rng, 100, 0.05, 0.05, start=100 * k)
        toxic[100:] = toxic[:100]  # the same answers: the same flags
        decisions += _feed(equal, ids, deployments, toxic, at=float(k))
    assert [d.event_type for d in decisions] == ["shadow.ready"]
    # ungrounded never had a value: left out of readiness, said so.
    gates = equal.status()["models"]["m"]["gates"]  # type: ignore[index]
    assert "no_data" in gates["ungrounded"] and gates["toxic"]["passed"]


def test_an_equal_shadow_is_called_regressed_less_often_than_alpha() -> None:
    """Independent answers of equal quality (flags at the same rate, not the same records),
    read after every batch of 50 pairs for 2,000 pairs: always valid, so peeking is free."""
    rng = np.random.default_rng(1)
    settings = ShadowSettings(enabled=True, alpha=0.05, min_pairs=100,
                              hard_gates=["toxic"], soft_gates=[])
    runs, regressed = 200, 0
    for _ in range(runs):
        gate = ShadowGate(settings)
        for k in range(40):
            n = 50
            ids = [f"r{k}-{i}" for i in range(n)]
            toxic = (rng.random(2 * n) < 0.1).astype(float)
            found = _feed(gate, ids + ids, ["stable"] * n + ["shadow"] * n, toxic, at=float(k))
            if any(d.event_type == "shadow.regressed" for d in found):
                regressed += 1
                break
    assert regressed <= runs * 0.05, regressed  # measured: 0 of 200


def test_shadow_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="both hard and soft"):
        ShadowSettings(hard_gates=["toxic"], soft_gates=["toxic"])
    with pytest.raises(ValueError, match="stable and shadow are both"):
        ShadowSettings(shadow="stable")
