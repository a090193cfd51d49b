"""The one interface every agent implements, and what it returns.

Evaluation, training loops and the serving adapter use only this protocol: given what an operator
sees (the observation and ``info["action_mask"]``), return an action and the reason for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Decision:
    """An action and why: the rule that fired, the Q-values, or the fault the oracle saw."""

    action: int
    explanation: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    """``decide(obs, info) -> Decision``; ``reset()`` at the start of each episode."""

    name: str

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision: ...

    def reset(self) -> None: ...


def valid_actions(info: dict[str, Any], n_actions: int) -> np.ndarray:
    mask = info.get("action_mask")
    return np.flatnonzero(mask) if mask is not None else np.arange(n_actions)
