"""Shared test helpers: build a quiet env and run a scripted episode."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

import healgym  # noqa: F401  (registers the env)
from healgym.envs.pipeline_heal import PipelineHealEnv


def quiet_env(**kw: Any) -> PipelineHealEnv:
    """A scalar env without random chaos or delayed metrics (tests of other rules time their
    observations to the step), with an unwrapped handle for inspection."""
    kw.setdefault("chaos", False)
    kw.setdefault("metric_lag_s", 0.0)
    kw.setdefault("episode_steps", 120)
    return PipelineHealEnv(**kw)


def run_actions(env: gym.Env, seed: int, actions: dict[int, int] | None = None,
                steps: int | None = None) -> list[tuple]:
    """Step with noop except ``actions[step] = action``; returns (obs, reward, info) per step."""
    actions = actions or {}
    obs, info = env.reset(seed=seed)
    out = []
    n = steps if steps is not None else 10**9
    for k in range(n):
        obs, r, term, trunc, info = env.step(actions.get(k, 0))
        out.append((obs, r, info))
        if term or trunc:
            break
    return out


def action_index(env: PipelineHealEnv, name: str) -> int:
    return env.action_names.index(name)


def episode_equal(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b, strict=True))
