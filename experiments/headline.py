"""The headline comparison: Q-learning vs the tuned runbook vs the oracle (and the untuned
runbook, random and no-op) on held-out episodes, with 95 % confidence intervals.

Training uses seeds [0, train_seeds); the runbook is tuned on seeds [0, tune_seeds); evaluation
uses seeds from 10_000 on, never seen in training or tuning (same telemetry and chaos process,
different replay windows, fault arrivals and noise).

    python experiments/headline.py [--steps 20000] [--envs 256] [--episodes 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym

import healgym
from agents.evaluation import evaluate, markdown_table, summarize
from agents.oracle import OracleAgent
from agents.qlearning import QConfig, QLearningAgent
from agents.random_agent import NoOpAgent, RandomAgent
from agents.runbook import RunbookAgent
from agents.tuning import tune_runbook

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 10_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20_000, help="vector steps of Q-learning")
    p.add_argument("--envs", type=int, default=256, help="sub-envs of the training vector env")
    p.add_argument("--episodes", type=int, default=30, help="held-out evaluation episodes")
    p.add_argument("--tune-seeds", type=int, default=8)
    p.add_argument("--runbook", default=str(ROOT / "configs/runbooks/classic.yaml"))
    p.add_argument("--dataset", default=None, help="a telemetry dataset folder (default: the "
                   "embedded synthetic telemetry)")
    p.add_argument("--out", type=Path, default=ROOT / "results/headline")
    args = p.parse_args(argv)
    kwargs = {"dataset": args.dataset} if args.dataset else {}

    def make_env() -> gym.Env:
        return gym.make(healgym.ENV_ID, **kwargs)

    t0 = time.perf_counter()
    venv = gym.make_vec(healgym.ENV_ID, num_envs=args.envs, **kwargs)
    agent = QLearningAgent(venv.unwrapped.model, config=QConfig(
        epsilon_start=1.0, epsilon=0.05, decay_steps=args.steps * 2 // 3, seed=0))
    log = agent.train(venv, args.steps, seed=0)
    train_s = time.perf_counter() - t0
    agent.save(args.out / "qlearning", extra={"steps": args.steps, "envs": args.envs})
    t1 = time.perf_counter()
    probe = make_env()
    untuned = RunbookAgent(probe, args.runbook)
    tuned, report = tune_runbook(make_env, untuned, range(args.tune_seeds))
    tune_s = time.perf_counter() - t1
    seeds = range(HELD_OUT, HELD_OUT + args.episodes)
    policies = {
        "q-learning": lambda env: agent,
        "runbook (tuned)": lambda env: tuned,
        "runbook (classic)": lambda env: RunbookAgent(env, args.runbook),
        "oracle": lambda env: OracleAgent(env),
        "random": lambda env: RandomAgent(env.action_space.n, seed=HELD_OUT),
        "noop": lambda env: NoOpAgent(),
    }
    results = {name: summarize(evaluate(make_env, f, seeds)) for name, f in policies.items()}
    table = markdown_table(results)
    print(f"Q-learning: {args.steps} steps x {args.envs} envs in {train_s:.0f} s; runbook tuned "
          f"on {args.tune_seeds} seeds in {tune_s:.0f} s ({report['tried']} candidates, reward "
          f"{report['default_reward']:.0f} -> {report['reward']:.0f})")
    print(f"{args.episodes} held-out one-hour episodes (seeds {HELD_OUT}..), chaos on; "
          "95 % confidence intervals\n")
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"policies": results, "runbook_tuning": report, "train_seconds": train_s,
         "learning_curve": {"steps": log.steps, "mean_reward": log.mean_reward,
                            "epsilon": log.epsilon, "explore_share": log.explore_share}},
        indent=2))
    (args.out / "results.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
