"""The Q-learning policy as an MLflow pyfunc model, logged as a "model from code".

``predict`` takes {"obs": (N, obs), "action_mask": (N, A)} and returns the greedy valid actions
(without the mask it refuses: :func:`healgym.policy.masked_input`). The Q-table and its
metadata are the model's artifact
``policy`` (the folder :meth:`QLearningAgent.save` writes; no pickle).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class QPolicyModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from agents.qlearning import QLearningAgent
        from agents.registry import pipeline_model

        path = context.artifacts["policy"]
        self.agent = QLearningAgent.load(path, pipeline_model(path))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # (no type hints: MLflow would read them as an input schema)
        from healgym.policy import masked_input

        obs, mask = masked_input(model_input, self.agent.q.shape[1])
        states = self.agent.disc.states(self.agent.model, obs)
        return self.agent.greedy(states, mask)

mlflow.models.set_model(QPolicyModel())
