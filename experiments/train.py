"""Train an agent from the Hydra config, tracked in MLflow.

    python experiments/train.py agent=qlearning agent.steps=20000 seed=0
    python experiments/train.py agent=runbook              # tunes the runbook's thresholds
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
from agents.config import env_kwargs, register  # noqa: E402
from agents.qlearning import QConfig, QLearningAgent  # noqa: E402
from agents.registry import MODEL_NAME, log_and_register  # noqa: E402
from agents.runbook import RunbookAgent  # noqa: E402
from agents.tracking import mlflow_run  # noqa: E402
from agents.tuning import tune_runbook  # noqa: E402

register()


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
        else:
            raise SystemExit(f"agent.kind={cfg.agent.kind!r}: use 'qlearning' or 'runbook'")
        mlflow.log_metric("train/score", score)
        mlflow.log_artifacts(str(out), artifact_path="policy")
        run = mlflow.active_run()
        print(f"trained {cfg.agent.kind}: score {score:.1f}; saved to {out}; MLflow run "
              f"{run.info.run_id if run else '?'} in experiment {cfg.mlflow.experiment!r}")
    return score


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: Any) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
