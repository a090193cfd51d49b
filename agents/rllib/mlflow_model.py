"""An exported RLlib policy (PPO or DQN) as an MLflow pyfunc model, logged as a "model from
code".

``predict`` takes a dict {"obs": (N, obs), "action_mask": (N, A)} (or just observations: every
action allowed) and returns the greedy valid actions. The artifact ``policy`` is the folder
:func:`agents.rllib.policy.export` writes (weights as .npz, metadata as JSON; never unpickled).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class RLlibPolicyModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from agents.rllib.policy import RLlibPolicy

        self.policy = RLlibPolicy.load(context.artifacts["policy"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # (no type hints: MLflow would read them as an input schema)
        n_actions = int(self.policy.meta["n_actions"])
        if isinstance(model_input, dict):
            obs = np.atleast_2d(np.asarray(model_input["obs"], dtype=np.float32))
            mask = np.asarray(model_input.get("action_mask", np.ones((len(obs), n_actions))))
        else:
            obs = np.atleast_2d(np.asarray(model_input, dtype=np.float32))
            mask = np.ones((len(obs), n_actions))
        return self.policy.act(obs, np.atleast_2d(mask))


mlflow.models.set_model(RLlibPolicyModel())
