"""Shared pieces for the serving tests: a scripted metrics source and policy."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agents.policy import Decision
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.serving.observe import PIPELINE, Sample
from healgym.sim.faults import METRICS


class DictSource:
    """Serves whatever the test puts in ``values`` (signal, stage) -> value, measured now."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.values: dict[tuple[str, str | None], float] = {}
        self.age_s = 0.0
        self.t: float | None = None  # the measurement time; None: now
        self.healthy()

    def healthy(self) -> None:
        for i, stage in enumerate(self.model.stages):
            for j, metric in enumerate(self.model.metrics):
                self.values[(metric, stage)] = float(self.model.median[i, j])
            self.values[("replicas", stage)] = 2.0
        for k in PIPELINE:
            self.values[(k, None)] = {"accuracy": 0.95, "cost_factor": 1.0}.get(k, 0.0)

    def crash(self, stage: str = "serve") -> None:
        self.values[("throughput_rps", stage)] = 0.0
        self.values[("error_rate", stage)] = 1.0
        self.values[("throughput_rps", self.model.stages[-1])] = 0.0

    def read(self, stages: list[str]) -> dict[tuple[str, str | None], Sample]:
        t = (time.time() if self.t is None else self.t) - self.age_s
        return {k: Sample(v, t) for k, v in self.values.items()}


class RestartOnErrors:
    """Restarts the stage with the highest error rate when any exceeds 0.5."""

    name = "scripted"

    def __init__(self, model: Any) -> None:
        self.model = model

    def reset(self) -> None:
        pass

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        S, M = self.model.n_stages, len(METRICS)
        z = obs[: S * M].reshape(S, M)
        err = METRICS.index("error_rate")
        worst = int(z[:, err].argmax())
        if z[worst, err] > 10:
            a = self.model.action_names.index(f"restart_{self.model.stages[worst]}")
            if info["action_mask"][a]:
                return Decision(a, {"rule": "errors", "confidence": 0.9})
        return Decision(0, {"rule": "healthy"})


def model() -> Any:
    return PipelineHealEnv().model
