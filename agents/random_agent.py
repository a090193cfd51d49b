"""The random baseline: a uniformly random action among those the mask allows."""

from __future__ import annotations

from typing import Any

import numpy as np


class RandomAgent:
    """Picks uniformly among valid actions (``info["action_mask"]``), from a seeded generator."""

    name = "random"

    def __init__(self, n_actions: int, seed: int | None = None) -> None:
        self.n_actions = n_actions
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        mask = info.get("action_mask")
        valid = np.flatnonzero(mask) if mask is not None else np.arange(self.n_actions)
        return int(valid[self.rng.integers(valid.size)])
