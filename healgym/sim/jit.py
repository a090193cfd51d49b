"""The simulator's compiled functions: numba's ``njit``, cached on disk, without reference
counting.

The kernels allocate nothing; numba's runtime would still count references on every array
taken from a tuple, atomically, and in the step kernels that cost more than their arithmetic
(measured: half of the actions-and-events kernel's time). ``_nrt`` is not in numba's typed
signature, hence this one wrapper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])


def compiled(**options: Any) -> Callable[[F], F]:
    """``@compiled(nogil=True)``: ``njit(cache=True, _nrt=False, **options)``."""
    return njit(cache=True, _nrt=False, **options)  # type: ignore[call-overload,no-any-return]
