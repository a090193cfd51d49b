"""The serving adapter run against the simulator: a rehearsal of production, fully logged.

:func:`simulate_serving` drives the real :class:`~healgym.serving.adapter.Adapter` (its
observer, guardrails, human API and decision log) with the simulator standing in for the
infrastructure: :class:`SimPipeline` is both the metrics source (the env's observation, decoded
to dashboard units) and the actuator (an executed action is the env's next action). Time is the
simulator's: decision ``i`` is logged at ``start + i * step_seconds``.

An ``operator`` callback plays the human: after each decision it may approve, reject or
override through the adapter's own API. :class:`OracleOperator` overrides whenever the policy
does something other than what the oracle (which sees the true faults) would do during an
incident: it produces the override-rich logs the analyst tools and fine-tuning learn from, and
the notebooks and tests run on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healgym.errors import CannotAct
from healgym.serving.actuators import Resilient
from healgym.serving.adapter import Adapter
from healgym.serving.config import ActuatorConf, ServeConf, SourceConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.observe import PIPELINE, Key, Observer, Sample
from healgym.sim.faults import METRICS
from healgym.sim.signals import decode


@dataclass
class SimPipeline:
    """The simulator as metrics source and actuator for one episode."""

    env: Any  # a PipelineHealEnv (or a wrapper of one)
    now: float = 0.0
    queued: int = 0
    obs: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    rewards: list[float] = field(default_factory=list)

    @property
    def model(self) -> Any:
        return self.env.unwrapped.model

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> None:
        self.obs, self.info = self.env.reset(seed=seed, options=options)
        self.queued, self.done, self.rewards = 0, False, []

    def advance(self) -> None:
        """One env step with the action the adapter executed since the last one (else noop)."""
        a, self.queued = self.queued, 0
        self.obs, r, term, trunc, self.info = self.env.step(a)
        self.rewards.append(float(r))
        self.done = bool(term or trunc)

    @property
    def can_rollback(self) -> bool:
        if self.obs is None:
            raise RuntimeError("SimPipeline: reset() before reading it")
        return bool(self.obs[self.model.layout.ctx("can_rollback")] > 0.5)

    # the Source protocol
    def read(self, stages: list[str]) -> dict[Key, Sample]:
        d = decode(self.model, np.asarray(self.obs))
        out: dict[Key, Sample] = {}
        for s in stages:
            for m in METRICS:
                out[(m, s)] = Sample(d[f"{s}.{m}"], self.now)
            out[("replicas", s)] = Sample(d[f"{s}.replicas"], self.now)
        for k in PIPELINE:
            out[(k, None)] = Sample(d[k], self.now)
        if d["since_deploy_h"] < 1.0:  # what a deploy annotation tells a real adapter
            out[("last_deploy_unix_s", None)] = Sample(self.now - d["since_deploy_h"] * 3600.0,
                                                       self.now)
        return out

    # the Actuator protocol
    def execute(self, kind: str, target: str, key: str) -> str:
        a = self.model.action_index(kind, target)
        action = self.model.action_names[a]
        mask = self.info.get("action_mask")
        if mask is not None and not mask[a]:
            # as a real actuator refuses (no older model version, an action still running)
            raise CannotAct(f"the simulator cannot {action} now (another action is in "
                            "flight, or the action is impossible in this state)")
        self.queued = a
        return f"simulated {action} on {target}"


Operator = Callable[[Adapter, str, SimPipeline, float], None]


class OracleOperator:
    """A human who knows what is really wrong (the env's true faults) and overrides the policy
    when, during an incident, it proposes something other than the oracle's action; pending
    approvals the oracle agrees with are approved, others rejected."""

    def __init__(self, env: Any, name: str = "oracle-operator") -> None:
        from healgym.policy import baseline

        self.oracle = baseline("oracle", env)
        self.name = name
        self.overrides = 0

    def __call__(self, adapter: Adapter, did: str, pipe: SimPipeline, now: float) -> None:
        rec = adapter.log.record(did)
        if rec is None or rec["status"] not in ("proposed", "shadow") or \
                rec["proposed_action"] is None:
            return
        want = adapter.names[self.oracle.decide(np.asarray(pipe.obs), pipe.info).action]
        proposed = rec["proposed_action"]
        pending = did in adapter.pending
        if want == proposed:
            if pending:
                adapter.approve(did, self.name, "agrees with the diagnosis", now=now)
            return
        if want == "noop":
            if pending:
                adapter.reject(did, self.name, "nothing to do / an action is in flight",
                               now=now)
            return
        fault = pipe.info.get("faults") or [("?", "?")]
        adapter.override(did, self.name, want, f"the fault is {fault[0][0]} on {fault[0][1]}",
                         now=now)
        self.overrides += 1


def sim_conf(model: Any, **overrides: Any) -> ServeConf:
    """A serve config for the simulator: every action has an actuator (the simulator),
    guardrails off unless given."""
    base: dict[str, Any] = {
        "stages": list(model.stages), "interval_s": float(model.dt),
        "source": SourceConf(kind="prometheus", url="sim://", max_age_s=1e9),
        "guard": {"cooldown_s": 0.0, "rate_limit": 10_000, "hourly_budget": 10**9,
                  "cost_budget_per_hour": None, "approval_risk": "never"},
        "verify_deadline_s": 1e9,
        # the simulated humans act in the loop's own time: no background threads
        "human": {"background": False},
    }
    base.update(overrides)
    return ServeConf(**base)


def simulate_serving(env: Any, policy: Any, log: DecisionLog | str, *, seed: int = 0,
                     options: dict[str, Any] | None = None, steps: int | None = None,
                     operator: Operator | None = None, conf: ServeConf | None = None,
                     start: float | None = None, policy_version: str = "sim"
                     ) -> dict[str, Any]:
    """Run ``policy`` behind the adapter on one simulated episode, logging every decision to
    ``log``; returns the episode's metrics, the number of decisions and the env's rewards
    (``rewards[i]``: the step after decision ``i``)."""
    log = DecisionLog(log) if isinstance(log, str) else log
    pipe = SimPipeline(env)
    model = pipe.model
    pipe.reset(seed, options)
    conf = conf or sim_conf(model)
    names = model.action_names[1:]
    actuator = Resilient(pipe, ActuatorConf(type="log", actions=list(names), retries=1,
                                            timeout_s=60.0, breaker_failures=10**9))
    t0 = time.time() if start is None else start
    adapter = Adapter(conf, policy, model, log, Observer(model, conf.source, source=pipe),
                      actuators=dict.fromkeys(names, actuator), policy_version=policy_version,
                      started_at=t0)
    if hasattr(policy, "reset"):
        policy.reset()
    n = 0
    try:
        while not pipe.done and (steps is None or n < steps):
            pipe.now = t0 + n * model.dt
            if n:
                pipe.advance()
                if pipe.done:
                    break
            # what a registry query would tell a real adapter: is there an older version?
            adapter.state.can_rollback = pipe.can_rollback
            did = adapter.step(pipe.now)
            if operator is not None:
                operator(adapter, did, pipe, pipe.now)
            n += 1
        if pipe.done:  # close an incident the episode's last step resolved
            adapter.step(t0 + n * model.dt)
            n += 1
    finally:
        adapter.close()
    return {"decisions": n, "reward": float(np.sum(pipe.rewards)), "rewards": pipe.rewards,
            "episode_metrics": pipe.info.get("episode_metrics")}
