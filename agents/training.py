"""Training, one class per agent schema: each schema in :mod:`agents.config` names its class as
``_target_``, and ``experiments/train.py`` instantiates ``cfg.agent`` and calls ``train``. A new
agent is one schema, one class here and one ``configs/agent/<name>.yaml``; no entry point
branches on the agent's kind.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import OmegaConf

import healgym

ROOT = Path(__file__).resolve().parents[1]


class Trainer:
    """``Trainer(**schema fields)``; ``train(cfg, env_kwargs, out, config) -> score`` trains,
    saves under ``out``, logs to the active MLflow run and returns the run's score (the mean
    training reward or return of the last tenth, for sweepers)."""

    #: whether ``experiments/train.py`` logs ``out`` as the run's policy artifact
    logs_own_artifacts = False

    def __init__(self, **conf: Any) -> None:
        conf.pop("_target_", None)
        self.conf = OmegaConf.create(conf)

    @property
    def kind(self) -> str:
        return str(self.conf.kind)

    def train(self, cfg: Any, kw: dict[str, Any], out: Path, config: dict[str, Any]) -> float:
        raise NotImplementedError


class QLearningTrainer(Trainer):
    def fit(self, cfg: Any, kw: dict[str, Any]) -> tuple[Any, Any]:
        """Train a Q-table on the batched env: (agent, its training log)."""
        from agents.qlearning import DEFAULT_FEATURES, HISTORY_FEATURES, QConfig, QLearningAgent

        a = self.conf
        venv = gym.make_vec(healgym.ENV_ID, num_envs=a.num_envs, **kw)
        features = DEFAULT_FEATURES + (HISTORY_FEATURES if a.get("history_features") else ())
        agent = QLearningAgent(venv.unwrapped.model, features=features, config=QConfig(
            alpha=a.alpha, gamma=a.gamma, epsilon=a.epsilon, epsilon_start=a.epsilon_start,
            decay_steps=max(a.steps * 2 // 3, 1), seed=cfg.seed,
            pessimistic=bool(a.get("pessimistic", False))))
        log = agent.train(venv, a.steps, seed=cfg.seed, progress=sys.stderr.isatty())
        return agent, log

    def train(self, cfg: Any, kw: dict[str, Any], out: Path, config: dict[str, Any]) -> float:
        import mlflow

        from agents.registry import MODEL_CODE, MODEL_NAME, register_trained

        t0 = time.perf_counter()
        agent, log = self.fit(cfg, kw)
        for i, step in enumerate(log.steps):
            mlflow.log_metrics({"charts/mean_reward": log.mean_reward[i],
                                "charts/epsilon": log.epsilon[i],
                                "charts/explore_share": log.explore_share[i]}, step=step)
        mlflow.log_metric("perf/train_seconds", time.perf_counter() - t0)
        agent.save(out, extra={"hydra_config": config, "steps": self.conf.steps})
        tail = log.mean_reward[-max(len(log.mean_reward) // 10, 1):]
        score = float(np.mean(tail)) if tail else float("nan")
        mlflow.log_artifacts(str(out), artifact_path="policy")  # promote.py --run can register
        print(register_trained(cfg, out, MODEL_NAME, MODEL_CODE))
        return score


class RunbookTrainer(Trainer):
    def tuned(self, make_env: Any) -> tuple[Any, dict[str, Any]]:
        """The runbook (tuned if ``tune``) and the tuning report."""
        from agents.runbook import RunbookAgent
        from agents.tuning import tune_runbook

        agent = RunbookAgent(make_env(), ROOT / self.conf.runbook)
        report: dict[str, Any] = {"thresholds": {r.name: r.threshold for r in agent.rules}}
        if self.conf.tune:
            agent, report = tune_runbook(make_env, agent, range(self.conf.tune_seeds))
        return agent, report

    def train(self, cfg: Any, kw: dict[str, Any], out: Path, config: dict[str, Any]) -> float:
        import mlflow

        def make_env() -> gym.Env:
            return gym.make(healgym.ENV_ID, **kw)

        _, report = self.tuned(make_env)
        if "default_reward" in report:
            mlflow.log_metric("tuning/default_reward", report["default_reward"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "runbook_thresholds.json").write_text(json.dumps(report, indent=2))
        return float(report.get("reward", float("nan")))


class RLlibTrainer(Trainer):
    """PPO or DQN: train, checkpoint, export the policy, register it."""

    logs_own_artifacts = True

    def train(self, cfg: Any, kw: dict[str, Any], out: Path, config: dict[str, Any]) -> float:
        import mlflow

        from agents.registry import RLLIB_MODEL_CODE, model_name, register_trained
        from agents.rllib import trainer
        from agents.rllib.policy import export
        from healgym.sim.model import build_model

        trainer.init_ray(cfg.ray.address, cfg.ray.num_cpus, dict(cfg.ray.runtime_env))
        run = mlflow.active_run()
        algo, summary = trainer.train(self.conf, kw, out, seed=cfg.seed,
                                      run_id=run.info.run_id if run else None,
                                      progress=sys.stderr.isatty())
        try:
            policy_dir = export(algo.get_module(), self.kind, build_model(**kw), out / "policy",
                                extra={"hydra_config": config, "iterations": summary.iterations,
                                       "env_steps": summary.env_steps,
                                       "checkpoint": summary.checkpoint})
        finally:
            algo.stop()
        mlflow.log_metrics({"perf/train_seconds": summary.seconds,
                            "perf/env_steps_per_s": summary.env_steps / max(summary.seconds,
                                                                           1e-9)})
        mlflow.log_artifacts(str(policy_dir), artifact_path="policy")
        name = model_name(self.kind)
        registered = register_trained(cfg, policy_dir, name, RLLIB_MODEL_CODE)
        returns = [r for r in summary.returns if np.isfinite(r)]
        tail = returns[-max(len(returns) // 10, 1):]
        score = float(np.mean(tail)) if tail else float("nan")
        first = returns[0] if returns else float("nan")
        print(f"{self.kind}: {summary.iterations} iterations, {summary.env_steps} env steps in "
              f"{summary.seconds:.0f} s; episode return {first:.1f} (first) -> {score:.1f} (last "
              f"tenth)\ncheckpoint {summary.checkpoint} (resume: agent.resume_from=...)\n"
              f"policy {policy_dir}; {registered}")
        return score


class SpecialistsTrainer(Trainer):
    """Router + specialists (:mod:`agents.specialists`): the router's diagnoser on labelled
    windows, then one specialist per family on episodes of that family's faults only."""

    def diagnoser(self, cfg: Any, kw: dict[str, Any], acting: Any = None,
                  data: Any = None) -> Any:
        """The forest on labelled windows of episodes where no policy acts and where the expert
        runbook acts, in turn; with ``acting`` (the composite so far), also of episodes it
        plays, so the router learns the observations its own specialists cause (DAgger's
        idea). Returns (forest, the windows it read)."""
        from agents.diagnosis import ForestDiagnoser, build_dataset, concat
        from agents.runbook import RunbookAgent

        def make_env() -> gym.Env:
            return gym.make(healgym.ENV_ID, **kw)

        a = self.conf
        n = int(a.diagnoser_episodes)
        start = 1_000 * int(cfg.seed)  # apart from evaluation's held-out seeds (10000..)
        if data is None:
            expert = RunbookAgent(make_env(), ROOT / cfg.runbook.expert)
            data = build_dataset(make_env, range(start, start + n), int(a.window),
                                 policy=[None, expert], healthy_every=int(a.healthy_every))
        if acting is not None:
            seeds = range(start + n, start + 2 * n)
            data = concat(data, build_dataset(make_env, seeds, int(a.window), policy=acting,
                                              healthy_every=int(a.healthy_every)))
        forest = ForestDiagnoser(int(a.diagnoser_trees), int(a.get("diagnoser_min_leaf", 8)),
                                 seed=int(cfg.seed))
        forest.fit(data)
        return forest.export(), data

    def fit(self, cfg: Any, kw: dict[str, Any], out: Path | None = None) -> Any:
        """The composite policy (RLlib specialists are exported under ``out``)."""
        from agents.specialists import (
            RoutedPolicy,
            RouterConf,
            check_families,
            default_families,
            family_chaos,
        )
        from healgym.errors import ConfigError
        from healgym.sim.model import build_model

        a = self.conf
        fams: Any = a.families
        given: Any = OmegaConf.to_container(fams) if OmegaConf.is_config(fams) else fams
        families = check_families(given or default_families())
        router = RouterConf(window=int(a.window), min_confidence=float(a.min_confidence),
                            low_confidence=str(a.low_confidence),
                            switch_after=int(a.switch_after),
                            healthy=str(a.get("healthy", "noop")))
        t0 = time.perf_counter()
        forest, data = self.diagnoser(cfg, kw)
        self.timings = {"diagnoser_s": time.perf_counter() - t0}
        chaos = dict(kw.get("chaos") or {})
        specs: dict[str, Any] = {}
        if a.specialist == "qlearning":
            q = QLearningTrainer(**OmegaConf.to_container(a.qlearning))  # type: ignore[arg-type]
            tails = []
            for fam, faults in families.items():
                t1 = time.perf_counter()
                specs[fam], log = q.fit(cfg, {**kw, "chaos": family_chaos(chaos, faults)})
                self.timings[f"{fam}_s"] = time.perf_counter() - t1
                tail = log.mean_reward[-max(len(log.mean_reward) // 10, 1):]
                if tail:
                    tails.append(float(np.mean(tail)))
            self.score = float(np.mean(tails)) if tails else float("nan")
        elif a.specialist == "ppo":
            from agents.rllib.multiagent import train_specialists

            if out is None:
                raise ValueError("PPO specialists are exported under an output folder")
            specs = train_specialists(a.ppo, kw, families, out / "specialists", cfg)
        else:
            raise ConfigError(f"agent.specialist = {a.specialist!r}: choose qlearning or ppo")
        model = build_model(**kw)
        policy = RoutedPolicy(model, forest, specs, families, router)
        if a.get("on_policy_diagnoser", True):
            t1 = time.perf_counter()
            forest, data = self.diagnoser(cfg, kw, acting=policy, data=data)
            policy = RoutedPolicy(model, forest, specs, families, router)
            self.timings["diagnoser_on_policy_s"] = time.perf_counter() - t1
        self.timings["diagnoser_rows"] = len(data)
        return policy

    def train(self, cfg: Any, kw: dict[str, Any], out: Path, config: dict[str, Any]) -> float:
        import mlflow

        from agents.registry import ROUTED_MODEL_CODE, model_name, register_trained

        t0 = time.perf_counter()
        policy = self.fit(cfg, kw, out)
        mlflow.log_metrics({f"perf/{k}": float(v) for k, v in self.timings.items()})
        mlflow.log_metric("perf/train_seconds", time.perf_counter() - t0)
        policy.save(out, extra={"hydra_config": config, "timings": self.timings})
        mlflow.log_artifacts(str(out), artifact_path="policy")
        print(register_trained(cfg, out, model_name("specialists"), ROUTED_MODEL_CODE))
        print(f"specialists: {', '.join(policy.families)}; the diagnoser read "
              f"{self.timings['diagnoser_rows']} windows; "
              f"{time.perf_counter() - t0:.0f} s")
        # for sweepers: the specialists' mean training reward (last tenth), Q-learning's score
        return float(getattr(self, "score", float("nan")))
