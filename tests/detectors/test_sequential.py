"""The always-valid two-sample confidence sequence: peeking after every batch keeps the false
positive rate under alpha, and a real difference is found within a known number of records."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.sequential import MeanDifferenceCS

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow


def _ever_above_zero(rng: np.random.Generator, p: float, n: int, batch: int) -> bool:
    cs = MeanDifferenceCS(alpha=0.05, tau=0.05)
    for _ in range(n // batch):
        cs.update(rng.random(batch) < p, rng.random(batch) < p)
        if cs.lower > 0:
            return True
    return False


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_equal_rates_rarely_ever_show_a_positive_difference_despite_peeking(p: float) -> None:
    rng = np.random.default_rng(7)
    runs = [_ever_above_zero(rng, p, n=3_000, batch=20) for _ in range(200)]
    # Measured share of runs whose lower bound ever passed 0 (150 looks each): 0.0 at p=0.01,
    # 0.0 at 0.05, 0.02 at 0.2 (seeds 0-2 at alpha 0.1 gave 0-2.5%: the mixture boundary is
    # conservative). Slack: two binomial sd of a 200-run share at alpha, 2 x 0.015.
    assert np.mean(runs) <= 0.05 + 0.03


def test_a_five_to_fifteen_percent_difference_is_found_within_400_records_per_arm() -> None:
    rng = np.random.default_rng(1)
    found_at = []
    for _ in range(30):
        cs = MeanDifferenceCS(alpha=0.05, tau=0.05)
        while not cs.lower > 0:
            cs.update(rng.random(10) < 0.05, rng.random(10) < 0.15)
        found_at.append(cs.n_b)
        assert cs.lower <= 0.10 <= cs.upper
    # Measured over these 30 runs: median 170, 90th percentile 261, max 320 records per arm.
    assert np.median(found_at) <= 200
    assert max(found_at) <= 400


def test_nan_is_skipped_and_an_empty_arm_gives_an_unbounded_interval() -> None:
    cs = MeanDifferenceCS()
    cs.update(np.array([1.0, np.nan, 0.0]), np.array([]))
    assert (cs.n_a, cs.n_b) == (2, 0)
    assert np.isnan(cs.estimate) and cs.lower == -np.inf and cs.upper == np.inf
    cs.update(np.array([]), np.array([np.nan, 1.0]))
    assert (cs.n_a, cs.n_b) == (2, 1)
    assert cs.estimate == pytest.approx(0.5) and cs.lower < 0.5 < cs.upper


def test_batches_and_single_records_give_the_same_interval() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(300) < 0.1, rng.random(300) < 0.2
    whole, single = MeanDifferenceCS(), MeanDifferenceCS()
    whole.update(a, b)
    for x, y in zip(a, b, strict=True):
        single.update(np.array([x]), np.array([y]))
    assert (single.estimate, single.lower, single.upper) == pytest.approx(
        (whole.estimate, whole.lower, whole.upper))
