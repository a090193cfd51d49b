"""Agents that learn or follow recovery policies for healgym, and the baselines that keep them
honest: tabular Q-learning (:mod:`agents.qlearning`), PPO and DQN on Ray RLlib
(:mod:`agents.rllib`), the YAML runbook and its tuner (:mod:`agents.runbook`,
:mod:`agents.tuning`), the oracle, random and no-op baselines, the evaluation harness
(:mod:`agents.evaluation`) and learning from the decision log (:mod:`agents.offline`).

Agents implement :class:`healgym.policy.Policy`; their saved formats and the baselines plug into
``healgym`` through entry points (``pyproject.toml``), so ``healgym`` never imports this package.
"""

from agents.random_agent import RandomAgent

__all__ = ["RandomAgent"]
