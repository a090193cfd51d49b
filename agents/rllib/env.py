"""healgym as RLlib sees it: the observation with the action mask appended.

RLlib's RLModules see only the observation, not ``info``, so the env RLlib builds wraps
healgym's scalar or (natively batched) vector env and returns one flat float32 vector:
healgym's observation followed by ``info["action_mask"]`` (one 0/1 per action). The masking
modules (:mod:`agents.rllib.modules`) split it again. (A flat Box, not a Dict: RLlib's connectors
spend ~25 % of sampling time on nested observations.) Rewards and termination pass through; of
``info`` only ``episode_metrics`` does (RLlib copies every info key into its episodes).

:func:`make_env` is the env creator registered with Ray under :data:`RLLIB_ENV`: RLlib calls it
with ``num_envs`` in the config when ``gym_env_vectorize_mode="vector_entry_point"``, and gets
the batched :class:`~healgym.envs.vector.PipelineHealVectorEnv`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper

RLLIB_ENV = "healgym-rllib"


def masked_space(obs_space: Any, n_actions: int) -> spaces.Box:
    """healgym's observation Box with ``n_actions`` 0/1 mask entries appended."""
    low = np.concatenate([obs_space.low, np.zeros(n_actions)]).astype(np.float32)
    high = np.concatenate([obs_space.high, np.ones(n_actions)]).astype(np.float32)
    return spaces.Box(low, high, dtype=np.float32)


#: The only info RLlib needs (for the incident metrics callback); RLlib copies every info key of
#: every sub-env into its episodes each step, so the rest (mask, time, faults) stays behind.
KEEP_INFO = ("episode_metrics", "_episode_metrics")


def lean(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in KEEP_INFO if k in info}


def with_mask(obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """The observation(s) with the action mask(s) appended (last axis)."""
    return np.concatenate([np.asarray(obs, dtype=np.float32),
                           np.asarray(info["action_mask"], dtype=np.float32)], axis=-1)


class MaskedObservation(gym.Wrapper):
    """Scalar env: the observation with the action mask appended."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
        self.observation_space = masked_space(env.observation_space, n_actions)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return with_mask(obs, info), lean(info)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return with_mask(obs, info), reward, terminated, truncated, lean(info)


class MaskedVectorObservation(VectorWrapper):
    """Vector env: (N, obs + A), the observations with their action masks appended."""

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        n_actions = int(env.single_action_space.n)  # type: ignore[attr-defined]
        self.single_observation_space = masked_space(env.single_observation_space, n_actions)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space,
                                                              env.num_envs)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return with_mask(obs, info), lean(info)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return with_mask(obs, info), reward, terminated, truncated, lean(info)


def make_env(config: dict[str, Any]) -> gym.Env | VectorEnv:
    """RLlib's env creator: healgym keyword arguments in ``config`` (plus ``num_envs`` when
    RLlib asks for a vector env, and ``reward_scale``, which multiplies the reward the learner
    sees: healgym's rewards are SLO-seconds and cost units, hundreds per step, and value
    networks learn better near unit scale. ``info["episode_metrics"]`` stays unscaled)."""
    from healgym.envs.pipeline_heal import PipelineHealEnv
    from healgym.envs.vector import PipelineHealVectorEnv

    kw = dict(config)
    num_envs = kw.pop("num_envs", None)
    scale = float(kw.pop("reward_scale", 1.0))
    env: Any
    if num_envs is not None:
        env = MaskedVectorObservation(PipelineHealVectorEnv(num_envs=int(num_envs), **kw))
        return gym.wrappers.vector.TransformReward(env, lambda r: np.asarray(r) * scale) \
            if scale != 1.0 else env
    env = MaskedObservation(PipelineHealEnv(**kw))
    return gym.wrappers.TransformReward(env, lambda r: float(r) * scale) \
        if scale != 1.0 else env


def register() -> None:
    """Register :func:`make_env` with Ray's env registry (on the driver; RLlib ships it to the
    EnvRunners)."""
    from ray.tune.registry import register_env

    register_env(RLLIB_ENV, make_env)
