"""Compare policies on held-out episodes, from the Hydra config, tracked in MLflow.

    python experiments/evaluate.py                                  # trains Q-learning first
    python experiments/evaluate.py qlearning_path=results/train/qlearning__seed0__...
    python experiments/evaluate.py "policies=[qlearning,ppo,dqn,runbook_tuned,oracle]"
        ppo_path=results/train/ppo__seed0__.../policy dqn_path=models:/healgym-dqn@champion
    python experiments/evaluate.py episodes=20
        "eval_scenarios=[null,configs/scenarios/leak_cascade.yaml]"

Held-out seeds start at ``held_out_seed`` (10000), apart from training (from 0) and runbook
tuning (0 .. agent.tune_seeds). Writes results.json ({"policies": {name: {metric: ...}}}),
results.md and PNG plots (MTTR per policy; the learning curve when it trains), all also logged
to MLflow. Returns the Q-learning uptime %.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healgym  # noqa: E402
from agents.config import EvaluateConf, check_keys, env_kwargs, register  # noqa: E402
from agents.evaluation import evaluate, markdown_table, summarize  # noqa: E402
from agents.oracle import OracleAgent  # noqa: E402
from agents.qlearning import QLearningAgent, TrainLog  # noqa: E402
from agents.random_agent import NoOpAgent, RandomAgent  # noqa: E402
from agents.runbook import RunbookAgent  # noqa: E402
from agents.tracking import mlflow_run  # noqa: E402
from agents.training import QLearningTrainer  # noqa: E402
from agents.tuning import tune_runbook  # noqa: E402
from healgym.errors import HealgymError, user_errors  # noqa: E402

register()
KNOWN = ("qlearning", "ppo", "dqn", "runbook_tuned", "runbook", "oracle", "random", "noop")


def resolve_policy_path(where: str, key: str) -> Path:
    """An exported policy folder, or a registry URI (``models:/healgym-ppo@champion``) whose
    ``policy`` artifact is downloaded."""
    if where.startswith("models:/"):
        import mlflow

        local = mlflow.artifacts.download_artifacts(f"{where.rstrip('/')}/artifacts/policy")
        return Path(local)
    path = Path(where) if Path(where).is_absolute() else ROOT / where
    if not path.is_dir():
        raise HealgymError(f"{key}={where!r}: no such folder; give the 'policy' folder of a "
                           "train run (results/train/<run>/policy) or models:/NAME@ALIAS")
    return path


def plots(out: Path, episodes: dict[str, list[dict[str, Any]]], log: TrainLog | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(episodes)
    data = [[i["mttr_s"] if i["mttr_s"] is not None else e["elapsed_s"] - i["onset_s"]
             for e in episodes[n] for i in e["incidents"]] or [0.0] for n in names]
    ax.boxplot(data, tick_labels=names)
    ax.set_ylabel("time to resolve, s (open incidents: until episode end)")
    ax.set_title("MTTR per policy, held-out episodes")
    fig.tight_layout()
    fig.savefig(out / "mttr.png", dpi=100)
    plt.close(fig)
    if log is not None and log.steps:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(log.steps, log.mean_reward)
        ax.set_xlabel("vector steps")
        ax.set_ylabel("mean reward per sub-env step")
        ax.set_title("Q-learning learning curve")
        fig.tight_layout()
        fig.savefig(out / "learning_curve.png", dpi=100)
        plt.close(fig)


def run(cfg: Any) -> float:
    import mlflow

    unknown = [p for p in cfg.policies if p not in KNOWN]
    if unknown:
        raise SystemExit(f"policies: {unknown} unknown; choose from {list(KNOWN)}")
    kw = env_kwargs(cfg, "train")  # training and tuning
    kw_eval = env_kwargs(cfg, "eval")  # held-out telemetry windows

    def make_env() -> gym.Env:
        return gym.make(healgym.ENV_ID, **kw)

    def make_eval_env() -> gym.Env:
        return gym.make(healgym.ENV_ID, **kw_eval)

    out = ROOT / cfg.output_dir / f"evaluate__{int(time.time())}"
    out.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    log = None
    with mlflow_run(config, out.name, cfg.mlflow.tracking_uri, cfg.mlflow.experiment):
        factories: dict[str, Any] = {}
        if "qlearning" in cfg.policies:
            probe = make_env().unwrapped.model
            if cfg.qlearning_path:
                q = QLearningAgent.load(ROOT / cfg.qlearning_path, probe)
            else:
                trainer = hydra.utils.instantiate(cfg.agent)
                if not isinstance(trainer, QLearningTrainer):
                    raise HealgymError(
                        f"agent={trainer.kind}: evaluate.py trains Q-learning itself (agent="
                        f"qlearning); evaluate a trained {trainer.kind} policy with "
                        f"{trainer.kind}_path=<run>/policy")
                q, log = trainer.fit(cfg, kw)
                q.save(out / "qlearning")
            factories["qlearning"] = lambda env: q
        for kind in ("ppo", "dqn"):
            if kind in cfg.policies:
                from agents.rllib.policy import RLlibPolicy

                where = cfg.get(f"{kind}_path")
                if not where:
                    raise SystemExit(
                        f"policies includes {kind!r} but {kind}_path is not set: train one with "
                        f"`python experiments/train.py agent={kind}` and pass "
                        f"{kind}_path=<run>/policy (or models:/healgym-{kind}@champion)")
                pol = RLlibPolicy.load(resolve_policy_path(where, f"{kind}_path"),
                                       make_eval_env().unwrapped.model)
                factories[kind] = lambda env, pol=pol: pol
        runbook_path = ROOT / cfg.runbook.runbook
        if "runbook_tuned" in cfg.policies:
            tuned, report = tune_runbook(make_env, RunbookAgent(make_env(), runbook_path),
                                         range(cfg.runbook.tune_seeds))
            (out / "runbook_tuned.json").write_text(json.dumps(report, indent=2))
            factories["runbook_tuned"] = lambda env: tuned
        if "runbook" in cfg.policies:
            factories["runbook"] = lambda env: RunbookAgent(env, runbook_path)
        if "oracle" in cfg.policies:
            factories["oracle"] = OracleAgent
        if "random" in cfg.policies:
            factories["random"] = lambda env: RandomAgent(env.action_space.n, cfg.held_out_seed)
        if "noop" in cfg.policies:
            factories["noop"] = lambda env: NoOpAgent()
        seeds = range(cfg.held_out_seed, cfg.held_out_seed + cfg.episodes)
        scenarios = [None if s is None else str(ROOT / s) for s in cfg.eval_scenarios]
        episodes = {n: evaluate(make_eval_env, f, seeds, scenarios)
                    for n, f in factories.items()}
        results = {n: summarize(e) for n, e in episodes.items()}
        (out / "results.json").write_text(json.dumps({"policies": results}, indent=2))
        table = markdown_table(results)
        (out / "results.md").write_text(table + "\n")
        plots(out, episodes, log)
        for name, s in results.items():
            mlflow.log_metrics({f"eval/{name}/uptime_pct": s["uptime_pct"]["value"],
                                f"eval/{name}/mttr_censored_mean_s":
                                    s["mttr_censored_mean_s"]["value"]})
        mlflow.log_artifacts(str(out))
        run = mlflow.active_run()
        names = ["random chaos" if s is None else Path(s).stem for s in cfg.eval_scenarios]
        print(f"{cfg.episodes} held-out episodes (seeds {cfg.held_out_seed}..) x scenarios "
              f"{names}; 95 % confidence intervals\n")
        print(table)
        print(f"\nresults in {out}; MLflow run {run.info.run_id if run else '?'} in experiment "
              f"{cfg.mlflow.experiment!r}")
    head = results.get("qlearning") or next(iter(results.values()))
    return float(head["uptime_pct"]["value"])


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
@user_errors("evaluate")
def main(cfg: Any) -> float:
    check_keys(cfg, EvaluateConf)
    return run(cfg)


if __name__ == "__main__":
    main()
