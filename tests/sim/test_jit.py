"""numba's internals that healgym relies on (healgym/sim/jit.py): fails loudly on a numba
upgrade that breaks one."""

from __future__ import annotations

import numba
import numpy as np

from healgym.sim.jit import compiled, entry_point, signature


@compiled(nogil=True)
def _add_rows(a, b, out):
    for i in range(a.shape[0]):
        out[i] = a[i] + b[i]


def test_njit_without_the_runtime_compiles_and_runs():
    a, b, out = np.arange(4.0), np.ones(4), np.zeros(4)
    _add_rows(a, b, out)
    np.testing.assert_array_equal(out, a + 1)
    assert _add_rows.targetoptions.get("_nrt") is False, (
        f"numba {numba.__version__}: the _nrt=False option is no longer honoured")


def test_the_cached_entry_point_is_the_compiled_function():
    a, b, out = np.arange(3.0), np.full(3, 2.0), np.zeros(3)
    _add_rows(a, b, out)
    fn, sig = entry_point(_add_rows, (a, b, out))
    assert fn is not None, (f"numba {numba.__version__}: Dispatcher.overloads[sig].entry_point "
                            "is gone; healgym.sim.jit.entry_point needs updating")
    assert sig == signature(_add_rows, (a, b, out)) and len(sig) == 3
    out[:] = 0
    fn(a, b, out)
    np.testing.assert_array_equal(out, a + 2)
    # other argument types: no entry point yet (the env then calls the dispatcher first)
    fn32, _ = entry_point(_add_rows, (a.astype(np.float32), b, out))
    assert fn32 is None
