"""The Q-learning policy as an MLflow pyfunc model, logged as a "model from code".

``predict`` takes observations (an (N, obs) array, or a dict {"obs": (N, obs), "action_mask":
(N, A)}) and returns the greedy actions. The Q-table and its metadata are the model's artifact
``policy`` (the folder :meth:`QLearningAgent.save` writes; no pickle).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class QPolicyModel(PythonModel):
    def load_context(self, context: Any) -> None:
        import json
        from pathlib import Path

        import healgym  # noqa: F401
        from agents.qlearning import QLearningAgent
        from healgym.envs.pipeline_heal import PipelineHealEnv

        path = Path(context.artifacts["policy"])
        meta = json.loads((path / "policy.json").read_text())
        kw = dict((meta.get("hydra_config") or {}).get("telemetry") or {})
        env = PipelineHealEnv(dataset=kw.get("dataset"), stages=meta["stages"])
        self.agent = QLearningAgent.load(path, env.model)

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # (no type hints: MLflow would read them as an input schema)
        if isinstance(model_input, dict):
            obs = np.asarray(model_input["obs"], dtype=np.float32)
            mask = np.asarray(model_input.get("action_mask", np.ones(
                (len(obs), self.agent.q.shape[1]))))
        else:
            obs = np.asarray(model_input, dtype=np.float32)
            mask = np.ones((len(obs), self.agent.q.shape[1]))
        states = self.agent.disc.states(self.agent.model, obs)
        return self.agent.greedy(states, mask)


mlflow.models.set_model(QPolicyModel())
