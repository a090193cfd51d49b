"""A natively batched ``healgym/PipelineHeal-v1``: N pipelines stepped with array operations.

``gymnasium.make_vec("healgym/PipelineHeal-v1", num_envs=N)`` returns a
:class:`PipelineHealVectorEnv`. The scalar env is this env with one pipeline (one model, one
implementation of its dynamics), and sub-env ``i`` reset with ``seed=s`` is the scalar env reset
with ``seed=s + i``, episode after episode: same observations, rewards, truncations and episode
metrics for the same actions (tested bit for bit: batch size and threads change nothing).

This class is a thin Gymnasium adapter (seeds, spaces, action checks, the info dictionary) over
the batch core (:class:`healgym.envs.core.BatchCore`: state, compiled step, threads; see its
module for the threading defaults, ``num_threads`` and ``HEALGYM_NUM_THREADS``).

Autoreset mode: ``NEXT_STEP`` (a finished sub-env is reset by the following ``step`` call,
whose action for it is ignored, and returns its first observation with reward 0).

Info, each key with its ``_key`` mask: ``action_mask`` (N, A), ``time_s``, ``slo_violated``,
``invalid_action``, ``n_faults`` (active faults, the ground truth count), and on the last step of
a sub-env's episode ``episode_metrics`` (an object array of the scalar env's dictionaries, each
built when first read: :class:`EpisodeMetrics`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from healgym.envs.consts import (  # noqa: F401  (re-exported: the env's codes)
    FAULT_CODE,
    FAULT_LABEL,
    LIGHT,
    OLD,
    RESTART,
    SHED,
    KernelConsts,
    escalate_index,
    kernel_consts,
)
from healgym.envs.core import BatchCore, default_threads  # noqa: F401  (re-exported)
from healgym.envs.metrics import EpisodeMetrics, episode_metrics, metrics_dict  # noqa: F401
from healgym.envs.state import METRIC_FIELDS, State
from healgym.envs.state import get as get_field
from healgym.errors import ConfigError
from healgym.sim.episode import seed_key
from healgym.sim.model import PipelineConfig, build_model


class PipelineHealVectorEnv(VectorEnv):
    """N healgym pipelines stepped at once; see the module docstring and ``PipelineHealEnv``."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        num_threads: int | None = None,
        config: PipelineConfig | None = None,
        **pipeline: Any,
    ) -> None:
        """``pipeline``: the fields of :class:`healgym.sim.model.PipelineConfig` (the scalar
        env's arguments), or all of them as ``config``."""
        if num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r}: must be >= 1")
        if render_mode is not None:
            raise ConfigError("the vector env does not render; use the scalar env's 'ansi' mode")
        cfg = PipelineConfig.make(config, "PipelineHealVectorEnv", **pipeline)
        self.config = cfg
        self.model = m = build_model(cfg)
        self.core = BatchCore(m, int(num_envs), num_threads)
        self.num_envs = N = int(num_envs)
        self.render_mode = None
        self.single_observation_space = m.observation_space
        self.single_action_space = m.action_space
        self.observation_space = batch_space(m.observation_space, N)
        self.action_space = batch_space(m.action_space, N)

    @property
    def state(self) -> State:
        """The batch's named state (:mod:`healgym.envs.state`), read-only by convention."""
        return self.core.state

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        N = self.num_envs
        keys: np.ndarray | None = None
        if seed is None:
            if not self.core.keyed:
                keys = self.np_random.integers(0, 2**63 - 1, size=N).astype(np.uint64)
        elif isinstance(seed, (int, np.integer)):
            keys = seed_key(int(seed) + np.arange(N))
        else:
            if len(seed) != N:
                raise ConfigError(f"reset(seed=...): {len(seed)} seeds for {N} envs")
            keys = seed_key(np.asarray(seed, dtype=np.int64))
        obs, violated = self.core.start(keys, options)
        return obs, self._infos(np.zeros(N, dtype=bool), violated, np.zeros(N, dtype=bool))

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self.core.started:
            raise gym.error.ResetNeeded("call reset() before step()")
        N = self.num_envs
        a = np.require(actions, np.int64, ["C", "W"]).reshape(N)  # the kernels' layout
        n_act = len(self.model.actions)
        if (a < 0).any() or (a >= n_act).any():
            bad = a[(a < 0) | (a >= n_act)][0]
            raise gym.error.InvalidAction(f"action {bad} is outside Discrete({n_act})")
        obs, reward, violated, invalid, truncated = self.core.advance(a)
        return obs, reward, np.zeros(N, dtype=bool), truncated, self._infos(truncated, violated,
                                                                            invalid)

    # ------------------------------------------------------------------ reporting
    def _infos(self, final: np.ndarray, violated: np.ndarray, invalid: np.ndarray
               ) -> dict[str, Any]:
        N, state = self.num_envs, self.core.state
        ones = np.ones(N, dtype=bool)
        infos: dict[str, Any] = {
            "action_mask": state.actions.mask, "_action_mask": ones,
            "time_s": state.clock.t.copy(), "_time_s": ones,
            "slo_violated": violated, "_slo_violated": ones,
            "invalid_action": invalid, "_invalid_action": ones,
            "n_faults": state.pipeline.n_faults.copy(), "_n_faults": ones,
        }
        if final.any():
            idx = np.flatnonzero(final)
            snap = {path: get_field(state, path)[idx] for path in METRIC_FIELDS}
            em = np.empty(N, dtype=object)
            for j, i in enumerate(idx.tolist()):  # one by one: a list would be read as rows
                em[i] = EpisodeMetrics(self.model, snap, j)
            infos["episode_metrics"], infos["_episode_metrics"] = em, final.copy()
        return infos

    def episode_metrics(self, i: int) -> dict[str, Any]:
        """Sub-env ``i``'s episode metrics so far (the scalar env's dictionary)."""
        return self.core.episode_metrics(i)

    def faults(self, i: int) -> list[tuple[str, str]]:
        """Sub-env ``i``'s active faults (type, stage): the ground truth, for analysis."""
        return self.core.faults(i)


__all__ = ["EpisodeMetrics", "PipelineHealVectorEnv"]
