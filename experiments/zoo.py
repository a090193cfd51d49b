"""The reference policy zoo (`make zoo`): trained policies committed under ``zoo/`` with the
command, config, seeds, wall time and evaluation that produced them, so `make run` and users
evaluate the same policies without training them.

    python experiments/zoo.py [--seeds 3] [--steps 20000] [--envs 256] [--episodes 100]

Each entry is a folder of seeds in the pickle-free saved formats (a Q-table is ``q.npz``, read
with ``allow_pickle=False``, plus ``policy.json``) and a ``card.json``. Training is seeded and
single-threaded, so the same command on the same code reproduces the same tables.
``tests/test_zoo.py`` loads every entry (never retrains) and replays the card's check episodes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import healgym  # noqa: E402
from agents.paired import compare  # noqa: E402
from agents.qlearning import QConfig, QLearningAgent  # noqa: E402
from agents.runbook import RunbookAgent  # noqa: E402
from agents.study import play  # noqa: E402
from experiments.random_chaos import sample_dataset  # noqa: E402

HELD_OUT = 10_000
CHECK_EPISODES = 4


def env_kwargs(dataset: Path, split: str) -> dict[str, Any]:
    """The zoo's pipeline: make run's (the sample telemetry, default chaos, one-hour episodes);
    ``split``: "train" replays the first 70 % of the telemetry, "eval" the rest."""
    return {"dataset": str(dataset), "time_range": [0.0, 0.7] if split == "train" else [0.7, 1.0]}


def train_qlearning(dataset: Path, seed: int, steps: int, envs: int) -> QLearningAgent:
    venv = gym.make_vec(healgym.ENV_ID, num_envs=envs, **env_kwargs(dataset, "train"))
    agent = QLearningAgent(venv.unwrapped.model, config=QConfig(
        alpha=0.1, gamma=0.95, epsilon=0.05, epsilon_start=1.0,
        decay_steps=max(steps * 2 // 3, 1), seed=seed))
    agent.train(venv, steps, seed=seed)
    venv.close()
    return agent


def check_episodes(dataset: Path, policy: Any) -> list[dict[str, float]]:
    """What the test replays: the first held-out episodes' uptime and reward."""
    def make() -> gym.Env:
        return gym.make(healgym.ENV_ID, **env_kwargs(dataset, "eval"))

    eps = play(make, [policy], range(HELD_OUT, HELD_OUT + CHECK_EPISODES), None)[0]
    return [{"seed": HELD_OUT + i, "uptime_pct": e["uptime_pct"], "total_reward":
             e["total_reward"]} for i, e in enumerate(eps)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="training seeds (0 .. N-1)")
    p.add_argument("--steps", type=int, default=20_000, help="Q-learning vector steps")
    p.add_argument("--envs", type=int, default=256, help="sub-envs of the training vector env")
    p.add_argument("--episodes", type=int, default=100,
                   help="held-out random-chaos episodes of the card's evaluation")
    p.add_argument("--out", type=Path, default=ROOT / "zoo")
    args = p.parse_args(argv)
    dataset = sample_dataset(ROOT)
    entry = args.out / "qlearning"
    entry.mkdir(parents=True, exist_ok=True)
    expert_path = ROOT / "configs/runbooks/expert.yaml"

    def make_eval() -> gym.Env:
        return gym.make(healgym.ENV_ID, **env_kwargs(dataset, "eval"))

    probe = make_eval()
    expert = RunbookAgent(probe, expert_path)
    seeds = range(HELD_OUT, HELD_OUT + args.episodes)
    reference = play(make_eval, [expert], seeds, None)[0]
    card: dict[str, Any] = {
        "policy": "qlearning", "env": healgym.ENV_ID,
        "command": f"python experiments/zoo.py --seeds {args.seeds} --steps {args.steps} "
                   f"--envs {args.envs} --episodes {args.episodes}",
        "config": {"alpha": 0.1, "gamma": 0.95, "epsilon": 0.05, "epsilon_start": 1.0,
                   "decay_steps": max(args.steps * 2 // 3, 1), "steps": args.steps,
                   "num_envs": args.envs, "features": "agents.qlearning.DEFAULT_FEATURES"},
        "telemetry": "data/sample/dataset (experiments/random_chaos.py's sample_dataset, "
                     "seed 0, 2 days); training replays time_range [0, 0.7]",
        "machine": f"{platform.machine()}, {platform.python_version()}, 1 numba thread",
        "evaluation": {"episodes": args.episodes, "held_out_seeds": f"{HELD_OUT}..",
                       "distribution": "random chaos, time_range [0.7, 1]",
                       "reference": "expert runbook (configs/runbooks/expert.yaml)"},
        "seeds": {},
    }
    for s in range(args.seeds):
        t0 = time.perf_counter()
        agent = train_qlearning(dataset, s, args.steps, args.envs)
        wall = time.perf_counter() - t0
        agent.save(entry / f"seed{s}", extra={"zoo": True, "steps": args.steps,
                                              "num_envs": args.envs})
        eps = play(make_eval, [agent], seeds, None)[0]
        card["seeds"][f"seed{s}"] = {
            "train_wall_s": round(wall, 1),
            "uptime_diff_pp": compare(eps, reference, "uptime_pct")["difference"],
            "mttr_censored_diff_s": compare(eps, reference, "mttr_censored_s",
                                            horizon_s=3600.0)["difference"],
            "harmful_per_incident": sum(e.get("ineffective_actions", 0) for e in eps)
            / max(sum(len(e["incidents"]) for e in eps), 1),
            "check": check_episodes(dataset, agent),
        }
        print(f"seed {s}: trained in {wall:.0f} s; uptime minus the expert runbook's "
              f"{card['seeds'][f'seed{s}']['uptime_diff_pp']['value']:+.1f} pp", file=sys.stderr)
    (entry / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
