"""RLModules that never choose a masked action.

The observation RLlib sees is flat: healgym's observation followed by the action mask (one 0/1
per action; :mod:`agents.rllib.env`). A flat Box keeps RLlib's per-step connector work as light as
for any Box env (a Dict observation costs RLlib ~25 % of its sampling speed in nested-structure
bookkeeping). Each module splits the last ``n_actions`` columns off as the mask, builds its
networks on the rest only, and masks its outputs:

- :class:`ActionMaskingPPOTorchRLModule`: masked logits get ``log(0)`` clamped to RLlib's
  ``FLOAT_MIN`` (as in Ray's ``action_masking_rlm`` example), in exploration, inference and the
  loss alike, so a masked action is never sampled.
- :class:`ActionMaskingDQNTorchRLModule`: every Q-network pass (online and target) sets a masked
  action's Q-value to ``-inf``. RLlib's DQN is written for that convention: epsilon-greedy draws
  its random action only among finite-Q actions, the greedy action is the argmax over valid
  actions, and the learner's TD target bootstraps from the best *valid* next action
  (``nan_to_num(neginf=0)`` guards the gathers). So DQN neither explores, picks nor bootstraps
  through an invalid action.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import (
    DefaultDQNTorchRLModule,
)
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
    DefaultPPOTorchRLModule,
)
from ray.rllib.core.columns import Columns
from ray.rllib.utils.torch_utils import FLOAT_MIN

__all__ = ["ActionMaskingDQNTorchRLModule", "ActionMaskingPPOTorchRLModule", "module_class"]


def inner_space(space: gym.Space, action_space: gym.Space) -> gym.spaces.Box:
    """The observation part of the flat (observation + mask) space."""
    n = int(getattr(action_space, "n", 0))
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1 or space.shape[0] <= n \
            or not np.all(space.low[-n:] == 0) or not np.all(space.high[-n:] == 1):
        raise ValueError(
            f"the masking RLModules need a flat Box observation ending in one 0/1 mask entry per "
            f"action ({n}), got {space}; build the env with agents.rllib.env.make_env")
    return gym.spaces.Box(space.low[:-n], space.high[:-n], dtype=np.float32)


class _SplitMask:
    """Builds the networks on the observation part; splits the mask off a batch."""

    observation_space_with_mask: gym.spaces.Box
    n_mask: int

    def _init_spaces(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        space, action_space = kwargs.get("observation_space"), kwargs.get("action_space")
        self.observation_space_with_mask = space  # type: ignore[assignment]
        self.n_mask = int(getattr(action_space, "n", 0))
        return {**kwargs, "observation_space": inner_space(space, action_space)}  # type: ignore[arg-type]

    def _split(self, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        obs = batch[Columns.OBS]
        inner = dict(batch)
        inner[Columns.OBS] = obs[..., :-self.n_mask]
        return obs[..., -self.n_mask:], inner

    def _is_flat(self, batch: dict[str, Any]) -> bool:
        return int(batch[Columns.OBS].shape[-1]) == int(self.observation_space_with_mask.shape[0])


class ActionMaskingPPOTorchRLModule(_SplitMask, DefaultPPOTorchRLModule):
    """PPO over the flat observation + mask; masked logits are never sampled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**self._init_spaces(kwargs))

    def setup(self) -> None:
        super().setup()
        self.observation_space = self.observation_space_with_mask

    @staticmethod
    def _masked(out: dict[str, Any], mask: Any) -> dict[str, Any]:
        out[Columns.ACTION_DIST_INPUTS] = out[Columns.ACTION_DIST_INPUTS] + torch.clamp(
            torch.log(mask), min=FLOAT_MIN)
        return out

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask, inner = self._split(batch)
        return self._masked(super()._forward(inner, **kwargs), mask)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        mask, inner = self._split(batch)
        return self._masked(super()._forward_train(inner, **kwargs), mask)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
        if embeddings is None and self._is_flat(batch):
            batch = self._split(batch)[1]
        return super().compute_values(batch, embeddings)


class ActionMaskingDQNTorchRLModule(_SplitMask, DefaultDQNTorchRLModule):
    """DQN over the flat observation + mask; masked actions get Q = -inf."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**self._init_spaces(kwargs))

    def setup(self) -> None:
        super().setup()
        self.observation_space = self.observation_space_with_mask

    def _qf_forward_helper(self, batch: dict[str, Any], encoder: Any, head: Any
                           ) -> dict[str, Any]:
        if not self._is_flat(batch):  # already split by a caller
            return super()._qf_forward_helper(batch, encoder, head)
        mask, inner = self._split(batch)
        out = super()._qf_forward_helper(inner, encoder, head)
        q: Any = out[QF_PREDS]
        out[QF_PREDS] = torch.where(mask > 0.5, q, torch.full_like(q, float("-inf")))
        return out


def module_class(algo: str) -> type:
    """The masking RLModule class for ``algo`` ("ppo" or "dqn")."""
    return {"ppo": ActionMaskingPPOTorchRLModule, "dqn": ActionMaskingDQNTorchRLModule}[algo]
