"""Drift of scalar and categorical features (latency, lengths, tokens, cost, scores, error class).

Windowed two-sample tests against a reference from scipy (KS, chi-square; Wasserstein and PSI
as effect sizes), with Benjamini-Hochberg control across features, plus river's streaming
change detectors (ADWIN on rates, Page-Hinkley on means) for early signals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from river import drift as river_drift
from scipy import stats

PSI_BINS = 10
_EPS = 1e-4  # PSI's floor for empty bins (the usual convention)


@dataclass(frozen=True)
class FeatureTest:
    """One feature's two-sample test against the reference: p- and q-values, effect sizes."""

    feature: str
    test: str  # "ks" or "chi2"
    statistic: float
    p_value: float
    q_value: float  # Benjamini-Hochberg adjusted across the features tested together
    wasserstein: float  # in units of the reference's standard deviation (NaN for categories)
    psi: float  # population stability index against reference deciles
    drift: bool


def psi(reference: np.ndarray, window: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins (Yurdakul 2018)."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / reference.size
    actual = np.histogram(window, edges)[0] / window.size
    expected, actual = np.maximum(expected, _EPS), np.maximum(actual, _EPS)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def chi2_categories(reference: Sequence[str], window: Sequence[str]) -> tuple[float, float]:
    """Chi-square test of homogeneity between the category counts of two samples."""
    categories = sorted(set(reference) | set(window))
    if len(categories) < 2:
        return 0.0, 1.0
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((2, len(categories)))
    for row, sample in enumerate((reference, window)):
        for value in sample:
            table[row, index[value]] += 1
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


class WindowedFeatureDrift:
    """Tumbling windows of `window_size` records, each tested against the reference.

    >>> rng = np.random.default_rng(0)
    >>> detector = WindowedFeatureDrift({"latency": rng.normal(1, 0.2, 2000)}, {}, 500)
    >>> detector.update({"latency": rng.normal(1.5, 0.2, 500)}, {})
    >>> detector.drift_detected, detector.drifted
    (True, ['latency'])
    """

    def __init__(
        self,
        reference: Mapping[str, np.ndarray],
        categorical_reference: Mapping[str, Sequence[str]],
        window_size: int,
        fdr: float = 0.01,
        psi_threshold: float | None = None,
    ) -> None:
        self.reference = {k: _finite(v) for k, v in reference.items()}
        self.categorical_reference = {k: list(v) for k, v in categorical_reference.items()}
        self.window_size = window_size
        self.fdr = fdr
        self.psi_threshold = psi_threshold  # also flag when PSI exceeds this (0.2 is common)
        self._numeric: dict[str, list[np.ndarray]] = {k: [] for k in self.reference}
        self._categorical: dict[str, list[str]] = {k: [] for k in self.categorical_reference}
        self._count = 0
        self.results: list[FeatureTest] = []
        self.drift_detected = False
        self.drifted: list[str] = []
        self.windows_tested = 0

    def update(self, numeric: Mapping[str, np.ndarray], categorical: Mapping[str, Sequence[str]]
               ) -> None:
        """Add a batch (all features aligned, one value per record; NaN = missing)."""
        self.drift_detected, self.drifted = False, []
        sizes = {len(v) for v in numeric.values()} | {len(v) for v in categorical.values()}
        if len(sizes) > 1:
            raise ValueError(f"features of one batch differ in length: {sorted(sizes)}")
        n = sizes.pop() if sizes else 0
        start = 0
        while start < n:
            take = min(n - start, self.window_size - self._count)
            for name in self._numeric:
                if name in numeric:
                    self._numeric[name].append(np.asarray(numeric[name][start:start + take]))
            for name in self._categorical:
                if name in categorical:
                    self._categorical[name].extend(categorical[name][start:start + take])
            self._count += take
            start += take
            if self._count == self.window_size:
                self._test_window()

    def _test_window(self) -> None:
        results: list[tuple[str, str, float, float, float, float]] = []
        for name, parts in self._numeric.items():
            window = _finite(np.concatenate(parts)) if parts else np.empty(0)
            ref = self.reference[name]
            if window.size < 2 or ref.size < 2:
                continue
            ks = stats.ks_2samp(ref, window)
            scale = float(ref.std()) or 1.0
            results.append((name, "ks", float(ks.statistic), float(ks.pvalue),
                            stats.wasserstein_distance(ref, window) / scale, psi(ref, window)))
        for name, values in self._categorical.items():
            if values:
                statistic, p = chi2_categories(self.categorical_reference[name], values)
                results.append((name, "chi2", statistic, p, float("nan"), float("nan")))
        q = stats.false_discovery_control([r[3] for r in results]) if results else []
        self.results = [
            FeatureTest(name, test, statistic, p, float(qv), w, ps,
                        drift=bool(qv <= self.fdr or (self.psi_threshold is not None
                                                      and ps > self.psi_threshold)))
            for (name, test, statistic, p, w, ps), qv in zip(results, q, strict=True)
        ]
        self.drifted = [r.feature for r in self.results if r.drift]
        self.drift_detected = bool(self.drifted)
        self.windows_tested += 1
        self._numeric = {k: [] for k in self._numeric}
        self._categorical = {k: [] for k in self._categorical}
        self._count = 0


class StreamingChangeDetectors:
    """river's detectors per feature: ADWIN (Bifet & Gavaldà 2007) on 0/1 rates such as the
    error rate, Page-Hinkley (Page 1954) on means such as latency. Early, per-record signals."""

    def __init__(self, rates: Sequence[str], means: Sequence[str], adwin_delta: float = 0.002,
                 ph_threshold: float = 50.0, ph_delta: float = 0.005) -> None:
        self._detectors: dict[str, river_drift.ADWIN | river_drift.PageHinkley] = {
            **{name: river_drift.ADWIN(delta=adwin_delta) for name in rates},
            **{name: river_drift.PageHinkley(threshold=ph_threshold, delta=ph_delta)
               for name in means},
        }
        self.drifted: list[str] = []
        self.detections: dict[str, int] = {name: 0 for name in self._detectors}

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        """Feed a batch; `drifted` names the features that changed within it."""
        self.drifted = []
        for name, detector in self._detectors.items():
            series = values.get(name)
            if series is None:
                continue
            changed = False
            for x in _finite(np.asarray(series, dtype=np.float64)).tolist():
                detector.update(x)
                changed = changed or detector.drift_detected
            if changed:
                self.drifted.append(name)
                self.detections[name] += 1

    @property
    def drift_detected(self) -> bool:
        return bool(self.drifted)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]
