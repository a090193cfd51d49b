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

import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.config import TrainConf, check_keys, env_kwargs, register  # noqa: E402
from agents.tracking import mlflow_run  # noqa: E402
from healgym.errors import user_errors  # noqa: E402

register()


def train(cfg: Any) -> float:
    import mlflow

    kw = env_kwargs(cfg)
    trainer = hydra.utils.instantiate(cfg.agent)  # the agent's schema names its Trainer
    out = ROOT / cfg.output_dir / f"{trainer.kind}__seed{cfg.seed}__{int(time.time())}"
    config = OmegaConf.to_container(cfg, resolve=True)
    with mlflow_run(config, out.name, cfg.mlflow.tracking_uri, cfg.mlflow.experiment):
        score = trainer.train(cfg, kw, out, config)
        mlflow.log_metric("train/score", score)
        if not trainer.logs_own_artifacts:
            mlflow.log_artifacts(str(out), artifact_path="policy")
        run = mlflow.active_run()
        print(f"trained {trainer.kind}: score {score:.1f}; saved to {out}; MLflow run "
              f"{run.info.run_id if run else '?'} in experiment {cfg.mlflow.experiment!r}")
    return score


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@user_errors("train")
def main(cfg: Any) -> float:
    check_keys(cfg, TrainConf)
    return train(cfg)


if __name__ == "__main__":
    main()
