"""Counter-based random numbers: the draws an episode needs at step k, derived from one key.

At reset, each episode draws a 63-bit ``key`` from the env's seeded ``np.random.Generator``.
Everything drawn *during* the episode (accuracy noise, heal outcomes, drift-monitor windows) is
then a pure function of ``(key, step, stream)``, the SplitMix64 finaliser of a counter (Steele
et al., 2014). A scalar env and each sub-env of a vector env therefore draw the same numbers for
the same seed without storing a plan per step, and a batch draws them in one array operation.
"""

from __future__ import annotations

import numpy as np

from healgym.sim.jit import compiled

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2 ** -53
_Q, _TO_Q = np.uint64(0xFFFF), 1.0 / 65536.0

# Streams: which quantity a draw is for.
ACC_NOISE, DRIFT_WINDOW, PRED_NOISE = 1, 3, 4
SCRAPE_GAP = 192  # + the stage index (so at most 64 stages): does this step's scrape fail
SQRT3 = 1.7320508075688772


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def uniform(key: np.ndarray | int, step: np.ndarray | int, stream: np.ndarray | int
            ) -> np.ndarray:
    """Uniform [0, 1) draws, one per broadcast element of ``(key, step, stream)``."""
    k = np.asarray(key, dtype=np.uint64)
    c = (np.asarray(step, dtype=np.uint64) << np.uint64(8)) + np.asarray(stream, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _mix(k + _mix(c * _GAMMA + _GAMMA))
    return (z >> _S11).astype(np.float64) * _TO_UNIT


def normal(key: np.ndarray | int, step: np.ndarray | int) -> np.ndarray:
    """Approximately standard normal draws for ``(key, step)``: the Irwin-Hall sum of four
    uniforms (the four 16-bit quarters of one draw), centred and scaled to unit variance.
    Arithmetic only (no SIMD transcendental functions), so a batch and a scalar env get
    bit-identical values; :func:`normal1` is the same formula compiled."""
    k = np.asarray(key, dtype=np.uint64)
    c = (np.asarray(step, dtype=np.uint64) << np.uint64(8)) + np.uint64(ACC_NOISE)
    with np.errstate(over="ignore"):
        z = _mix(k + _mix(c * _GAMMA + _GAMMA))
    total = _quarter(z, 0) + _quarter(z, 16)
    total = total + _quarter(z, 32)
    total = total + _quarter(z, 48)
    return (total - 2.0) * SQRT3


def _quarter(z: np.ndarray, shift: int) -> np.ndarray:
    return (((z >> np.uint64(shift)) & _Q).astype(np.float64) + 0.5) * _TO_Q


def draw_key(rng: np.random.Generator) -> int:
    """The episode key, from the env's seeded generator."""
    return int(rng.integers(0, 2**63 - 1, dtype=np.int64))


# --------------------------------------------------------------------------- compiled, one draw
@compiled(inline="always")
def mix1(z):  # type: ignore[no-untyped-def]
    """:func:`_mix` of one uint64, compiled."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@compiled()
def uniform1(key, step, stream):  # type: ignore[no-untyped-def]
    """:func:`uniform` for one draw, compiled (the kernels' and the episode set-up's)."""
    c = (np.uint64(step) << np.uint64(8)) + np.uint64(stream)
    z = mix1(np.uint64(key) + mix1(c * _GAMMA + _GAMMA))
    return float(z >> np.uint64(11)) * _TO_UNIT


@compiled(inline="always")
def _quarter1(z, shift):  # type: ignore[no-untyped-def]
    return (float((z >> np.uint64(shift)) & _Q) + 0.5) * _TO_Q


@compiled()
def normal1(key, step):  # type: ignore[no-untyped-def]
    """:func:`normal` for one draw, compiled."""
    c = (np.uint64(step) << np.uint64(8)) + np.uint64(ACC_NOISE)
    z = mix1(np.uint64(key) + mix1(c * _GAMMA + _GAMMA))
    total = _quarter1(z, 0) + _quarter1(z, 16)
    total = total + _quarter1(z, 32)
    total = total + _quarter1(z, 48)
    return (total - 2.0) * SQRT3
