"""Online embedding drift: a sliding-window MMD test against a reference sample whose threshold
is calibrated by simulation so that false alarms come, on average, once every `ert` records."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

# Reference rows used for the median-heuristic bandwidth: the median settles long before this.
_BANDWIDTH_SAMPLE = 1_000
# Streams per calibration chunk: keeps streams x steps x features within a few hundred MB.
_CHUNK_FLOATS = 32_000_000
# Below this many surviving simulated streams the conditional quantile is noise: stop conditioning.
_MIN_SURVIVORS = 50
# A CPU batch of up to this many records goes through the one-record path record by record: a
# torch batch call has a fixed cost of about 300 µs (some 20 small ops), a record in numpy 30 to
# 40 µs: 2 to 8 records cost 30 µs each instead of 150 to 40, and from about 12 records the
# batch call is cheaper (384 dims, 256 features, one thread). A decide stage with many segments
# hands each detector a few records per batch.
_ONE_BY_ONE_UP_TO = 8


def _as_rows(x: np.ndarray | torch.Tensor, device: str) -> torch.Tensor:
    rows = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    rows = rows.to(device=device, dtype=torch.float32)
    return rows.unsqueeze(0) if rows.dim() == 1 else rows


def _ring_put(ring: torch.Tensor, start: int, values: torch.Tensor) -> None:
    """Write `values` (at most len(ring) rows) at positions start, start + 1, ... modulo the
    ring's length, as two slices."""
    at = start % len(ring)
    first = min(len(values), len(ring) - at)
    ring[at:at + first] = values[:first]
    ring[:len(values) - first] = values[first:]


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    # torch.quantile refuses inputs over 16M elements; the k-th value is the same thing.
    k = min(len(values) - 1, max(0, int(np.ceil(q * len(values))) - 1))
    return values.kthvalue(k + 1).values


