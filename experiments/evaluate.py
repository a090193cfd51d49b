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

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healgym  # noqa: E402
from agents.config import EvaluateConf, check_keys, env_kwargs, register  # noqa: E402
from agents.evaluation import summarize  # noqa: E402
from agents.oracle import OracleAgent  # noqa: E402
from agents.qlearning import QLearningAgent, TrainLog  # noqa: E402
from agents.random_agent import NoOpAgent, RandomAgent  # noqa: E402
from agents.runbook import RunbookAgent  # noqa: E402
from agents.study import (  # noqa: E402
    LEGEND,
    PolicyRuns,
    markdown,
    paired_summary,
    per_fault_markdown,
    play,
)
from agents.tracking import mlflow_run  # noqa: E402
from agents.training import QLearningTrainer  # noqa: E402
from agents.tuning import tune_runbook  # noqa: E402
from healgym.errors import HealgymError, user_errors  # noqa: E402
from healgym.sim.model import build_model  # noqa: E402

register()
KNOWN = ("qlearning", "ppo", "ppo_history", "dqn", "specialists", "expert", "runbook_tuned",
         "runbook", "oracle", "random", "noop")


class PlainObservation:
    """A policy trained on the plain observation, run where the env adds the history block
    (a suffix of the observation: ``healgym.sim.layout``): it sees the first ``n`` values."""

    def __init__(self, policy: Any, n: int) -> None:
        self.policy, self.n, self.name = policy, n, policy.name
        self.acts_in_batches = bool(getattr(policy, "acts_in_batches", False))

    def reset(self) -> None:
        self.policy.reset()

    def begin_batch(self, n: int) -> None:
        if hasattr(self.policy, "begin_batch"):
            self.policy.begin_batch(n)

    def decide(self, obs: Any, info: dict[str, Any]) -> Any:
        return self.policy.decide(obs[: self.n], info)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.policy.act(np.atleast_2d(obs)[:, : self.n], mask)  # type: ignore[no-any-return]


