"""Always-valid two-sample comparison: a confidence sequence for the difference of two means
(rates), so a test may be read after every batch and still hold its error rate over any run."""

from __future__ import annotations

import numpy as np
from scipy import stats


def one_sided_level(alpha: float) -> float:
    """The two-sided level whose upper (or lower) boundary alone is crossed with chance at most
    `alpha`: nearly 2 alpha (0.0984 for 0.05).

    The two-sided boundary at level l is where the normal mixture M = sqrt(rho / (I + rho))
    exp(S^2 / 2(I + rho)) reaches 1 / l. Mixing over positive effects only (a half-normal)
    gives M+ = 2 M Phi(S / sqrt(I + rho)), also a nonnegative martingale; on the upper boundary
    S / sqrt(I + rho) >= sqrt(2 log(1 / l)), so M+ >= 2 Phi(sqrt(2 log(1 / l))) / l there.
    With l = 2 alpha Phi(sqrt(-2 log(2 alpha))) that is >= 1 / alpha, and Ville's inequality
    bounds the crossing by alpha.

    >>> round(one_sided_level(0.05), 4)
    0.0984
    """
    return float(2 * alpha * stats.norm.cdf(np.sqrt(-2 * np.log(2 * alpha))))


class MeanDifferenceCS:
    """Confidence sequence for mean(b) - mean(a), valid at every look simultaneously.

    The z-process of the difference, S = estimate x I in information time I = 1 / Var(estimate),
    is treated as a Brownian motion with drift (the usual CLT approximation, as in the mSPRT of
    Johari et al. 2017, "Peeking at A/B tests", KDD, and the asymptotic confidence sequences of
    Waudby-Smith et al. 2024). Mixing its likelihood ratio over effects theta ~ N(0, tau^2)
    (Johari et al.'s mixing distribution; rho = 1 / tau^2 in Howard et al. 2021,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.) gives a
    nonnegative martingale; by Ville's inequality its crossing 1 / alpha has probability at most
    alpha over an unbounded run. That is the two-sided normal-mixture boundary (Robbins 1970):

        |S - theta I| < sqrt((I + rho) log((I + rho) / (rho alpha^2)))

    so P(the interval ever excludes the true difference) <= alpha, and so is each side's share.
    Validity is asymptotic (plug-in variances); the tests check it on rare Bernoulli rates.
    Each arm's variance is its sample variance with one pseudo-observation of variance
    `prior_variance` (1/4, the largest a [0, 1] value can have): a rare event seen zero times
    in a small sample would otherwise have zero variance and an interval of zero width.
    `tau` is the size of difference the boundary is tuned to: it is narrowest near the
    information at which such a difference becomes detectable.

    >>> rng = np.random.default_rng(0)
    >>> cs = MeanDifferenceCS(alpha=0.05, tau=0.05)
    >>> for _ in range(20):
    ...     cs.update(rng.random(100) < 0.05, rng.random(100) < 0.15)
    >>> cs.n_a, cs.n_b, bool(cs.lower > 0), round(cs.estimate, 2)
    (2000, 2000, True, 0.11)
    """

    def __init__(self, alpha: float = 0.05, tau: float = 0.05,
                 prior_variance: float = 0.25) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha={alpha!r}: must be in (0, 1)")
        if tau <= 0 or prior_variance <= 0:
            raise ValueError(
                f"tau={tau!r}, prior_variance={prior_variance!r}: both must be positive")
        self.alpha, self.tau, self.prior_variance = float(alpha), float(tau), prior_variance
        self.rho = 1.0 / self.tau**2
        # Per arm: count, sum, sum of squared deviations (Chan et al.'s pairwise merge).
        self._n = np.zeros(2)
        self._mean = np.zeros(2)
        self._m2 = np.zeros(2)
        self.n_a = self.n_b = 0
        self.estimate = float("nan")
        self.lower, self.upper = -np.inf, np.inf

    def update(self, x_a: np.ndarray, x_b: np.ndarray) -> None:
        """Add a batch of each arm (either may be empty; NaN = not applicable, skipped)."""
        for arm, x in enumerate((x_a, x_b)):
            values = np.asarray(x, dtype=np.float64).ravel()
            values = values[~np.isnan(values)]
            if values.size:
                self._merge(arm, values)
        self.n_a, self.n_b = int(self._n[0]), int(self._n[1])
        if self.n_a and self.n_b:
            self._bounds()

    def _merge(self, arm: int, values: np.ndarray) -> None:
        n, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self._n[arm] + n
        delta = mean - self._mean[arm]
        self._m2[arm] += m2 + delta**2 * self._n[arm] * n / total
        self._mean[arm] += delta * n / total
        self._n[arm] = total

    def half_width(self, alpha: float | None = None) -> float:
        """The interval's half-width at level `alpha` (default: the test's own): a sequence at
        another level is as valid, e.g. a laxer one for promotion than for rollback."""
        if not (self.n_a and self.n_b):
            return float("inf")
        level = self.alpha if alpha is None else alpha
        variances = (self._m2 + self.prior_variance) / (self._n + 1)
        information = 1.0 / float((variances / self._n).sum())
        v = information + self.rho
        return float(np.sqrt(v * np.log(v / (self.rho * level**2))) / information)

    def _bounds(self) -> None:
        half_width = self.half_width()
        self.estimate = float(self._mean[1] - self._mean[0])
        self.lower, self.upper = self.estimate - half_width, self.estimate + half_width


class PairedDifferenceCS(MeanDifferenceCS):
    """Confidence sequence for the mean of paired differences b - a (one value per pair: the
    same request answered twice), valid at every look simultaneously.

    The same normal-mixture boundary as MeanDifferenceCS, in the information of the paired
    differences, n / Var(b - a): pairing removes the between-request variance two independent
    arms carry, so an unchanged model shows as such in far fewer records.
    `prior_variance` (default 1: the largest a difference of two [0, 1] values can have) is
    one pseudo-observation's variance, so a run of identical pairs is not certain at once.

    >>> rng = np.random.default_rng(0)
    >>> cs = PairedDifferenceCS(alpha=0.05, tau=0.05)
    >>> a = rng.random(2000) < 0.05
    >>> cs.update(a, a | (rng.random(2000) < 0.1))  # the shadow adds about 10 points
    >>> cs.n_a, bool(cs.lower > 0), round(cs.estimate, 2)
    (2000, True, 0.1)
    """

    def __init__(self, alpha: float = 0.05, tau: float = 0.05,
                 prior_variance: float = 1.0) -> None:
        super().__init__(alpha, tau, prior_variance)

    def update(self, x_a: np.ndarray, x_b: np.ndarray) -> None:
        """Add a batch of pairs (aligned; a pair with NaN on either side is skipped)."""
        a = np.asarray(x_a, dtype=np.float64).ravel()
        b = np.asarray(x_b, dtype=np.float64).ravel()
        d = b - a
        d = d[~np.isnan(d)]
        if d.size:
            self._merge(1, d)
        self.n_a = self.n_b = int(self._n[1])
        if self.n_b:
            self._bounds()  # arm 0 stays empty (mean 0): the estimate is the mean difference

    def half_width(self, alpha: float | None = None) -> float:
        n = float(self._n[1])
        if not n:
            return float("inf")
        level = self.alpha if alpha is None else alpha
        variance = (self._m2[1] + self.prior_variance) / (n + 1)
        information = n / variance
        v = information + self.rho
        return float(np.sqrt(v * np.log(v / (self.rho * level**2))) / information)
