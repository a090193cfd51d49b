"""The oracle: reads the true faults from ``info`` and the true healing matrix from the env.

An upper bound, not a deployable policy: no real operator sees ``info["faults"]``. Over every
active fault it takes the valid action with the best expected number of faults healed per second
of action time plus side-effect time (ties: cheaper first); a stage action counts the faults on
its stage, a pipeline action all of them. Side-effect time: shedding load charges 30 % of an SLO
violation for its 600 s, which is 180 s of full violation; a restart's downtime is its own
duration. It waits while an action is in flight or nothing is wrong.

It knows the rules that make healing state-dependent (``FaultSpec``): an action a fault on the
target stage ``blocks`` heals nothing, and one that heals a fault only after its ramp counts
for nothing before the ramp is over (the oracle times each fault from the step it first sees
it: it is told every fault at every step). A fault an action only relieves is not healed by it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.policy import Decision
from healgym.sim import actions as act
from healgym.sim.faults import BY_NAME


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
        self.dt = float(model.dt)
        self.t = self.now = 0.0
        self.first_seen: dict[tuple[str, str], float] = {}

    def reset(self) -> None:
        self.t = self.now = 0.0
        self.first_seen = {}

    def side_s(self, kind: act.ActionKind) -> float:
        """Seconds of full SLO violation the action's side effect costs."""
        return act.SHED_SECONDS * act.SHED_SHARE if kind.effect == act.SHED else 0.0

    def score(self, action: act.Action, faults: list[tuple[str, str]]) -> float:
        kind = self.kinds[action.kind]
        healed = 0.0
        targets = [(f, s) for f, s in faults
                   if action.stage < 0 or self.stages[action.stage] == s]
        if any(kind.name in getattr(BY_NAME.get(f), "blocks", ()) for f, _ in targets):
            return 0.0  # e.g. a restart under a surge heals nothing
        for fault, stage in targets:
            spec = BY_NAME.get(fault)
            if spec is not None and kind.name in spec.heals_after_ramp and \
                    self.now - self.first_seen.get((fault, stage), self.now) < spec.ramp_s:
                continue  # a retrain on data still drifting does not hold
            healed += float(self.healing[action.kind, self.cols.get(fault, self.cols["unknown"])])
        if healed == 0.0:
            return 0.0
        return healed / (kind.duration_s + 10.0 + self.side_s(kind)) - 1e-6 * kind.cost

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        faults = info.get("faults") or []
        self.now, self.t = self.t, self.t + self.dt  # the time of this observation
        for f in faults:
            self.first_seen.setdefault(tuple(f), self.now)  # type: ignore[arg-type]
        if not faults:
            return Decision(0, {"rule": "no fault"})
        if obs[self.in_flight_index] > 0.5:
            return Decision(0, {"rule": "an action is in flight"})
        mask = info["action_mask"]
        best, best_score = 0, 0.0
        for a in self.actions[1:]:
            if not mask[a.index]:
                continue
            s = self.score(a, faults)
            if s > best_score:
                best, best_score = a.index, s
        return Decision(best, {"faults": [list(f) for f in faults], "score": best_score})