def zoo_seeds(path: str, key: str) -> list[Path]:
    found = sorted(p for p in (ROOT / path).glob("seed*") if (p / "policy.json").is_file())
    if not found:
        raise HealgymError(f"{key}={path!r}: no seed*/policy.json there; build the zoo with "
                           "`make zoo`")
    return found


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner with elapsed time on a terminal; one line on stderr otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        with console.status(message):
            yield
    else:
        t0 = time.perf_counter()
        yield
        print(f"{message}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


@contextlib.contextmanager
def progress_bar(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar over the evaluation's episodes (rich; plain lines when not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as bar:
        task = bar.add_task("episodes", total=total)
        done = [0]
        step = max(total // 10, 1)

        def advance() -> None:
            bar.advance(task)
            done[0] += 1
            if not console.is_terminal and done[0] % step == 0:
                print(f"evaluating: {done[0]}/{total} episodes", file=sys.stderr)

        yield advance


def resolve_policy_path(where: str, key: str) -> Path:
    """An exported policy folder, or a registry URI (``models:/healgym-ppo@champion``) whose
    ``policy`` artifact is downloaded."""
    if where.startswith("models:/"):
        from healgym.policy import registered_policy_dir

        return registered_policy_dir(where)
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


MONOLITHIC = ("qlearning", "ppo", "ppo_history", "dqn")


def versus_monolithic(runs: dict[str, dict[str, PolicyRuns]], horizon: float
                      ) -> dict[str, dict[str, Any]]:
    """Per distribution: router + specialists against the best monolithic learned policy
    there (the highest mean uptime), paired by episode seed and by training seed index (the
    composite's seed i with the monolithic agent's seed i)."""
    from agents.paired import compare

    out: dict[str, dict[str, Any]] = {}
    for dist, r in runs.items():
        mono = [n for n in MONOLITHIC if n in r]
        if not mono:
            continue
        best = max(mono, key=lambda n: float(np.mean([e["uptime_pct"] for e in r[n].flat])))
        spec, ref = r["specialists"], r[best]
        k = min(len(spec.episodes), len(ref.episodes))
        pol = [e for seed in spec.episodes[:k] for e in seed]
        base = [e for seed in ref.episodes[:k] for e in seed]
        groups = [s for s, seed in enumerate(spec.episodes[:k]) for _ in seed]
        out[dist] = {"best_monolithic": best, "training_seeds": k, **{
            m: compare(pol, base, m, groups=groups, horizon_s=horizon)
            for m in ("uptime_pct", "mttr_censored_s", "harmful_actions")}}
    return out


def versus_markdown(versus: dict[str, dict[str, Any]]) -> str:
    def ci(d: dict[str, float], digits: int) -> str:
        return (f"{d['value']:+.{digits}f} [{d['ci_low']:+.{digits}f}, "
                f"{d['ci_high']:+.{digits}f}]")

    rows = ["**router + specialists against the best monolithic agent** (paired by episode "
            "and training seed; 95 % bootstrap intervals; the best is chosen by mean uptime "
            "in each distribution)", "",
            "| distribution | best monolithic | seeds | uptime diff pp | censored MTTR diff s | "
            "harmful actions diff / episode |", "|---|---|---|---|---|---|"]
    for dist, v in versus.items():
        rows.append(f"| {dist} | {v['best_monolithic']} | {v['training_seeds']} | "
                    f"{ci(v['uptime_pct']['difference'], 1)} | "
                    f"{ci(v['mttr_censored_s']['difference'], 0)} | "
                    f"{ci(v['harmful_actions']['difference'], 1)} |")
    return "\n".join(rows)


def diagnosis_markdown(diagnosis: dict[str, dict[str, Any]], episodes: int) -> str:
    from agents.diagnosis import markdown as diag_table

    parts = []
    for dist, r in diagnosis.items():
        if r.get("rows"):
            parts.append(diag_table({"router (specialists, seed 0)": r},
                                    f"{dist}: the router's diagnoses while it acted, "
                                    f"{episodes} held-out episodes"))
    return "\n\n".join(parts)


def run(cfg: Any) -> float:
    import mlflow

    unknown = [p for p in cfg.policies if p not in KNOWN]
    if unknown:
        raise SystemExit(f"policies: {unknown} unknown; choose from {list(KNOWN)}")
    kw = env_kwargs(cfg, "train")  # training and tuning
    kw_eval = env_kwargs(cfg, "eval")  # held-out telemetry windows
    # telemetry.replay_incidents adds the held-out real-incident test: episodes around the
    # dataset's labelled incidents in the evaluation range, chaos off; the other distributions
    # and training stay as they are
    real = bool(kw.pop("replay_incidents", False))
    kw_eval.pop("replay_incidents", None)
    plain_model = build_model(**kw_eval)
    if "ppo_history" in cfg.policies:  # the same dynamics; the history block is a suffix
        kw_eval["history"] = True

    def make_env() -> gym.Env:
        return gym.make(healgym.ENV_ID, **kw)

    def make_eval_env() -> gym.Env:
        return gym.make(healgym.ENV_ID, **kw_eval)

    def make_eval_vec(n: int) -> Any:  # batch-acting policies play in lockstep in it
        return gym.make_vec(healgym.ENV_ID, num_envs=n, **kw_eval)

    # the runbooks and scenario files must fit this pipeline before anything trains
    runbooks = {"runbook": cfg.runbook.runbook, "runbook_tuned": cfg.runbook.runbook,
                "expert": cfg.runbook.expert}
    for name in dict.fromkeys(runbooks[p] for p in cfg.policies if p in runbooks):
        RunbookAgent(make_eval_env(), ROOT / name)
    for scenario in cfg.eval_scenarios:
        if scenario is not None:
            make_eval_env().reset(seed=0, options={"scenario": str(ROOT / scenario)})
    out = ROOT / cfg.output_dir / f"evaluate__{int(time.time())}"
    out.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    log = None
    with mlflow_run(config, out.name, cfg.mlflow.tracking_uri, cfg.mlflow.experiment):
        factories: dict[str, Any] = {}
        seeded: dict[str, list[Any]] = {}  # learned policies, one per training seed
        timings: dict[str, float] = {}
        if "qlearning" in cfg.policies:
            probe = make_env().unwrapped.model
            if cfg.qlearning_path:
                seeded["qlearning"] = [QLearningAgent.load(ROOT / cfg.qlearning_path, probe)]
            elif cfg.qlearning_zoo:
                seeded["qlearning"] = [QLearningAgent.load(p, probe) for p in
                                       zoo_seeds(cfg.qlearning_zoo, "qlearning_zoo")]
            else:
                trainer = hydra.utils.instantiate(cfg.agent)
                if not isinstance(trainer, QLearningTrainer):
                    raise HealgymError(
                        f"agent={trainer.kind}: evaluate.py trains Q-learning itself (agent="
                        f"qlearning); evaluate a trained {trainer.kind} policy with "
                        f"{trainer.kind}_path=<run>/policy")
                agents = []
                t_train = time.perf_counter()
                for s in range(max(1, int(cfg.train_seeds))):
                    with status(f"training Q-learning, seed {cfg.seed + s} "
                                f"({s + 1}/{cfg.train_seeds})"):
                        q, lg = trainer.fit(OmegaConf.merge(cfg, {"seed": cfg.seed + s}), kw)
                    q.save(out / f"qlearning_seed{cfg.seed + s}")
                    agents.append(q)
                    log = log or lg
                timings["qlearning_train_s"] = time.perf_counter() - t_train
                seeded["qlearning"] = agents
        for kind in ("ppo", "ppo_history"):
            zoo_key = f"{kind}_zoo"
            if kind in cfg.policies and cfg.get(zoo_key):
                from agents.rllib.policy import RLlibPolicy

                model = make_eval_env().unwrapped.model if kind == "ppo_history" else plain_model
                pols: list[Any] = [RLlibPolicy.load(p, model)
                                   for p in zoo_seeds(cfg[zoo_key], zoo_key)]
                if kind == "ppo_history":
                    for p in pols:
                        p.name = "ppo_history"
                elif kw_eval.get("history"):
                    pols = [PlainObservation(p, plain_model.n_obs) for p in pols]
                seeded[kind] = pols
            elif kind == "ppo_history" and kind in cfg.policies:
                raise SystemExit("policies includes 'ppo_history': set ppo_history_zoo="
                                 "zoo/ppo_history (built by `make zoo`)")
        if "specialists" in cfg.policies:  # router + specialists: a zoo entry or one folder
            from agents.specialists import load as load_routed
            if cfg.get("specialists_zoo"):
                seeded["specialists"] = [load_routed(p, plain_model) for p in
                                         zoo_seeds(cfg.specialists_zoo, "specialists_zoo")]
            elif cfg.get("specialists_path"):
                seeded["specialists"] = [load_routed(resolve_policy_path(
                    cfg.specialists_path, "specialists_path"), plain_model)]
            else:
                raise SystemExit("policies includes 'specialists': set specialists_zoo="
                                 "zoo/specialists (built by `make zoo`) or specialists_path="
                                 "<a train run's folder> (python experiments/train.py "
                                 "agent=specialists)")
            if kw_eval.get("history"):
                seeded["specialists"] = [PlainObservation(p, plain_model.n_obs)
                                         for p in seeded["specialists"]]
        for kind in ("ppo", "dqn"):
            if kind in cfg.policies and kind not in seeded:
                from agents.rllib.policy import RLlibPolicy

                where = cfg.get(f"{kind}_path")
                if not where:
                    raise SystemExit(
                        f"policies includes {kind!r} but {kind}_path is not set: train one with "
                        f"`python experiments/train.py agent={kind}` and pass "
                        f"{kind}_path=<run>/policy (or models:/healgym-{kind}@champion)")
                pol: Any = RLlibPolicy.load(resolve_policy_path(where, f"{kind}_path"),
                                            plain_model)
                if kw_eval.get("history"):
                    pol = PlainObservation(pol, plain_model.n_obs)
                factories[kind] = lambda env, pol=pol: pol
        runbook_path = ROOT / cfg.runbook.runbook
        if "runbook_tuned" in cfg.policies:
            tuned, report = tune_runbook(make_env, RunbookAgent(make_env(), runbook_path),
                                         range(cfg.runbook.tune_seeds))
            (out / "runbook_tuned.json").write_text(json.dumps(report, indent=2))
            factories["runbook_tuned"] = lambda env: tuned
        if "runbook" in cfg.policies:
            factories["runbook"] = lambda env: RunbookAgent(env, runbook_path)
        if "expert" in cfg.policies:
            expert_path = ROOT / cfg.runbook.expert
            factories["expert"] = lambda env: RunbookAgent(env, expert_path)
        if "oracle" in cfg.policies:
            factories["oracle"] = OracleAgent
        if "random" in cfg.policies:
            factories["random"] = lambda env: RandomAgent(env.action_space.n, cfg.held_out_seed)
        if "noop" in cfg.policies:
            factories["noop"] = lambda env: NoOpAgent()
        n_scen = cfg.episodes if cfg.scenario_episodes is None else int(cfg.scenario_episodes)
        seeds = range(cfg.held_out_seed, cfg.held_out_seed + cfg.episodes)
        scenarios = [None if s is None else str(ROOT / s) for s in cfg.eval_scenarios]
        names = ["random chaos" if s is None else Path(s).stem for s in cfg.eval_scenarios]
        order = [p for p in cfg.policies if p in factories or p in seeded]
        reference = cfg.reference if cfg.reference in order else order[0]
        probe_env = make_eval_env()
        horizon = float(probe_env.unwrapped.model.episode_steps * probe_env.unwrapped.model.dt)
        policies = {n: seeded.get(n) or [factories[n](probe_env)] for n in order}
        runs: dict[str, dict[str, PolicyRuns]] = {d: {} for d in names}
        counts = [cfg.episodes if s is None else n_scen for s in scenarios]
        total = sum(len(p) for p in policies.values()) * sum(counts)
        t_eval = time.perf_counter()
        with progress_bar(total) as advance:
            for dist, scenario, count in zip(names, scenarios, counts, strict=True):
                options = {"scenario": scenario} if scenario is not None else None
                for n in order:
                    runs[dist][n] = PolicyRuns(n, play(make_eval_env, policies[n],
                                                       seeds[:count], options, advance,
                                                       make_eval_vec))
        real_table, real_summary = "", {}
        if real:
            from agents import real_incidents

            kw_real = {**kw_eval, "replay_incidents": True,
                       "chaos": {"enabled": False, "rate_scale": 0.0}, "scenario": None}

            def make_real_env() -> gym.Env:
                return gym.make(healgym.ENV_ID, **kw_real)

            n_real = int(cfg.episodes)
            with progress_bar(sum(len(p) for p in policies.values()) * n_real) as advance:
                scored = {n: real_incidents.run(make_real_env, policies[n], seeds[:n_real],
                                                advance) for n in order}
            real_summary = {n: real_incidents.summary([r for seed in rows for r in seed],
                                                      horizon) for n, rows in scored.items()}
            real_table = real_incidents.markdown(
                real_summary, f"real incidents: {n_real} held-out episodes of "
                              f"{build_model(**kw_real).dataset_name!r}") + "\n\n"
        timings["evaluation_s"] = time.perf_counter() - t_eval
        episodes = {n: [e for d in names for e in runs[d][n].flat] for n in order}
        results = {n: summarize(e) for n, e in episodes.items()}
        paired = {d: paired_summary(runs[d], reference, horizon) for d in names}
        tables = [markdown(paired[d], reference, f"{d}: {c} held-out episodes")
                  for d, c in zip(names, counts, strict=True)]
        versus = versus_monolithic(runs, horizon) if "specialists" in order else {}
        diagnosis: dict[str, Any] = {}
        if "specialists" in order and cfg.diagnosis_episodes:
            from agents.specialists import diagnosis_metrics
            n_diag = int(cfg.diagnosis_episodes)
            t_diag = time.perf_counter()
            with status(f"scoring the router's diagnoses ({n_diag} episodes per distribution)"):
                for dist, scenario in zip(names, scenarios, strict=True):
                    diagnosis[dist] = diagnosis_metrics(
                        make_eval_env, policies["specialists"][0], seeds[:n_diag],
                        None if scenario is None else {"scenario": scenario})
            timings["diagnosis_s"] = time.perf_counter() - t_diag
        if versus:
            tables.append(versus_markdown(versus))
        if diagnosis:
            tables.append(diagnosis_markdown(diagnosis, int(cfg.diagnosis_episodes)))
        (out / "results.json").write_text(json.dumps(
            {"policies": results, "reference": reference, "distributions": paired,
             "real_incidents": real_summary, "versus_monolithic": versus,
             "diagnosis": diagnosis, "timings_s": timings, "protocol": {
                 "episodes_per_distribution": dict(zip(names, counts, strict=True)),
                 "held_out_seed": cfg.held_out_seed,
                 "train_seeds": {n: len(p) for n, p in policies.items()},
                 "telemetry_eval_range": list(cfg.telemetry.eval_range)}}, indent=2,
            default=float))
        table = "\n\n".join(tables) + "\n\n" + real_table \
            + per_fault_markdown(paired[names[0]], names[0]) + "\n\n" + LEGEND
        (out / "results.md").write_text(table + "\n")
        plots(out, episodes, log)
        for name, s in results.items():
            mlflow.log_metrics({f"eval/{name}/uptime_pct": s["uptime_pct"]["value"],
                                f"eval/{name}/mttr_censored_mean_s":
                                    s["mttr_censored_mean_s"]["value"]})
        mlflow.log_artifacts(str(out))
        run = mlflow.active_run()
        print(f"\nHeld-out episodes (seeds {cfg.held_out_seed}..) per distribution, each "
              f"reported alone: {dict(zip(names, counts, strict=True))}. Held-out telemetry "
              f"windows (eval_range {list(cfg.telemetry.eval_range)}); evaluation took "
              f"{timings['evaluation_s']:.0f} s.\n")
        print(table)
        print(f"\nresults in {out}; MLflow run {run.info.run_id if run else '?'} in experiment "
              f"{cfg.mlflow.experiment!r}")
        print("next: more episodes (episodes=500), a trained PPO "
              "(python experiments/train.py agent=ppo, then ppo_path=<run>/policy), or your "
              "own telemetry (telemetry.dataset=<folder>); docs/agents.md has the full study.")
    head = results.get("qlearning") or next(iter(results.values()))
    return float(head["uptime_pct"]["value"])


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
@user_errors("evaluate")
def main(cfg: Any) -> float:
    check_keys(cfg, EvaluateConf)
    return run(cfg)


if __name__ == "__main__":
    main()
