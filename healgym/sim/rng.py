"""Counter-based random numbers: the draws an episode needs at step k, derived from one key.

At reset, each episode draws a 63-bit ``key`` from the env's seeded ``np.random.Generator``.
Everything drawn *during* the episode (accuracy noise, heal outcomes, drift-monitor windows) is
then a pure function of ``(key, step, stream)``, the SplitMix64 finaliser of a counter (Steele
et al., 2014). A scalar env and each sub-env of a vector env therefore draw the same numbers for
the same seed without storing a plan per step, and a batch draws them in one array operation.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2 ** -53

# Streams: which quantity a draw is for.
ACC_NOISE_1, ACC_NOISE_2, DRIFT_WINDOW, ACC_NOISE_3, ACC_NOISE_4 = 1, 2, 3, 4, 5
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
    uniforms, centred and scaled to unit variance. Arithmetic only (no SIMD transcendental
    functions), so a batch and a scalar env get bit-identical values."""
    total = uniform(key, step, ACC_NOISE_1) + uniform(key, step, ACC_NOISE_2)
    total = total + uniform(key, step, ACC_NOISE_3)
    total = total + uniform(key, step, ACC_NOISE_4)
    return (total - 2.0) * SQRT3


def draw_key(rng: np.random.Generator) -> int:
    """The episode key, from the env's seeded generator."""
    return int(rng.integers(0, 2**63 - 1, dtype=np.int64))
