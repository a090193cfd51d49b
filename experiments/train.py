"""Train an agent from the Hydra config, tracked in MLflow.

    python experiments/train.py agent=qlearning agent.steps=20000 seed=0
    python experiments/train.py agent=runbook              # tunes the runbook's thresholds
    python experiments/train.py agent=ppo                  # RLlib PPO (or agent=dqn)
    python experiments/train.py agent=ppo agent.resume_from=<run>/checkpoints/iter_00050
    python experiments/train.py agent=ppo ray.address=auto agent.num_env_runners=8  # a cluster
    python experiments/train.py -m agent.alpha=0.05,0.1,0.2 seed=0,1,2
    python experiments/train.py telemetry.dataset=data/nezha-ob chaos.scenario=FILE.yaml

Returns (and logs) the mean training reward of the last tenth of training, for sweepers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healgym  # noqa: E402
from agents.config import TrainConf, check_keys, env_kwargs, register  # noqa: E402
from agents.qlearning import QConfig, QLearningAgent  # noqa: E402
from agents.registry import (  # noqa: E402
    MODEL_NAME,
    RLLIB_MODEL_CODE,
    log_and_register,
    model_name,
)
from agents.runbook import RunbookAgent  # noqa: E402
from agents.tracking import mlflow_run  # noqa: E402
from agents.tuning import tune_runbook  # noqa: E402
from healgym.errors import user_errors  # noqa: E402

register()


def train_rllib(cfg: Any, kw: dict[str, Any], out: Path, config: dict[str, Any]) -> float:
    """PPO or DQN: train, checkpoint, export the policy, register it; returns the mean episode
    return of the last tenth of iterations."""
    import mlflow

    from agents.rllib import trainer
    from agents.rllib.policy import export
    from healgym.envs.pipeline_heal import PipelineHealEnv

    trainer.init_ray(cfg.ray.address, cfg.ray.num_cpus, dict(cfg.ray.runtime_env))
    run = mlflow.active_run()
    algo, summary = trainer.train(cfg.agent, kw, out, seed=cfg.seed,
                                  run_id=run.info.run_id if run else None,
                                  progress=sys.stderr.isatty())
    try:
        policy_dir = export(algo.get_module(), cfg.agent.kind, PipelineHealEnv(**kw).model,
                            out / "policy", extra={"hydra_config": config,
                                                   "iterations": summary.iterations,
                                                   "env_steps": summary.env_steps,
                                                   "checkpoint": summary.checkpoint})
    finally:
        algo.stop()
    mlflow.log_metrics({"perf/train_seconds": summary.seconds,
                        "perf/env_steps_per_s": summary.env_steps / max(summary.seconds, 1e-9)})
    mlflow.log_artifacts(str(policy_dir), artifact_path="policy")
    name = model_name(cfg.agent.kind)
    version = log_and_register(policy_dir, name=name, code=RLLIB_MODEL_CODE)
    returns = [r for r in summary.returns if np.isfinite(r)]
    tail = returns[-max(len(returns) // 10, 1):]
    score = float(np.mean(tail)) if tail else float("nan")
    first = returns[0] if returns else float("nan")
    print(f"{cfg.agent.kind}: {summary.iterations} iterations, {summary.env_steps} env steps in "
          f"{summary.seconds:.0f} s; episode return {first:.1f} (first) -> {score:.1f} (last "
          f"tenth)\ncheckpoint {summary.checkpoint} (resume: agent.resume_from=...)\n"
          f"policy {policy_dir}; registered models:/{name}/{version} (alias 'candidate'); "
          f"promote with: python experiments/promote.py {version} --name {name}")
    return score


def train(cfg: Any) -> float:
    import mlflow

    kw = env_kwargs(cfg)
    out = ROOT / cfg.output_dir / f"{cfg.agent.kind}__seed{cfg.seed}__{int(time.time())}"
    run_name = out.name
    config = OmegaConf.to_container(cfg, resolve=True)
    with mlflow_run(config, run_name, cfg.mlflow.tracking_uri, cfg.mlflow.experiment):
        if cfg.agent.kind == "qlearning":
            a = cfg.agent
            venv = gym.make_vec(healgym.ENV_ID, num_envs=a.num_envs,
                                max_episode_steps=cfg.env.episode_steps, **kw)
            agent = QLearningAgent(venv.unwrapped.model, config=QConfig(
                alpha=a.alpha, gamma=a.gamma, epsilon=a.epsilon, epsilon_start=a.epsilon_start,
                decay_steps=max(a.steps * 2 // 3, 1), seed=cfg.seed))
            t0 = time.perf_counter()
            log = agent.train(venv, a.steps, seed=cfg.seed, progress=sys.stderr.isatty())
            for i, step in enumerate(log.steps):
                mlflow.log_metrics({"charts/mean_reward": log.mean_reward[i],
                                    "charts/epsilon": log.epsilon[i],
                                    "charts/explore_share": log.explore_share[i]}, step=step)
            mlflow.log_metric("perf/train_seconds", time.perf_counter() - t0)
            agent.save(out, extra={"hydra_config": config, "steps": a.steps})
            tail = log.mean_reward[-max(len(log.mean_reward) // 10, 1):]
            score = float(np.mean(tail)) if tail else float("nan")
            version = log_and_register(out)
            print(f"registered models:/{MODEL_NAME}/{version} (alias 'candidate'); promote "
                  f"with: python experiments/promote.py {version}")
        elif cfg.agent.kind == "runbook":

            def make_env() -> gym.Env:
                return gym.make(healgym.ENV_ID, **kw)

            agent_rb = RunbookAgent(make_env(), ROOT / cfg.agent.runbook)
            report: dict[str, Any] = {"thresholds": {r.name: r.threshold for r in agent_rb.rules}}
            if cfg.agent.tune:
                agent_rb, report = tune_runbook(make_env, agent_rb, range(cfg.agent.tune_seeds))
                mlflow.log_metric("tuning/default_reward", report["default_reward"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "runbook_thresholds.json").write_text(json.dumps(report, indent=2))
            score = float(report.get("reward", float("nan")))
        elif cfg.agent.kind in ("ppo", "dqn"):
            score = train_rllib(cfg, kw, out, config)
        else:
            raise SystemExit(f"agent.kind={cfg.agent.kind!r}: use one of 'qlearning', "
                             "'runbook', 'ppo', 'dqn'")
        mlflow.log_metric("train/score", score)
        if cfg.agent.kind not in ("ppo", "dqn"):  # RLlib logs its exported policy itself
            mlflow.log_artifacts(str(out), artifact_path="policy")
        run = mlflow.active_run()
        print(f"trained {cfg.agent.kind}: score {score:.1f}; saved to {out}; MLflow run "
              f"{run.info.run_id if run else '?'} in experiment {cfg.mlflow.experiment!r}")
    return score


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@user_errors("train")
def main(cfg: Any) -> float:
    check_keys(cfg, TrainConf)
    return train(cfg)


if __name__ == "__main__":
    main()
