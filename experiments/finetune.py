"""Fine-tune a tabular policy from a decision log (overrides are demonstrations), evaluate it
against the original on held-out episodes, and register it, tracked in MLflow.

    python experiments/finetune.py log=decisions.db policy=results/train/qlearning__seed0__...
    python experiments/finetune.py log=decisions.db policy=models:/healgym-qlearning@champion
        since=2026-11-01 trust=all "eval_scenarios=[configs/scenarios/bad_deploy_then_surge.yaml]"

The log must come from serving this pipeline (same stages and baseline telemetry: set
``telemetry.dataset`` / ``telemetry.stages`` as in training; by default the policy's own training
config is used). Writes the fine-tuned policy folder, ``finetune.json`` (what was learned from
the log) and ``results.json`` / ``results.md`` (original vs fine-tuned); returns the fine-tuned
policy's uptime %. Method: agents/offline.py; walkthrough: docs/analysis.md.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healgym  # noqa: E402
from agents.config import FinetuneConf, check_keys, env_kwargs, register  # noqa: E402
from agents.evaluation import evaluate, markdown_table, summarize  # noqa: E402
from agents.offline import finetune_qtable, transitions_from_log  # noqa: E402
from agents.qlearning import QLearningAgent  # noqa: E402
from agents.registry import log_and_register  # noqa: E402
from agents.tracking import mlflow_run  # noqa: E402
from healgym.analysis.log import Filters, load_log, parse_time  # noqa: E402
from healgym.errors import HealgymError, user_errors  # noqa: E402

register()


def policy_folder(spec: str) -> Path:
    if spec.startswith("models:/"):
        from healgym.policy import registered_policy_dir

        return registered_policy_dir(spec)
    path = Path(spec) if Path(spec).is_absolute() else ROOT / spec
    if not (path / "policy.json").is_file():
        raise HealgymError(f"policy={spec!r}: not a saved policy folder (no policy.json); give "
                           "a Q-learning train run's folder or models:/healgym-qlearning@ALIAS")
    return path


def finetune(cfg: Any) -> float:
    import mlflow

    src = policy_folder(cfg.policy)
    meta = json.loads((src / "policy.json").read_text())
    if meta.get("format") != "healgym-qtable":
        raise HealgymError(f"policy={cfg.policy!r} is a {meta.get('format')!r} policy; "
                           "fine-tuning updates tabular (Q-learning) policies. For PPO/DQN, "
                           "export the log as an offline dataset (healgym export-offline) and "
                           "train RLlib's BC or MARWIL on it")
    trained = (meta.get("hydra_config") or {}).get("telemetry") or {}
    if cfg.telemetry.dataset is None and trained.get("dataset"):
        cfg.telemetry.dataset = trained["dataset"]
    if cfg.telemetry.stages is None and trained.get("stages"):
        cfg.telemetry.stages = trained["stages"]
    kw = env_kwargs(cfg, "eval")
    model = gym.make(healgym.ENV_ID, **kw).unwrapped.model
    original = QLearningAgent.load(src, model)
    agent = QLearningAgent.load(src, model)
    filters = Filters(since=parse_time(cfg.since, "since"), until=parse_time(cfg.until, "until"),
                      policy_version=cfg.policy_version, target=cfg.target)
    frames = load_log(cfg.log, filters)
    for p in frames.problems:
        print(f"finetune: warning: {p}", file=sys.stderr)
    tr = transitions_from_log(frames, model, trust=cfg.trust)
    if not len(tr):
        raise HealgymError(f"log={cfg.log!r}: no transitions (filters: {filters.describe()}); "
                           "a transition needs two consecutive decisions with observations")
    report = finetune_qtable(agent, tr, epochs=cfg.epochs, alpha=cfg.alpha, gamma=cfg.gamma,
                             margin=cfg.margin, td=cfg.td, seed=cfg.seed)
    out = ROOT / cfg.output_dir / f"qlearning-finetuned__seed{cfg.seed}__{int(time.time())}"
    config = OmegaConf.to_container(cfg, resolve=True)
    with mlflow_run(config, out.name, cfg.mlflow.tracking_uri, cfg.mlflow.experiment):
        agent.save(out, extra={"hydra_config": config, "finetuned_from": cfg.policy,
                               "decision_log": frames.source, "filters": filters.describe(),
                               "finetune": asdict(report)})
        mlflow.log_metrics({f"finetune/{k}": float(v) for k, v in asdict(report).items()
                            if isinstance(v, int | float) and np.isfinite(v)})
        seeds = range(cfg.held_out_seed, cfg.held_out_seed + cfg.episodes)
        scenarios = [None if s is None else str(ROOT / s) if not Path(s).is_absolute() else s
                     for s in cfg.eval_scenarios]

        def make_env() -> gym.Env:
            return gym.make(healgym.ENV_ID, **kw)

        results = {name: summarize(evaluate(make_env, lambda _e, p=pol: p, seeds, scenarios))
                   for name, pol in (("original", original), ("finetuned", agent))}
        for name, s in results.items():
            mlflow.log_metrics({f"eval/{name}/uptime_pct": s["uptime_pct"]["value"],
                                f"eval/{name}/mttr_censored_mean_s":
                                    s["mttr_censored_mean_s"]["value"]})
        table = markdown_table(results)
        (out / "finetune.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
        (out / "results.json").write_text(json.dumps({"policies": results}, indent=2,
                                                     default=float) + "\n")
        (out / "results.md").write_text(table + "\n")
        mlflow.log_artifacts(str(out), artifact_path="policy")
        version = log_and_register(out) if cfg.register else None
        print(f"fine-tuned on {report.transitions} transitions from {frames.source} "
              f"({report.demonstrations} demonstrations in {report.demo_states} states, "
              f"{report.conflicts} with disagreeing humans, {report.unreachable} masked); "
              f"greedy policy follows the demonstrations {report.demo_agreement_before:.0%} "
              f"-> {report.demo_agreement_after:.0%}; {report.changed_states} states changed "
              f"their action\n{table}\nsaved to {out}"
              + (f"; registered models:/healgym-qlearning/{version} (alias 'candidate')"
                 if version else ""))
    return float(results["finetuned"]["uptime_pct"]["value"])


@hydra.main(version_base="1.3", config_path="../configs", config_name="finetune")
@user_errors("finetune")
def main(cfg: Any) -> float:
    check_keys(cfg, FinetuneConf)
    return finetune(cfg)


if __name__ == "__main__":
    main()