def default_scales(window_size: int) -> tuple[int, ...]:
    """Window lengths scanned by default: the window, a quarter and a tenth of it (at least 5
    records). A short window sees an abrupt shift within a few records; the full one keeps the
    power for a slight shift. Scanning all three costs little: they are highly correlated."""
    return tuple(sorted({window_size, *(s for s in (window_size // 4, window_size // 10)
                                        if s >= 5)}))


def _checked_scales(scales: Sequence[int] | None, window_size: int) -> tuple[int, ...]:
    if scales is None:
        return default_scales(window_size)
    chosen = tuple(sorted({int(s) for s in scales}))
    if not chosen or chosen[0] < 1 or chosen[-1] > window_size:
        raise ValueError(f"scales={list(scales)!r}: need window lengths from 1 to "
                         f"window_size={window_size}")
    return chosen


def median_bandwidth(x: torch.Tensor, generator: torch.Generator) -> float:
    """Median pairwise Euclidean distance of (a subsample of) `x`: the usual Gaussian-kernel
    bandwidth heuristic (Gretton et al. 2012)."""
    if len(x) > _BANDWIDTH_SAMPLE:
        pick = torch.randperm(len(x), generator=generator)[:_BANDWIDTH_SAMPLE]
        x = x[pick.to(x.device)]
    dist = torch.cdist(x, x)
    upper = dist[torch.triu_indices(len(x), len(x), offset=1, device=x.device).unbind()]
    sigma = float(upper.median()) if upper.numel() else 0.0
    return sigma if sigma > 0 else 1.0


class OnlineMMD:
    """Sliding-window MMD against a reference, with random Fourier features (Rahimi & Recht 2007):
    the window's feature mean is kept as a running sum, so an update costs O(batch x features).

    For a window of n records the MMD^2 is ||mean_window(phi) - mean_ref(phi)||^2, a biased
    estimate for the Gaussian kernel exp(-|x - y|^2 / 2 bandwidth^2). It is computed at several
    window lengths (`scales`, by default the window, a quarter and a tenth of it) ending at the
    newest record, each divided by its mean under no drift; the statistic is the largest of them.
    A short window sees an abrupt shift within a few records, the full one keeps the power for a
    slight one: on HaluEval questions followed by dialogue turns this cut the delay at ERT 1,000
    from 21 records to 9 (`driftwatch bench drift`) for 5% more time per record.

    Thresholds follow Cobb et al. 2022 ("Sequential multivariate change detection with
    calibrated and memoryless false detection rates", AISTATS), as in alibi-detect's
    MMDDriftOnline: `n_bootstraps` streams are resampled from the reference and the threshold at
    each step is the (1 - 1/ert) quantile of the statistic over the streams that have not yet
    crossed, so the run length to a false alarm is roughly geometric with mean `ert`. Until the
    window is full the statistic uses the records seen so far, with per-step thresholds; from
    step 2 x window_size the threshold is constant. As alibi-detect advises, n_bootstraps should
    be well above ert: the (1 - 1/ert) quantile of n_bootstraps values is noisy when they are
    close, and the realised ERT varies with the seed.

    >>> rng = np.random.default_rng(0)
    >>> detector = OnlineMMD(rng.normal(size=(1000, 4)), ert=200, window_size=20)
    >>> detector.update(rng.normal(size=(30, 4)) + 3.0)
    >>> detector.drift_detected, detector.detected_at is not None and detector.detected_at < 30
    (True, True)
    """

    def __init__(
        self,
        reference: np.ndarray | torch.Tensor,
        ert: int,
        window_size: int,
        n_features: int = 512,
        scales: Sequence[int] | None = None,
        bandwidth: float | None = None,
        n_bootstraps: int = 1000,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        if ert <= 1:
            raise ValueError(f"ert={ert!r}: the expected run time must be more than 1 record")
        if window_size < 1:
            raise ValueError(f"window_size={window_size!r}: must be at least 1")
        if n_features < 1 or n_bootstraps < 1:
            raise ValueError(
                f"n_features={n_features!r}, n_bootstraps={n_bootstraps!r}: both must be >= 1")
        self.device = device
        ref = _as_rows(reference, device)
        if ref.dim() != 2 or len(ref) < 4:
            raise ValueError(
                f"reference has shape {tuple(ref.shape)}: need a 2-D array of at least 4 rows")
        self.ert, self.window_size, self.n_features = int(ert), int(window_size), int(n_features)
        self.n_bootstraps = int(n_bootstraps)
        self.scales = _checked_scales(scales, self.window_size)
        # Random draws on a CPU generator: the same seed gives the same detector on any device.
        gen = torch.Generator().manual_seed(seed)
        self.reference = ref
        self._ref_unit = torch.nn.functional.normalize(ref, dim=1)
        self.bandwidth = float(bandwidth) if bandwidth is not None else median_bandwidth(ref, gen)
        dim = ref.shape[1]
        self._w = (torch.randn(dim, n_features, generator=gen) / self.bandwidth).to(device)
        self._b = (torch.rand(n_features, generator=gen) * 2 * torch.pi).to(device)
        self._lengths = torch.tensor(self.scales, device=device)
        phi_ref = self.features(ref)
        self.ref_mean = phi_ref.mean(0)
        self.thresholds, self.null_means = self._calibrate(phi_ref, gen)
        self._inv_lengths = 1.0 / self._lengths[:, None].float()
        self._inv_null = 1.0 / self.null_means[:, -1]
        self._thresholds = self.thresholds.tolist()  # read per record on the one-record path
        self._scale = (2.0 / n_features) ** 0.5
        self._features = torch.zeros(self.window_size, n_features, device=device)
        self._rows = torch.zeros(self.window_size, dim, device=device)
        self.reset()

    def __getstate__(self) -> dict[str, object]:
        # Pickled on the CPU, so a checkpoint written on a GPU loads on a machine without one.
        return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
                if k != "_np_constants"}

    def to(self, device: str) -> OnlineMMD:
        """Move the detector's tensors to `device` (after loading from a checkpoint)."""
        self.__dict__.pop("_np_constants", None)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        self.device = device
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Random Fourier features: phi(x) . phi(y) ~ exp(-|x - y|^2 / 2 bandwidth^2)."""
        return torch.cos(x @ self._w + self._b) * (2.0 / self.n_features) ** 0.5

    def _calibrate(
        self, phi_ref: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step thresholds for steps 1 .. 2 x window_size (Cobb et al. 2022), and each
        scale's mean statistic under no drift per step (scales x steps), its unit.

        Streams are resampled from the reference. ref_mean is itself a sample mean, off the
        population's by ~N(0, cov / n_ref), and that offset is fixed for the live stream: each
        simulated stream gets its own draw of it. (Without it, calibration would be liberal; with
        the reference split in two halves instead, it was 3x conservative on real text.)
        Steps past window_size are simulated too: the steady-state threshold must be conditioned
        on no alarm over a full window of overlapping windows before it, not on the warm-up."""
        w, steps, n_ref = self.window_size, 2 * self.window_size, len(phi_ref)
        picks = torch.randint(n_ref, (self.n_bootstraps, steps), generator=gen).to(self.device)
        chunk = max(1, _CHUNK_FLOATS // (2 * steps * self.n_features))
        counts = torch.arange(1, steps + 1, device=self.device)[None, :, None].float()
        centred = phi_ref - self.ref_mean
        raw: list[list[torch.Tensor]] = [[] for _ in self.scales]
        for start in range(0, self.n_bootstraps, chunk):
            cums = phi_ref[picks[start:start + chunk]].cumsum(1)  # streams x steps x features
            draws = torch.randn(len(cums), n_ref, generator=gen).to(self.device)
            centre = (self.ref_mean + draws @ centred / n_ref)[:, None, :]
            sums = torch.empty_like(cums)
            for k, s in enumerate(self.scales):
                sums[:, :s] = cums[:, :s]
                torch.sub(cums[:, s:], cums[:, :-s], out=sums[:, s:])
                sums.div_(torch.clamp(counts, max=s)).sub_(centre).square_()
                raw[k].append(sums.sum(-1))
        by_scale = torch.stack([torch.cat(r) for r in raw])  # scales x streams x steps
        # A short window's MMD^2 is larger by about window / short under no drift: in units of
        # its own no-drift mean, the scales share one threshold on their maximum. From step s
        # on, scale s is in steady state: pool those steps' means.
        null_means = by_scale.mean(1)
        for k, s in enumerate(self.scales):
            null_means[k, s - 1:] = null_means[k, s - 1:].mean()
        stats_t = (by_scale / null_means[:, None, :]).amax(0)  # streams x steps
        alive = torch.ones(self.n_bootstraps, dtype=torch.bool, device=self.device)
        thresholds = torch.empty(steps, device=self.device)
        q = 1.0 - 1.0 / self.ert
        tail: list[torch.Tensor] = []
        for step in range(steps):
            if int(alive.sum()) < min(_MIN_SURVIVORS, self.n_bootstraps):
                alive[:] = True
            if step >= steps - max(1, w // 2):
                tail.append(stats_t[alive, step])
            thresholds[step] = torch.quantile(stats_t[alive, step], q)
            alive &= stats_t[:, step] <= thresholds[step]
        # The steady-state threshold serves every record from here on, and one step's extreme
        # quantile is noisy (~ the largest of n_bootstraps values when ert ~ n_bootstraps):
        # pool the surviving streams' statistics over the last half window instead.
        thresholds[-1] = _quantile(torch.cat(tail), q)
        return thresholds, null_means

    def clone(self) -> OnlineMMD:
        """A detector with this one's reference, features and calibrated thresholds and an
        empty window: segments that share a reference calibrate once (seconds each), not once
        per segment.

        >>> rng = np.random.default_rng(0)
        >>> first = OnlineMMD(rng.normal(size=(200, 4)), ert=100, window_size=10)
        >>> first.update(rng.normal(size=(5, 4)))
        >>> second = first.clone()
        >>> second.t, first.t, bool((second.thresholds == first.thresholds).all())
        (0, 5, True)
        """
        twin = copy.copy(self)
        twin._features = torch.zeros_like(self._features)
        twin._rows = torch.zeros_like(self._rows)
        twin.reset()
        return twin

    def reset(self) -> None:
        """Forget the window and restart the warm-up (after a detection, or on rollover)."""
        self.t = 0
        self._sums = torch.zeros(len(self.scales), self.n_features, device=self.device)
        self._since_refresh = 0
        self.statistic = 0.0
        self.threshold = float(self.thresholds[0])
        self.drift_detected = False
        self.detected_at: int | None = None
        # The statistic, threshold and scale at the record that crossed (the batch's last
        # record may be back under its threshold by the end of the batch).
        self.detected_statistic = self.detected_threshold = float("nan")
        self.detected_scale: int | None = None

    def _history(self, out: torch.Tensor) -> None:
        """The window's features into `out` (window_size rows), oldest first, zeros where no
        record is yet (t < window). Slices of the ring buffer: no index tensor."""
        w, t = self.window_size, self.t
        at = t % w
        if t >= w:
            out[:w - at] = self._features[at:]
            out[w - at:] = self._features[:at]
        else:
            out[:w - t] = 0
            out[w - t:] = self._features[:t]

    def _refresh(self) -> None:
        """Recompute the running sums from the ring buffer: float32 sums drift (amortised O(1))."""
        history = torch.empty_like(self._features)
        self._history(history)
        self._sums = history.flip(0).cumsum(0)[self._lengths - 1]
        self._since_refresh = 0

    def update(self, x: np.ndarray | torch.Tensor) -> None:
        """Add a batch of records (rows; a 1-D array is one record). The test runs after each
        record; `drift_detected` says whether any record of this batch crossed its threshold."""
        self.drift_detected, self.detected_at = False, None
        if self._w.is_cpu and isinstance(x, np.ndarray) and x.ndim == 1:
            self._update_one(x.astype(np.float32, copy=False))  # no tensor made at all
            return
        rows = _as_rows(x, self.device)
        n, w, t = len(rows), self.window_size, self.t
        if n == 0:
            return
        if n <= _ONE_BY_ONE_UP_TO and self._w.is_cpu:
            self._update_few(rows.numpy())
            return
        phi = self.features(rows)
        # Prefix sums over the window so far (oldest first, zeros before the first record) and
        # the batch: each scale's window sum after record j is one difference, no running state.
        prefix = torch.empty(w + n + 1, phi.shape[1], device=self.device)
        prefix[0] = 0
        self._history(prefix[1:w + 1])
        prefix[w + 1:] = phi
        prefix = prefix.cumsum(0)
        sums = torch.empty(len(self.scales), n, phi.shape[1], device=self.device)
        for k, s in enumerate(self.scales):  # scales x n x features
            torch.sub(prefix[w + 1:], prefix[w + 1 - s:w + n + 1 - s], out=sums[k])
        self._sums, self._since_refresh = sums[:, -1].clone(), 0  # fresh from the ring
        seen = torch.arange(t + 1, t + n + 1, device=self.device)
        step = torch.clamp(seen, max=len(self.thresholds)) - 1
        counts = torch.minimum(seen[None, :], self._lengths[:, None])
        by_scale = sums.div_(counts[..., None]).sub_(self.ref_mean).square_().sum(-1)
        stats, which = (by_scale / self.null_means[:, step]).max(0)
        thresholds = self.thresholds[step]
        crossed = torch.nonzero(stats > thresholds)
        # Ring buffer: only the last w records of the batch can still be in the window.
        keep = max(0, n - w)
        _ring_put(self._features, t + keep, phi[keep:])
        _ring_put(self._rows, t + keep, rows[keep:])
        self.t += n
        self.statistic, self.threshold = float(stats[-1]), float(thresholds[-1])
        if len(crossed):
            first = int(crossed[0, 0])
            self._detected(t + first, float(stats[first]), float(thresholds[first]),
                           self.scales[int(which[first])])

    def _detected(self, at: int, statistic: float, threshold: float, scale: int) -> None:
        self.drift_detected, self.detected_at = True, at
        self.detected_statistic, self.detected_threshold = statistic, threshold
        self.detected_scale = scale

    def _update_few(self, rows: np.ndarray) -> None:
        """A few records on a CPU, one at a time (the first crossing is the one kept)."""
        for row in rows:
            self._update_one(row)

    def _update_one(self, row: np.ndarray) -> None:
        """One record on a CPU: the same arithmetic as a batch, in numpy on views that share the
        detector's tensors' memory. A single-record stream pays per call, not per flop, and a
        numpy call costs a fraction of a torch one (35 to 50 against 100 µs a record here)."""
        w, t = self.window_size, self.t
        weights, offsets, lengths, inv_lengths, ref_mean, inv_null = self._constants()
        features, sums = self._features.numpy(), self._sums.numpy()
        phi = row @ weights
        phi += offsets
        np.cos(phi, out=phi)
        phi *= self._scale
        if t >= w:  # every scale's window is full: each loses the record `scale` places back
            sums -= features[(t - lengths) % w]
        else:
            for k, s in enumerate(self.scales):
                if t >= s:
                    sums[k] -= features[(t - s) % w]
        sums += phi
        features[t % w] = phi
        self._rows.numpy()[t % w] = row
        self.t = t = t + 1
        self._since_refresh += 1
        step = min(t, len(self._thresholds)) - 1
        steady = step == len(self._thresholds) - 1  # window lengths and units constant from here
        means = sums * inv_lengths if steady else sums / np.minimum(lengths, t)[:, None]
        means -= ref_mean
        stats = np.square(means, out=means).sum(1)
        if steady:
            stats *= inv_null
        else:
            stats /= self.null_means[:, step].numpy()
        which = int(stats.argmax())
        stat = float(stats[which])
        self.statistic, self.threshold = stat, self._thresholds[step]
        if self._since_refresh >= w:
            self._refresh()
        # Within one update() the first crossing is the one reported, as in the batch path.
        if stat > self.threshold and not self.drift_detected:
            self._detected(t - 1, stat, self.threshold, self.scales[which])

    def _constants(self) -> tuple[np.ndarray, ...]:
        """numpy views of what the one-record path reads and never changes: made once, kept
        out of checkpoints, dropped when the tensors move."""
        views = self.__dict__.get("_np_constants")
        if views is None:
            views = self._np_constants = tuple(
                v.numpy() for v in (self._w, self._b, self._lengths, self._inv_lengths,
                                    self.ref_mean, self._inv_null))
        return views

    def window(self) -> torch.Tensor:
        """The raw rows now in the window, oldest first."""
        w = self.window_size
        if self.t <= w:
            return self._rows[: self.t]
        return torch.roll(self._rows, -(self.t % w), dims=0)

    def explain(
        self, window_ids: Sequence[object], k: int = 5
    ) -> list[tuple[object, int, float]]:
        """The `k` window records most characteristic of the window against the reference (largest
        MMD witness phi(x) . (mean_window - mean_ref)), each as (its id, the index of its nearest
        reference row by cosine, that cosine). `window_ids` name the window's records, oldest
        first; the window holds the last min(t, window_size) records."""
        rows = self.window()
        if len(window_ids) != len(rows):
            raise ValueError(
                f"window_ids has {len(window_ids)} ids but the window holds {len(rows)} records "
                f"(the last min(t, window_size) seen, oldest first)")
        if len(rows) == 0:
            return []
        phi = self.features(rows)
        witness = phi @ (phi.mean(0) - self.ref_mean)
        top = torch.topk(witness, min(k, len(rows))).indices
        cosines = torch.nn.functional.normalize(rows[top], dim=1) @ self._ref_unit.T
        best, nearest = cosines.max(1)
        return [(window_ids[int(i)], int(j), float(c))
                for i, j, c in zip(top.tolist(), nearest.tolist(), best.tolist(), strict=True)]
