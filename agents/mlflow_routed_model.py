"""Router + specialists (:mod:`agents.specialists`) as an MLflow pyfunc model, logged as a
"model from code".

``predict`` takes {"obs": (N, obs), "action_mask": (N, A)} and, optionally, "history":
(N, W, obs), each row's earlier observations, oldest first (the router diagnoses a window of
them). Each row is one pipeline; without a history its window holds only ``obs``. Returns the
actions. The artifact ``policy`` is the folder :meth:`RoutedPolicy.save` writes (JSON and
arrays; nothing unpickled).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class RoutedPolicyModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from agents.registry import pipeline_model
        from agents.specialists import load

        path = context.artifacts["policy"]
        self.policy = load(path, pipeline_model(path))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # (no type hints: MLflow would read them as an input schema)
        import numpy as np

        from healgym.policy import masked_input

        obs, mask = masked_input(model_input, len(self.policy.model.action_names))
        self.policy.begin_batch(len(obs))
        history = model_input.get("history")
        if history is not None:
            history = np.asarray(history, dtype=np.float32)
            for t in range(history.shape[1]):
                self.policy.route(history[:, t])
        return self.policy.act(obs, mask)

mlflow.models.set_model(RoutedPolicyModel())
