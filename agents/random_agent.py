"""The random and no-op baselines."""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.policy import Decision, valid_actions


class RandomAgent:
    """Picks uniformly among valid actions (``info["action_mask"]``), from a seeded generator."""

    name = "random"

    def __init__(self, n_actions: int, seed: int | None = None) -> None:
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        valid = valid_actions(info, self.n_actions)
        return Decision(int(valid[self.rng.integers(valid.size)]), {"rule": "uniform"})

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return self.decide(obs, info).action

    def reset(self) -> None:
        pass


class NoOpAgent:
    """Never acts: the floor every policy must clear (faults that fade still end)."""

    name = "noop"

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        return Decision(0, {"rule": "never act"})

    def reset(self) -> None:
        pass
