from __future__ import annotations

import math

import numpy as np
import scipy.stats as st
from hypothesis import given, settings
from hypothesis import strategies as hs

from healgym.sim.drift import DriftReference, ks_batch


@settings(max_examples=50, deadline=None)
@given(seed=hs.integers(0, 2**31), shift=hs.floats(-3, 3), n=hs.integers(5, 300))
def test_ks_equals_scipy(seed, shift, n):
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.standard_normal(400))
    w = rng.standard_normal((3, n)) + shift
    got = ks_batch(ref, w)
    want = [st.ks_2samp(ref, row).statistic for row in w]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_psi_grows_with_shift_and_is_small_without():
    rng = np.random.default_rng(0)
    ref = DriftReference.from_sample(rng.standard_normal(5000))
    shifts = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
    w = rng.standard_normal((5, 2000)) + shifts[:, None]
    ks, psi = ref.scores(w)
    assert psi[0] < 0.02 and ks[0] < 0.05
    assert np.all(np.diff(psi) > 0) and np.all(np.diff(ks) > 0)
    assert psi[-2] > 0.25  # the usual "significant shift" threshold at one sigma
    # PSI by hand for the last window
    counts = np.bincount(np.searchsorted(ref.edges, w[-1], side="right"), minlength=10)
    frac = np.maximum(counts / 2000, 1e-4)
    refp = np.maximum(ref.ref_frac, 1e-4)
    assert psi[-1] == np.sum((frac - refp) * np.log(frac / refp))


@settings(max_examples=60, deadline=None)
@given(seed=hs.integers(0, 2**31), shift=hs.floats(-4, 4), n=hs.integers(1, 250),
       ties=hs.booleans())
def test_shifted_scores_equal_the_batch_formulas(seed, shift, n, ties):
    """The compiled merge walk gives exactly the sort-and-search formulas' floats, ties too."""
    from healgym.sim.drift import PSI_EPS, psi_batch, shifted_scores

    rng = np.random.default_rng(seed)
    sample = rng.standard_normal(300)
    if ties:  # reference values and bin edges that the shifted window hits exactly
        sample = np.round(sample, 1)
    ref = DriftReference.from_sample(sample)
    window = np.sort(np.round(rng.standard_normal(n), 1) if ties else rng.standard_normal(n))
    ks, psi = shifted_scores(ref.sorted_ref, ref.edges, ref.ref_frac, window, shift)
    shifted = (window + shift)[None, :]
    assert ks == ks_batch(ref.sorted_ref, shifted)[0]
    # the same bin counts, summed bin by bin in order (np.sum's pairwise order differs by ulps)
    counts = np.bincount(np.searchsorted(ref.edges, shifted[0], side="right"),
                         minlength=ref.edges.size + 1)
    want = 0.0
    for c, r in zip(counts, ref.ref_frac, strict=True):
        frac, rf = max(c / n, PSI_EPS), max(r, PSI_EPS)
        want += (frac - rf) * math.log(frac / rf)
    assert psi == want
    assert abs(psi - psi_batch(ref.ref_frac, ref.edges, shifted)[0]) < 1e-12
