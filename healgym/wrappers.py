"""Wrappers healgym's registration adds."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym


class EpisodeMetrics(gym.Wrapper):
    """Puts ``info["episode_metrics"]`` on the last step of an episode, whoever ends it.

    Registered as an additional wrapper of ``healgym/PipelineHeal-v1``, so it sits outside the
    ``TimeLimit``: the env cannot see the time limit, this wrapper sees its truncation.
    """

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and "episode_metrics" not in info:
            info["episode_metrics"] = self.env.unwrapped.episode_metrics()  # type: ignore[attr-defined]
        return obs, reward, terminated, truncated, info
