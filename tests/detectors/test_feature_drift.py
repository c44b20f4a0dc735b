"""Feature drift: scipy window tests with FDR control, and river's streaming detectors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats

from detectors import feature_drift
from detectors.feature_drift import (
    StreamingChangeDetectors,
    WindowedFeatureDrift,
    chi2_categories,
    ks_sorted,
    psi,
)

WINDOW = 500


def _errors(rng: np.random.Generator, n: int, timeout_share: float) -> list[str]:
    return rng.choice(["ok", "timeout", "rate_limited"], size=n,
                      p=[1 - timeout_share - 0.01, timeout_share, 0.01]).tolist()


def _window(rng: np.random.Generator, n: int = WINDOW, latency_scale: float = 1.0,
            timeout_share: float = 0.02) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    numeric = {"latency": rng.lognormal(-0.5, 0.5, n) * latency_scale,
               "response_chars": rng.gamma(2.0, 150.0, n)}
    return numeric, {"error_type": _errors(rng, n, timeout_share)}


def _detector(rng: np.random.Generator) -> WindowedFeatureDrift:
    reference = {"latency": rng.lognormal(-0.5, 0.5, 5_000),
                 "response_chars": rng.gamma(2.0, 150.0, 5_000)}
    return WindowedFeatureDrift(reference, {"error_type": _errors(rng, 5_000, 0.02)}, WINDOW,
                                fdr=0.01)


def test_stationary_windows_rarely_alarm() -> None:
    rng = np.random.default_rng(3)
    detector = _detector(rng)
    alarms = 0
    for _ in range(40):
        detector.update(*_window(rng))
        alarms += detector.drift_detected
    assert detector.windows_tested == 40
    assert alarms <= 2  # 40 windows x 3 features at FDR 0.01: about 0.4 expected


def test_latency_shift_is_flagged_in_the_first_window_after_it() -> None:
    rng = np.random.default_rng(4)
    detector = _detector(rng)
    detector.update(*_window(rng))
    assert not detector.drift_detected
    detector.update(*_window(rng, latency_scale=1.3))
    assert detector.drifted == ["latency"]
    latency = next(r for r in detector.results if r.feature == "latency")
    assert latency.test == "ks" and latency.q_value <= 0.01 and latency.wasserstein > 0.2


def test_error_class_shift_is_flagged_by_chi_square() -> None:
    rng = np.random.default_rng(5)
    detector = _detector(rng)
    detector.update(*_window(rng, timeout_share=0.10))
    assert detector.drifted == ["error_type"]


def test_batches_spanning_windows_are_split_at_the_window_edge() -> None:
    rng = np.random.default_rng(6)
    detector = _detector(rng)
    detector.update(*_window(rng, n=1_250))
    assert detector.windows_tested == 2


def test_psi_and_chi2_known_values() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, 10_000)
    assert psi(reference, rng.normal(0, 1, 10_000)) < 0.01
    assert psi(reference, rng.normal(1, 1, 10_000)) > 0.25
    statistic, p = chi2_categories(["a"] * 50 + ["b"] * 50, ["a"] * 90 + ["b"] * 10)
    assert statistic > 30 and p < 1e-6
    assert chi2_categories(["a"] * 10, ["a"] * 5) == (0.0, 1.0)


def _scipy_ks(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    found = stats.ks_2samp(reference, window)
    return float(found.statistic), float(found.pvalue)


@pytest.mark.parametrize("sizes", [(300, 200), (1_000, 1_000), (2_000, 700), (12_000, 500)])
def test_ks_sorted_returns_scipys_values_to_the_bit_also_when_remembered(
        sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    feature_drift._KS_RESULTS.clear()
    n1, n2 = sizes
    pairs = []
    for shift in (0.0, 0.05, 0.1, 0.3, 0.0, 0.05):
        # Continuous values, and integer ones with ties (token counts).
        pairs.append((rng.normal(size=n1), rng.normal(shift, 1, size=n2)))
        pairs.append((rng.poisson(40, n1).astype(float), rng.poisson(40 + 10 * shift, n2)
                      .astype(float)))
    for reference, window in pairs * 2:  # the second time from what was remembered
        a, b = np.sort(reference), np.sort(window)
        assert ks_sorted(a, b) == _scipy_ks(a, b)
    remembered = len(feature_drift._KS_RESULTS)
    if max(sizes) > feature_drift._KS_EXACT_UP_TO:
        assert remembered == 0  # Smirnov's asymptotic p-value depends on D itself
    else:
        assert 0 < remembered <= len(pairs)


def test_ks_sorted_remembers_by_sizes_and_statistic_only() -> None:
    # Two different window pairs with the same sizes and the same D: the second is a lookup,
    # and it is still scipy's answer for that pair.
    feature_drift._KS_RESULTS.clear()
    reference = np.arange(100, dtype=float)
    first, second = np.arange(10, 60, dtype=float), np.arange(40, 90, dtype=float)
    assert _scipy_ks(reference, first) == _scipy_ks(reference, second)  # same D (0.4)
    assert ks_sorted(reference, first) == _scipy_ks(reference, first)
    assert len(feature_drift._KS_RESULTS) == 1
    assert ks_sorted(reference, second) == _scipy_ks(reference, second)
    assert len(feature_drift._KS_RESULTS) == 1


def test_window_results_equal_scipys_tests_on_the_raw_samples() -> None:
    rng = np.random.default_rng(9)
    detector = _detector(rng)
    windows = [_window(rng), _window(rng, latency_scale=1.2, timeout_share=0.05)]
    # Through a checkpoint: what the detector derives from its reference is not pickled.
    detector.update(*windows[0])
    assert "_prepared" not in pickle.loads(pickle.dumps(detector)).__dict__
    detector = pickle.loads(pickle.dumps(detector))
    detector.update(*windows[1])
    numeric, categorical = windows[1]
    expected = {}
    for name, values in numeric.items():
        ref = detector.reference[name]
        found = stats.ks_2samp(ref, values)
        expected[name] = (float(found.statistic), float(found.pvalue),
                          stats.wasserstein_distance(ref, values) / ref.std(), psi(ref, values))
    got = {r.feature: (r.statistic, r.p_value, r.wasserstein, r.psi) for r in detector.results}
    assert {k: got[k] for k in numeric} == expected
    chi2 = stats.chi2_contingency(np.array([
        [detector.categorical_reference["error_type"].count(c) for c in
         ("ok", "rate_limited", "timeout")],
        [categorical["error_type"].count(c) for c in ("ok", "rate_limited", "timeout")]]))
    result = next(r for r in detector.results if r.feature == "error_type")
    assert (result.statistic, result.p_value) == (float(chi2.statistic), float(chi2.pvalue))
    assert detector.drifted == ["latency", "error_type"]


def test_river_detectors_flag_a_rate_change_and_a_mean_change_but_not_noise() -> None:
    rng = np.random.default_rng(8)
    detectors = StreamingChangeDetectors(rates=["error"], means=["latency"], ph_threshold=20)
    first_error = first_latency = None
    for step in range(40):
        shifted = step >= 20
        errors = (rng.random(250) < (0.12 if shifted else 0.02)).astype(float)
        latency = rng.normal(1.8 if shifted else 1.0, 0.2, 250)
        detectors.update({"error": errors, "latency": latency})
        if "error" in detectors.drifted and first_error is None:
            first_error = step
        if "latency" in detectors.drifted and first_latency is None:
            first_latency = step
    # The shift starts at step 20 (record 5,000); both are caught within two batches of it.
    assert first_error is not None and 20 <= first_error <= 21
    assert first_latency is not None and 20 <= first_latency <= 21
