"""The policy protocol lives in :mod:`healgym.policy` (``healgym`` never imports ``agents``);
these names stay importable from here."""

from healgym.policy import Decision, Policy, read_versioned_json, run_episode, valid_actions

__all__ = ["Decision", "Policy", "read_versioned_json", "run_episode", "valid_actions"]
