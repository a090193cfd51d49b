"""Drift scores on feature windows: the two-sample Kolmogorov-Smirnov statistic and the
Population Stability Index, as a drift monitor computes them.

Both compare windows of recent feature values with a reference sample of the training
distribution. They are batched: one call scores many windows (rows), so the simulator scores a
whole episode's healthy windows at reset and only rescores windows under drift. ``ks_batch``
equals ``scipy.stats.ks_2samp(ref, window).statistic`` for continuous data (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from healgym.sim.jit import compiled

PSI_EPS = 1e-4


def ks_batch(ref_sorted: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic of each row of ``windows`` (C, n) against ``ref_sorted`` (m,).

    The supremum of |F_ref - F_win| is attained at a window point, from the right
    (F_win = i/n) or from the left (F_win = (i-1)/n), so 2n evaluations of F_ref suffice.
    """
    w = np.sort(windows, axis=1)
    n, m = w.shape[1], ref_sorted.size
    right = np.searchsorted(ref_sorted, w, side="right") / m
    left = np.searchsorted(ref_sorted, w, side="left") / m
    i = np.arange(1, n + 1) / n
    d = np.maximum(np.abs(i - right), np.abs(i - 1.0 / n - left))
    return d.max(axis=1)


def psi_edges(ref: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (equal-mass bins)."""
    return np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1])


def psi_batch(ref_frac: np.ndarray, edges: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Population Stability Index of each row of ``windows`` against reference bin fractions."""
    c, n = windows.shape
    bins = edges.size + 1
    idx = np.searchsorted(edges, windows, side="right") + bins * np.arange(c)[:, None]
    counts = np.bincount(idx.ravel(), minlength=c * bins).reshape(c, bins)
    frac = np.maximum(counts / n, PSI_EPS)
    ref = np.maximum(ref_frac, PSI_EPS)
    return np.sum((frac - ref) * np.log(frac / ref), axis=1)


@dataclass(frozen=True)
class DriftReference:
    """A reference sample prepared for fast KS and PSI."""

    sorted_ref: np.ndarray
    edges: np.ndarray
    ref_frac: np.ndarray

    @classmethod
    def from_sample(cls, ref: np.ndarray, bins: int = 10) -> DriftReference:
        srt = np.sort(np.asarray(ref, dtype=float))
        edges = psi_edges(srt, bins)
        counts = np.bincount(np.searchsorted(edges, srt, side="right"), minlength=bins)
        return cls(sorted_ref=srt, edges=edges, ref_frac=counts / srt.size)

    def scores(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(KS statistics, PSIs) of each row of ``windows`` (C, n)."""
        windows = np.atleast_2d(windows)
        return (ks_batch(self.sorted_ref, windows),
                psi_batch(self.ref_frac, self.edges, windows))


@dataclass(frozen=True)
class DriftPool:
    """The drift monitor's feature windows: a fixed pool of windows drawn once from the training
    distribution (standard normal), with their healthy KS and PSI scores precomputed. An episode
    picks a pool window per monitoring period (by its counter-based draws) and adds the current
    covariate shift; only shifted windows are scored at run time."""

    reference: DriftReference
    windows: np.ndarray  # (P, W), each row sorted (a window is a sample: its order is no data)
    healthy_ks: np.ndarray  # (P,)
    healthy_psi: np.ndarray  # (P,)

    @classmethod
    def build(cls, seed: int = 20260101, pool: int = 512, window: int = 200,
              reference_size: int = 1000) -> DriftPool:
        rng = np.random.default_rng(seed)
        ref = DriftReference.from_sample(rng.standard_normal(reference_size))
        windows = np.sort(rng.standard_normal((pool, window)), axis=1)
        ks, psi_v = ref.scores(windows)
        return cls(reference=ref, windows=windows, healthy_ks=ks, healthy_psi=psi_v)

    def scores(self, idx: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(KS, PSI) of pool windows ``idx`` shifted by ``shift`` (arrays of one shape).

        Shifted windows are scored by :func:`shifted_scores`, the compiled function the vector
        env's kernel calls too, so both envs get identical values."""
        idx, shift = np.atleast_1d(idx), np.atleast_1d(shift)
        ks, psi_v = self.healthy_ks[idx].copy(), self.healthy_psi[idx].copy()
        ref = self.reference
        for j in np.flatnonzero(shift != 0.0):
            ks[j], psi_v[j] = shifted_scores(ref.sorted_ref, ref.edges, ref.ref_frac,
                                             self.windows[idx[j]], float(shift[j]))
        return ks, psi_v


@compiled(nogil=True)
def shifted_scores(ref_sorted: np.ndarray, edges: np.ndarray, ref_frac: np.ndarray,
                   window_sorted: np.ndarray, shift: float) -> tuple[float, float]:
    """(KS, PSI) of ``window_sorted + shift`` against the reference; the formulas of
    ``ks_batch`` and ``psi_batch`` for one window, compiled.

    Adding a constant keeps a sorted window sorted (rounding is monotonic), so the counts
    ``searchsorted`` would give are found by walking the window, the reference and the bin edges
    together: O(n + m), no sort and no allocation, and the same counts, hence the same floats.
    """
    n, m = window_sorted.size, ref_sorted.size
    nb = edges.size
    d = 0.0
    lo = 0  # reference values < w
    hi = 0  # reference values <= w
    b = 0  # bin of w: edges <= w
    count = 0.0
    psi = 0.0
    for i in range(n):
        w = window_sorted[i] + shift
        while lo < m and ref_sorted[lo] < w:
            lo += 1
        if hi < lo:
            hi = lo
        while hi < m and ref_sorted[hi] <= w:
            hi += 1
        d = max(d, abs((i + 1) / n - hi / m), abs((i + 1) / n - 1.0 / n - lo / m))
        while b < nb and edges[b] <= w:
            psi += _psi_term(count, n, ref_frac[b])
            count = 0.0
            b += 1
        count += 1.0
    psi += _psi_term(count, n, ref_frac[b])
    for rest in range(b + 1, nb + 1):
        psi += _psi_term(0.0, n, ref_frac[rest])
    return d, psi


@compiled(inline="always")
def _psi_term(count: float, n: int, ref_frac: float) -> float:
    frac = max(count / n, PSI_EPS)
    ref = max(ref_frac, PSI_EPS)
    return (frac - ref) * np.log(frac / ref)
