"""Every use of numba's internals, in one place (``tests/sim/test_jit.py`` fails loudly when a
numba upgrade breaks one).

1. :func:`compiled`: ``njit(cache=True, _nrt=False)``. The kernels allocate nothing; numba's
   runtime would still count references on every array taken from a record, atomically, and in
   the step kernels that cost more than their arithmetic (measured in session 4: half of the
   actions-and-events kernel's time). ``_nrt`` is not in numba's typed signature.
2. :func:`entry_point`: the compiled entry point of a dispatcher for given arguments, so a call
   skips numba's type resolution of ~150 arguments (measured in session 5: half of a one-env
   step; the scalar env went from 0.20x to 0.31x CartPole with it). It reads
   ``Dispatcher.overloads[signature].entry_point`` and ``Dispatcher.typeof_pyval``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])


def compiled(**options: Any) -> Callable[[F], F]:
    """``@compiled(nogil=True)``: ``njit(cache=True, _nrt=False, **options)``."""
    return njit(cache=True, _nrt=False, **options)  # type: ignore[call-overload,no-any-return]


def signature(kernel: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The numba types of ``args`` as ``kernel`` (a dispatcher) would resolve them."""
    return tuple(kernel.typeof_pyval(a) for a in args)


def entry_point(kernel: Any, args: tuple[Any, ...]) -> tuple[Callable[..., Any] | None,
                                                             tuple[Any, ...]]:
    """``(the compiled function for these argument types or None, the types)``: call the
    kernel once first (it compiles or loads from the cache)."""
    sig = signature(kernel, args)
    cres = kernel.overloads.get(sig)
    return (None if cres is None else cres.entry_point), sig
