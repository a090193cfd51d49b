"""The oracle: reads the true faults from ``info`` and the true healing matrix from the env.

An upper bound, not a deployable policy: no real operator sees ``info["faults"]``. For the oldest
active fault it takes the valid action with the best chance of healing it per second of action
time (ties: cheaper first), on the fault's stage for stage actions, and waits while an action is
in flight or nothing is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.policy import Decision
from healgym.sim import actions as act


class OracleAgent:
    name = "oracle"

    def __init__(self, env: Any) -> None:
        model = env.unwrapped.model
        self.stages = list(model.stages)
        self.actions = list(model.actions)
        self.healing = model.healing
        self.kinds = model.kinds
        self.cols = dict(model.fault_cols)
        self.in_flight_index = model.layout.ctx("action_in_flight")

    def reset(self) -> None:
        pass

    def score(self, action: act.Action, fault: str, stage: str) -> float:
        if action.stage >= 0 and self.stages[action.stage] != stage:
            return 0.0
        kind = self.kinds[action.kind]
        p = float(self.healing[action.kind, self.cols.get(fault, self.cols["unknown"])])
        return p / (kind.duration_s + 10.0) - 1e-6 * kind.cost

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        faults = info.get("faults") or []
        if not faults:
            return Decision(0, {"rule": "no fault"})
        if obs[self.in_flight_index] > 0.5:
            return Decision(0, {"rule": "an action is in flight"})
        fault, stage = faults[0]
        mask = info["action_mask"]
        best, best_score = 0, 0.0
        for a in self.actions[1:]:
            if not mask[a.index]:
                continue
            s = self.score(a, fault, stage)
            if s > best_score:
                best, best_score = a.index, s
        return Decision(best, {"fault": fault, "stage": stage, "score": best_score})
