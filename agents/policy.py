"""The one interface every agent implements, and what it returns.

Evaluation, training loops and the serving adapter use only this protocol: given what an operator
sees (the observation and ``info["action_mask"]``), return an action and the reason for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from healgym.errors import HealgymError


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


def read_versioned_json(path: Path, name: str, fmt: str, version: int, what: str, fix: str
                        ) -> dict[str, Any]:
    """``path/name`` (a saved policy's or dataset's metadata), refusing a folder without it or
    of another format or version; ``what`` names the artefact, ``fix`` says how to remake it."""
    try:
        meta: dict[str, Any] = json.loads((path / name).read_text())
    except FileNotFoundError as exc:
        raise HealgymError(f"{path}: not {what} ({name} missing); {fix}") from exc
    if meta.get("format") != fmt or meta.get("format_version") != version:
        raise HealgymError(f"{path}/{name}: format {meta.get('format')!r} "
                           f"v{meta.get('format_version')!r} is not {fmt!r} v{version}; {fix}")
    return meta

