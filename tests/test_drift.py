from __future__ import annotations

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
