"""RLModules that never choose a masked action.

PPO uses Ray's action-masking RLModule (``ray.rllib.examples.rl_modules.classes.
action_masking_rlm``): masked logits get ``log(0)`` (clamped), so they are never sampled, in
exploration, inference and the loss alike.

DQN has no masking module in Ray; :class:`ActionMaskingDQNTorchRLModule` sets the Q-value of
every masked action to ``-inf`` in every Q-network pass (online and target). RLlib's DQN is
written for that convention: epsilon-greedy exploration draws its random action only among
actions whose Q-value is finite, greedy actions are the argmax over valid actions, and the
learner's TD target bootstraps from the best *valid* next action (``nan_to_num(neginf=0)``
guards the gathers). So DQN neither explores nor bootstraps through invalid actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from ray.rllib.algorithms.dqn.default_dqn_rl_module import QF_PREDS
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import (
    DefaultDQNTorchRLModule,
)
from ray.rllib.core.columns import Columns
from ray.rllib.examples.rl_modules.classes.action_masking_rlm import (
    ActionMaskingTorchRLModule,
)

__all__ = ["ActionMaskingDQNTorchRLModule", "ActionMaskingTorchRLModule", "module_class"]


class ActionMaskingDQNTorchRLModule(DefaultDQNTorchRLModule):
    """DQN over the Dict observation {observations, action_mask}; masked actions get -inf."""

    def __init__(self, *, observation_space: gym.Space | None = None, **kwargs: Any) -> None:
        if not isinstance(observation_space, gym.spaces.Dict) or set(observation_space) != {
                "observations", "action_mask"}:
            raise ValueError(
                f"{type(self).__name__} needs a Dict observation space with keys "
                f"'observations' and 'action_mask', got {observation_space}; build the env "
                "with agents.rllib.env.make_env")
        self.observation_space_with_mask = observation_space
        super().__init__(observation_space=observation_space["observations"], **kwargs)

    def setup(self) -> None:
        super().setup()
        self.observation_space = self.observation_space_with_mask

    def _qf_forward_helper(self, batch: dict[str, Any], encoder: Any, head: Any
                           ) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        if not isinstance(obs, dict):  # already unpacked (e.g. a caller's own batch)
            return super()._qf_forward_helper(batch, encoder, head)
        inner = dict(batch)
        inner[Columns.OBS] = obs["observations"]
        out = super()._qf_forward_helper(inner, encoder, head)
        mask = obs["action_mask"] > 0.5
        q: Any = out[QF_PREDS]
        out[QF_PREDS] = torch.where(mask, q, torch.full_like(q, float("-inf")))
        return out


def module_class(algo: str) -> type:
    """The masking RLModule class for ``algo`` ("ppo" or "dqn")."""
    return {"ppo": ActionMaskingTorchRLModule, "dqn": ActionMaskingDQNTorchRLModule}[algo]
