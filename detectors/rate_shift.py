"""A rise in a share of records (toxic, refusal, error...) over the stream's own reference rate:
a one-sided Bernoulli CUSUM whose threshold gives, on average, `ert` records between false alarms.

Page's CUSUM (1954) is the sequential test for a change from rate p0 to p1 at an unknown time:
S_t = max(0, S_{t-1} + log-likelihood ratio of record t), an alarm when S_t >= h. Lorden (1971)
showed it has the least worst-case delay for a given mean run length to a false alarm (ARL0),
which here plays the part of the drift detectors' ERT. Run lengths are computed, not
approximated: the statistic moves by one of two steps, so on a fine grid it is a Markov chain
(Brook & Evans 1972, "An approach to the probability distribution of CUSUM run length",
Biometrika) whose mean time to absorption is one sparse linear solve; h is bisected on it.

p0 is learnt from the first `reference_records` values (the warm-up, as drift learns its
reference) and taken at its one-sided 95% Clopper-Pearson upper bound: a warm-up that happened
to be quiet would otherwise set p0 low and make ordinary traffic page. p1 = p0 + `increase`,
the rise the test is tuned to find; larger rises are found sooner, smaller ones later.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import sparse, stats
from scipy.sparse.linalg import spsolve

REFERENCE_CONFIDENCE = 0.95
_GRID_STEPS = 8  # grid points per miss step: the hit step is rounded to 1/8 of a miss step
_MAX_STATES = 20_000


def _steps(p0: float, p1: float) -> tuple[float, float]:
    """The log-likelihood ratio of a hit and of a miss."""
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))


def run_length(p: float, p0: float, p1: float, h: float) -> float:
    """Mean records to an alarm when the true rate is `p` (Brook-Evans Markov chain)."""
    hit, miss = _steps(p0, p1)
    delta = max(-miss / _GRID_STEPS, h / _MAX_STATES)
    states = max(1, math.ceil(h / delta))
    up, down = round(hit / delta), max(1, round(-miss / delta))
    i = np.arange(states)
    rows = np.concatenate([i, i])
    cols = np.concatenate([i + up, np.maximum(i - down, 0)])
    probs = np.concatenate([np.full(states, p), np.full(states, 1 - p)])
    inside = cols < states  # reaching `states` or beyond is the alarm (absorbing)
    q = sparse.csr_matrix((probs[inside], (rows[inside], cols[inside])), shape=(states, states))
    lengths = spsolve((sparse.identity(states, format="csr") - q).tocsc(), np.ones(states))
    return float(lengths[0])


@functools.lru_cache(maxsize=256)
def threshold(p0: float, p1: float, ert: float) -> float:
    """The h at which the in-control mean run length (true rate p0) is `ert` records."""
    low, high = 0.0, 1.0
    while run_length(p0, p0, p1, high) < ert:
        low, high = high, high * 2
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if run_length(p0, p0, p1, mid) < ert else (low, mid)
        if high - low < 1e-3:
            break
    return high


def reference_rate(hits: int, n: int, confidence: float = REFERENCE_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen `hits` times in `n`."""
    if hits >= n:
        return 1.0
    return float(stats.beta.ppf(confidence, hits + 1, n - hits))


class RateShift:
    """Learns a reference rate from the first `reference_records` values, then watches for a
    rise of `increase` with a CUSUM at `ert` records between false alarms. `update(values)`
    takes 1/0 values (NaN skipped) and returns the position of the value that raised the alarm,
    if one did; `alarm` stays up, with the statistic held at the threshold, until the evidence
    is offset (the statistic is back at 0).

    >>> rng = np.random.default_rng(0)
    >>> shift = RateShift(increase=0.03, reference_records=1000, ert=10_000)
    >>> shift.update(rng.random(3000) < 0.02)  # the reference, then clean traffic
    >>> at = shift.update(rng.random(3000) < 0.10)  # a rise to 10%
    >>> shift.alarm, at is not None and at < 300
    (True, True)
    """

    def __init__(self, increase: float = 0.03, reference_records: int = 1000,
                 ert: float = 100_000) -> None:
        if not 0 < increase < 1:
            raise ValueError(f"increase={increase!r}: must be in (0, 1)")
        self.increase, self.reference_records, self.ert = increase, reference_records, ert
        self.reference_hits = self.reference_n = 0
        self.p0 = self.p1 = self.threshold = math.nan
        self.statistic = 0.0
        self.alarm = False
        self.run_hits = self.run_n = 0  # since the statistic last left 0: the rise's evidence
        self.raised_hits = self.raised_n = 0  # the same, when the alarm was last raised
        self._hit = self._miss = 0.0

    @property
    def ready(self) -> bool:
        return self.threshold == self.threshold

    @property
    def reference(self) -> float:
        """The rate seen in the warm-up (its point estimate)."""
        return self.reference_hits / self.reference_n if self.reference_n else math.nan

    @property
    def run_rate(self) -> float:
        return self.run_hits / self.run_n if self.run_n else math.nan

    def update(self, values: np.ndarray) -> int | None:
        x = np.asarray(values, dtype=np.float64).ravel()
        positions = np.flatnonzero(~np.isnan(x))
        hits = x[positions] > 0
        start = 0
        if not self.ready:
            if self.reference_n >= self.reference_records:
                return None  # learnt, and no room above the reference to watch
            start = min(len(hits), self.reference_records - self.reference_n)
            self.reference_hits += int(hits[:start].sum())
            self.reference_n += start
            if self.reference_n < self.reference_records:
                return None
            self._learn()
            if not self.ready:
                return None
        raised: int | None = None
        s, h = self.statistic, self.threshold
        for k in range(start, len(hits)):  # sequential by nature; a batch is a few hundred
            hit = bool(hits[k])
            s = max(0.0, s + (self._hit if hit else self._miss))
            if s == 0.0:
                self.run_hits = self.run_n = 0
                self.alarm = False
                continue
            self.run_hits += hit
            self.run_n += 1
            if s >= h:
                s = h
                if not self.alarm:
                    self.alarm = True
                    if raised is None:
                        raised = int(positions[k])
                        self.raised_hits, self.raised_n = self.run_hits, self.run_n
        self.statistic = s
        return raised

    def _learn(self) -> None:
        self.p0 = reference_rate(self.reference_hits, self.reference_n)
        self.p1 = self.p0 + self.increase
        if self.p1 >= 1:  # no room above the reference: nothing to watch for
            return
        self._hit, self._miss = _steps(self.p0, self.p1)
        self.threshold = threshold(round(self.p0, 6), round(self.p1, 6), float(self.ert))
