"""RLlib agents (PPO, DQN) for healgym on Ray 2.60's new API stack, and their export as
portable policies that load without Ray.

- :mod:`agents.rllib.env`: the env RLlib builds (Dict observation with the action mask; the
  natively batched vector env when ``gym_env_vectorize_mode="vector_entry_point"``).
- :mod:`agents.rllib.modules`: action-masking RLModules for PPO and DQN.
- :mod:`agents.rllib.trainer`: the AlgorithmConfig from the Hydra config, the training loop
  (batched MLflow metrics, checkpoints, resume), Ray start-up or connection to a cluster.
- :mod:`agents.rllib.policy`: export of a trained RLModule (weights as ``.npz`` plus JSON
  metadata; no pickle) and :class:`RLlibPolicy`, the ``Policy`` protocol over it.
"""
