"""Feature drift: scipy window tests with FDR control, and river's streaming detectors."""

from __future__ import annotations

import numpy as np

from detectors.feature_drift import (
    StreamingChangeDetectors,
    WindowedFeatureDrift,
    chi2_categories,
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
