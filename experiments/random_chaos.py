"""The main job until the agents exist (`make run`): generate and import the sample telemetry,
run episodes with chaos under a random policy, and print the episode metrics.

    python experiments/random_chaos.py [--episodes 5] [--seed 0] [--dataset DIR] [--scenario F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

import healgym
from agents import RandomAgent
from healgym.cli import main as healgym_cli

ROOT = Path(__file__).resolve().parents[1]


def sample_dataset(root: Path) -> Path:
    """Generate the sample telemetry as canonical CSV and import it (idempotent)."""
    raw, out = root / "data/sample/raw", root / "data/sample/dataset"
    if not (out / "metadata.json").is_file():
        healgym_cli(["generate", "--out", str(raw), "--seed", "0", "--days", "2"])
        healgym_cli(["import", "canonical", str(raw), "--out", str(out)])
    return out


def run(dataset: Path, episodes: int, seed: int, scenario: str | None) -> list[dict]:
    env = gym.make(healgym.ENV_ID, dataset=str(dataset), scenario=scenario)
    agent = RandomAgent(env.action_space.n, seed=seed)
    results = []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs, info))
            done = terminated or truncated
        results.append(info["episode_metrics"])
    env.close()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", type=Path, default=None)
    p.add_argument("--scenario", default=None)
    p.add_argument("--json", type=Path, default=ROOT / "results/random_chaos.json")
    args = p.parse_args(argv)
    dataset = args.dataset or sample_dataset(ROOT)
    results = run(dataset, args.episodes, args.seed, args.scenario)
    print(f"\nrandom policy, chaos on, {args.episodes} episodes of 1 h on {dataset}")
    print(f"{'ep':>3} {'incidents':>9} {'resolved':>8} {'mean MTTR s':>11} {'downtime s':>10} "
          f"{'uptime %':>8} {'actions':>7} {'cost':>7} {'reward':>10}")
    for i, m in enumerate(results):
        mttr = f"{m['mean_mttr_s']:.0f}" if m["mean_mttr_s"] is not None else "-"
        print(f"{i:>3} {m['n_incidents']:>9} {m['resolved_incidents']:>8} {mttr:>11} "
              f"{m['downtime_s']:>10.0f} {m['uptime_pct']:>8.2f} {m['n_actions']:>7} "
              f"{m['action_cost']:>7.0f} {m['total_reward']:>10.1f}")
    up = np.mean([m["uptime_pct"] for m in results])
    print(f"mean uptime {up:.2f} %; full metrics in {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
