"""A fixed-sample two-sample test on embeddings: MMD with a Gaussian kernel, its p-value by
permutation (scipy), exact at any level whatever the sample size.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> same = mmd_permutation_test(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)))
>>> shifted = mmd_permutation_test(rng.normal(size=(100, 8)), rng.normal(1, 1, size=(100, 8)))
>>> bool(same.pvalue > 0.05), bool(shifted.pvalue < 0.01)
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import permutation_test


@dataclass(frozen=True)
class MMDTest:
    """The result of an MMD permutation test: statistic, p-value and kernel bandwidth."""

    statistic: float  # biased MMD^2 (Gretton et al. 2012) of the two samples
    pvalue: float
    bandwidth: float  # Gaussian kernel width: the median pairwise distance of the pooled sample


def resamples_for(alpha: float) -> int:
    """Permutations for a p-value compared with `alpha`: at least 999, and 20 / alpha so the
    test's resolution is well below the level."""
    return max(999, math.ceil(20 / alpha))


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, n_resamples: int = 999,
                         seed: int = 0) -> MMDTest:
    """MMD^2 between rows of `x` and `y` and its permutation p-value (one-sided: larger means
    more different). The kernel matrix of the pooled sample is computed once; each permutation
    only re-partitions it, so 1,000 resamples of 500 + 500 rows take about a second."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    distances = squareform(pdist(pooled, "sqeuclidean"))
    bandwidth = float(np.sqrt(np.median(distances[np.triu_indices(len(pooled), 1)]))) or 1.0
    kernel = np.exp(-distances / (2 * bandwidth**2))

    def mmd2(a: np.ndarray, b: np.ndarray) -> float:  # a, b: row indices into `pooled`
        return float(kernel[np.ix_(a, a)].mean() + kernel[np.ix_(b, b)].mean()
                     - 2 * kernel[np.ix_(a, b)].mean())

    result = permutation_test((np.arange(len(x)), np.arange(len(x), len(pooled))), mmd2,
                              permutation_type="independent", n_resamples=n_resamples,
                              alternative="greater", vectorized=False,
                              rng=np.random.default_rng(seed))
    return MMDTest(float(result.statistic), float(result.pvalue), bandwidth)
