"""Compare the baselines (no-op, random, the classic runbook, the oracle) on held-out episodes.

    python experiments/compare_baselines.py [--episodes 20] [--seed 1000] [--runbook F]
                                            [--dataset DIR] [--scenario F] [--json OUT]

Seeds start at --seed (keep them apart from any training seeds). Prints the headline table with
95 % confidence intervals and writes {"policies": {name: summary}} as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym

import healgym
from agents.evaluation import evaluate, markdown_table, summarize
from agents.oracle import OracleAgent
from agents.random_agent import NoOpAgent, RandomAgent
from agents.runbook import RunbookAgent

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--runbook", default=str(ROOT / "configs/runbooks/classic.yaml"))
    p.add_argument("--dataset", default=None)
    p.add_argument("--scenario", default=None)
    p.add_argument("--json", type=Path, default=ROOT / "results/baselines.json")
    args = p.parse_args(argv)
    kwargs = {"dataset": args.dataset} if args.dataset else {}

    def make_env() -> gym.Env:
        return gym.make(healgym.ENV_ID, **kwargs)

    seeds = range(args.seed, args.seed + args.episodes)
    policies = {
        "noop": lambda env: NoOpAgent(),
        "random": lambda env: RandomAgent(env.action_space.n, seed=args.seed),
        "runbook (classic)": lambda env: RunbookAgent(env, args.runbook),
        "oracle": lambda env: OracleAgent(env),
    }
    results = {name: summarize(evaluate(make_env, factory, seeds, [args.scenario]))
               for name, factory in policies.items()}
    print(f"{args.episodes} held-out one-hour episodes (seeds {args.seed}..), chaos on; "
          "values with 95 % confidence intervals\n")
    print(markdown_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"policies": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
