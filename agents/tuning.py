"""Tuning the runbook's thresholds on training episodes, so the baseline is a strong one.

Coordinate descent: for each rule in turn, try its threshold scaled by each factor of a grid and
keep the best by mean episode reward (the same objective the learners optimise), over a fixed set
of training seeds; repeat for a few passes. Seeded and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agents.evaluation import evaluate
from agents.runbook import RunbookAgent

GRID = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0)


def score(make_env: Callable[[], Any], agent: RunbookAgent, seeds: Sequence[int]) -> float:
    episodes = evaluate(make_env, lambda env: agent, seeds)
    return float(np.mean([e["total_reward"] for e in episodes]))


def tune_runbook(make_env: Callable[[], Any], agent: RunbookAgent, seeds: Sequence[int],
                 passes: int = 2, grid: Sequence[float] = GRID
                 ) -> tuple[RunbookAgent, dict[str, Any]]:
    """The runbook with tuned thresholds, and a report of what was tried."""
    thresholds = {r.name: r.threshold for r in agent.rules}
    base = dict(thresholds)
    best = score(make_env, agent, seeds)
    history = [{"thresholds": dict(thresholds), "reward": best}]
    for _ in range(passes):
        improved = False
        for rule in agent.rules:
            for f in grid:
                trial = dict(thresholds)
                trial[rule.name] = base[rule.name] * f
                if trial[rule.name] == thresholds[rule.name]:
                    continue
                s = score(make_env, agent.with_thresholds(trial), seeds)
                history.append({"thresholds": trial, "reward": s})
                if s > best:
                    best, thresholds, improved = s, trial, True
        if not improved:
            break
    tuned = agent.with_thresholds(thresholds)
    tuned.name = f"{agent.name} (tuned)"
    return tuned, {"reward": best, "thresholds": thresholds, "tried": len(history),
                   "default_reward": history[0]["reward"]}
