"""An exported RLlib policy (PPO or DQN) as an MLflow pyfunc model, logged as a "model from
code".

``predict`` takes a dict {"obs": (N, obs), "action_mask": (N, A)} and returns the greedy valid
actions (without the mask it refuses: :func:`healgym.policy.masked_input`). The artifact
``policy`` is the folder
:func:`agents.rllib.policy.export` writes (weights as .npz, metadata as JSON; never unpickled).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class RLlibPolicyModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from agents.rllib.policy import RLlibPolicy

        self.policy = RLlibPolicy.load(context.artifacts["policy"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # (no type hints: MLflow would read them as an input schema)
        from healgym.policy import masked_input

        obs, mask = masked_input(model_input, int(self.policy.meta["n_actions"]))
        return self.policy.act(obs, mask)

mlflow.models.set_model(RLlibPolicyModel())
