"""Drift of scalar and categorical features (latency, lengths, tokens, cost, scores, error class).

Windowed two-sample tests against a reference from scipy (KS, chi-square; Wasserstein and PSI
as effect sizes), with Benjamini-Hochberg control across features, plus river's streaming
change detectors (ADWIN on rates, Page-Hinkley on means) for early signals.
"""

from __future__ import annotations

import math
from collections import Counter
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
    return _psi(*psi_bins(reference, bins), window)


def psi_bins(reference: np.ndarray, bins: int = PSI_BINS) -> tuple[np.ndarray, np.ndarray]:
    """The reference's quantile bin edges (open at both ends) and its share in each bin."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return edges, np.empty(0)
    edges[0], edges[-1] = -np.inf, np.inf
    return edges, np.histogram(reference, edges)[0] / reference.size


def _psi(edges: np.ndarray, expected: np.ndarray, window: np.ndarray) -> float:
    if edges.size < 2:
        return 0.0
    actual = np.histogram(window, edges)[0] / window.size
    expected, actual = np.maximum(expected, _EPS), np.maximum(actual, _EPS)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def chi2_categories(reference: Sequence[str], window: Sequence[str]) -> tuple[float, float]:
    """Chi-square test of homogeneity between the category counts of two samples."""
    return chi2_counts(Counter(reference), Counter(window))


def chi2_counts(reference: Mapping[str, int], window: Mapping[str, int]) -> tuple[float, float]:
    """`chi2_categories` on the two samples' counts per category."""
    categories = sorted(reference.keys() | window.keys())
    if len(categories) < 2:
        return 0.0, 1.0
    table = np.array([[reference.get(c, 0) for c in categories],
                      [window.get(c, 0) for c in categories]], dtype=np.float64)
    result = stats.chi2_contingency(table)
    return float(result.statistic), float(result.pvalue)


# scipy's two-sample KS p-value is exact while both samples have at most this many values (its
# method "auto"), and then it depends on the two sizes and the statistic's lattice point
# h = D x lcm(n1, n2) only; past it, on D itself (Smirnov's asymptotic formula).
_KS_EXACT_UP_TO = 10_000
# (n1, n2, h) -> scipy's (statistic, p-value). The exact p-value costs 0.1 to 1 ms a test,
# most of a window's tests; windows of one size against one reference land on a few hundred
# lattice points, so nearly every test after the first windows is a lookup. Cleared when full.
_KS_RESULTS: dict[tuple[int, int, int], tuple[float, float]] = {}
_KS_REMEMBERED = 50_000


def ks_sorted(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """scipy's two-sided `ks_2samp` of two sorted samples, (statistic, p-value): its values to
    the bit, with exact p-values remembered by sample sizes and statistic.

    >>> rng = np.random.default_rng(0)
    >>> a, b = np.sort(rng.normal(size=300)), np.sort(rng.normal(0.3, 1, size=200))
    >>> ks_sorted(a, b) == tuple(float(v) for v in stats.ks_2samp(a, b)[:2])
    True
    """
    n1, n2 = reference.size, window.size
    if max(n1, n2) > _KS_EXACT_UP_TO:
        found = stats.ks_2samp(reference, window)
        return float(found.statistic), float(found.pvalue)
    # D as ks_2samp computes it (the largest gap between the two empirical CDFs).
    every = np.concatenate([reference, window])
    gaps = (np.searchsorted(reference, every, side="right") / n1
            - np.searchsorted(window, every, side="right") / n2)
    lcm = n1 // math.gcd(n1, n2) * n2
    key = (n1, n2, int(np.round(float(np.abs(gaps).max()) * lcm)))
    known = _KS_RESULTS.get(key)
    if known is None:
        found = stats.ks_2samp(reference, window)
        known = float(found.statistic), float(found.pvalue)
        # Kept from scipy's exact path only (it returns D on the lattice). Should that path fail
        # (scipy warns and falls back to Smirnov's formula) with a D that sits on the lattice
        # too, the entry would serve windows whose D differs in the last bit: p-values alike
        # to about 1e-16.
        if known[0] == key[2] / lcm:
            if len(_KS_RESULTS) >= _KS_REMEMBERED:
                _KS_RESULTS.clear()
            _KS_RESULTS[key] = known
    return known


@dataclass(frozen=True)
class _NumericReference:
    """What every window's tests of one feature read from its reference, computed once."""

    values: np.ndarray  # sorted, finite
    scale: float  # standard deviation (1 when 0): the Wasserstein distance's unit
    psi_edges: np.ndarray
    psi_expected: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> _NumericReference:
        ordered = np.sort(values)
        return cls(ordered, float(values.std()) or 1.0, *psi_bins(ordered))


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

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in vars(self).items() if k != "_prepared"}  # derived; rebuilt

    def _references(self) -> tuple[dict[str, _NumericReference], dict[str, Counter[str]]]:
        prepared = self.__dict__.get("_prepared")
        if prepared is None:
            prepared = self._prepared = (
                {k: _NumericReference.of(v) for k, v in self.reference.items() if v.size >= 2},
                {k: Counter(v) for k, v in self.categorical_reference.items()})
        return prepared

    def _test_window(self) -> None:
        numeric, categorical = self._references()
        results: list[tuple[str, str, float, float, float, float]] = []
        for name, parts in self._numeric.items():
            window = np.sort(_finite(np.concatenate(parts))) if parts else np.empty(0)
            ref = numeric.get(name)
            if window.size < 2 or ref is None:
                continue
            statistic, p = ks_sorted(ref.values, window)
            results.append((name, "ks", statistic, p,
                            stats.wasserstein_distance(ref.values, window) / ref.scale,
                            _psi(ref.psi_edges, ref.psi_expected, window)))
        for name, values in self._categorical.items():
            if values:
                statistic, p = chi2_counts(categorical[name], Counter(values))
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
