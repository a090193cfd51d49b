"""healgym as an RLlib ``MultiAgentEnv``: one agent per failure family (issue 18), trained with
RLlib's multi-agent API as the specialists of a router + specialists policy.

The view is turn-based over one pipeline. At each step the agent whose family holds the newest
active library fault (from the env's ground truth: in training the route is the truth, so each
specialist learns on its own family's incidents) observes the
pipeline (the observation with the action mask appended, as the single-agent modules see it)
and acts; its reward is that step's reward. While no fault is active nobody is asked: the
pipeline runs on noop and those steps' rewards go to the agent that acted last (a fix that
holds is rewarded on the quiet steps it buys). When the episode ends, every agent that acted
gets the last observation.

:func:`train_specialists` trains one masked PPO module per family (a policy mapping
``agent id -> module id``, the family name) and exports each as a portable RLlib policy
(:func:`agents.rllib.policy.export`: weights as ``.npz``), which the composite loads as its
specialists.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:  # the env class needs Ray; the rest of healgym does not
    from ray.rllib.env.multi_agent_env import MultiAgentEnv
except ImportError:  # pragma: no cover - ray is a core dependency
    MultiAgentEnv = object  # type: ignore[assignment,misc]

MA_ENV = "healgym-specialists"


class SpecialistsMultiAgentEnv(MultiAgentEnv):  # type: ignore[misc]
    """``config``: healgym keyword arguments plus ``families`` ({family: [fault, ...]}) and
    ``reward_scale`` (what the learners see; ``episode_metrics`` stay in healgym's units)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        from agents.rllib.env import masked_space
        from healgym.envs.pipeline_heal import PipelineHealEnv

        kw = dict(config or {})
        families = kw.pop("families")
        self.scale = float(kw.pop("reward_scale", 1.0))
        self.env = PipelineHealEnv(**kw)
        self.family_of = {f: fam for fam, faults in families.items() for f in faults}
        self.agents = self.possible_agents = list(families)
        n = int(self.env.action_space.n)  # type: ignore[attr-defined]
        space = masked_space(self.env.observation_space, n)
        self.observation_spaces = dict.fromkeys(self.agents, space)
        self.action_spaces = dict.fromkeys(self.agents, self.env.action_space)
        self._acting: str | None = None
        self._last: str | None = None
        self._acted: set[str] = set()

    def _owner(self, info: dict[str, Any]) -> str | None:
        """The family of the newest active library fault (the change just seen: a crash
        during a drift goes to the infra agent; the drift's agent gets it back after)."""
        owner = None
        for fault, _ in info.get("faults") or []:
            if not fault.startswith("_") and fault in self.family_of:
                owner = self.family_of[fault]
        return owner

    @staticmethod
    def _obs(obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=np.float32),
                               np.asarray(info["action_mask"], dtype=np.float32)])

    def _advance(self, obs: np.ndarray, info: dict[str, Any], reward: float, done: bool,
                 trunc: bool) -> tuple[Any, ...]:
        """Run noop through quiet steps; return the next turn (or the episode's end)."""
        pending = reward
        while not (done or trunc) and self._owner(info) is None:
            obs, r, done, trunc, info = self.env.step(0)
            pending += float(r) * self.scale
        rewards: dict[str, float] = {}
        if self._last is not None:
            rewards[self._last] = pending
        self._info = info
        if done or trunc:
            final = self._obs(obs, info)
            seen = self._acted or ({self._last} if self._last else set())
            out = {a: final for a in seen}
            return (out, {a: rewards.get(a, 0.0) for a in seen},
                    {"__all__": bool(done)}, {"__all__": bool(trunc)},
                    {a: {"episode_metrics": info.get("episode_metrics")} for a in seen})
        self._acting = self._owner(info)
        return ({self._acting: self._obs(obs, info)}, rewards, {"__all__": False},
                {"__all__": False}, {})

    def reset(self, *, seed: int | None = None,  # type: ignore[override]
              options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._acting = self._last = None
        self._acted = set()
        out, _, done, trunc, _ = self._advance(obs, info, 0.0, False, False)
        if done["__all__"] or trunc["__all__"]:  # a whole episode with no fault: start over
            return self.reset(seed=None if seed is None else seed + 1, options=options)
        return out, {}

    def step(self, action_dict: dict[str, Any]) -> tuple[Any, ...]:  # type: ignore[override]
        agent = self._acting
        assert agent is not None and agent in action_dict, (agent, list(action_dict))
        obs, r, done, trunc, info = self.env.step(int(action_dict[agent]))
        self._last = agent
        self._acted.add(agent)
        return self._advance(obs, info, float(r) * self.scale, done, trunc)


def register() -> None:
    from ray.tune.registry import register_env

    register_env(MA_ENV, lambda config: SpecialistsMultiAgentEnv(dict(config)))


def build_config(agent: Any, env_kwargs: dict[str, Any], families: dict[str, list[str]],
                 seed: int) -> Any:
    """PPO over the multi-agent view: one masked PPO module per family, agent id -> module."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.rllib import trainer
    from agents.rllib.modules import module_class

    register()
    config = trainer.build_config(agent, {}, seed, env=MA_ENV)
    config = config.environment(MA_ENV, env_config={
        **env_kwargs, "families": families, "reward_scale": float(agent.reward_scale)})
    # RLlib vectorizes multi-agent envs synchronously only: a few scalar pipelines per runner
    config = config.env_runners(num_envs_per_env_runner=min(int(agent.num_envs_per_env_runner),
                                                            8),
                                gym_env_vectorize_mode="sync")
    model_config = {"fcnet_hiddens": list(agent.hidden), "fcnet_activation": "relu"}
    config = config.rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={
        fam: RLModuleSpec(module_class=module_class("ppo"), model_config=model_config)
        for fam in families}))
    return config.multi_agent(policies=set(families),
                              policy_mapping_fn=lambda agent_id, *a, **k: agent_id)


def train_specialists(agent: Any, env_kwargs: dict[str, Any], families: dict[str, list[str]],
                      out: Path, cfg: Any) -> dict[str, Any]:
    """Train the specialists with RLlib's multi-agent PPO for ``agent.iterations`` and export
    each family's module under ``out/<family>``; returns {family: RLlibPolicy}."""
    from agents.rllib import trainer
    from agents.rllib.policy import RLlibPolicy, export
    from healgym.sim.model import build_model

    trainer.init_ray(cfg.get("ray", {}).get("address"), cfg.get("ray", {}).get("num_cpus"))
    kw = {k: v for k, v in env_kwargs.items() if k != "num_envs"}
    algo = build_config(agent, kw, families, int(cfg.seed)).build_algo()
    t0 = time.perf_counter()
    try:
        for it in range(int(agent.iterations)):
            result = algo.train()
            if (it + 1) % max(int(agent.iterations) // 10, 1) == 0:
                steps = result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0)
                print(f"[specialists ppo] iteration {it + 1}/{agent.iterations}: {steps} env "
                      f"steps, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        model = build_model(**kw)
        specs = {}
        for fam in families:
            where = export(algo.get_module(fam), "ppo", model, out / fam,
                           extra={"family": fam, "iterations": int(agent.iterations),
                                  "multi_agent": True}, ray_checkpoint=False)
            specs[fam] = RLlibPolicy.load(where, model)
    finally:
        algo.stop()
    return specs
