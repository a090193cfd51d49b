"""Agents that learn or follow recovery policies for healgym, and the baselines that keep them
honest. This release has the random baseline; Q-learning, RLlib agents, the runbook and the
oracle come next (see the issues)."""

from agents.random_agent import RandomAgent

__all__ = ["RandomAgent"]
