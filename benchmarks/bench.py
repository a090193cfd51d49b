"""`make bench`: healgym's speed as ratios against a reference measured in the same process.

Writes results/bench.json. Measured here, in one run:

* env_steps_per_s: healgym/PipelineHeal-v0 through gymnasium.make (its wrappers included),
  chaos on, random valid actions (from info["action_mask"]), auto-reset at episode end.
* cartpole_steps_per_s: CartPole-v1 through gymnasium.make, the same loop.
* env_reset_per_s (healgym) for reference; ratio = env / cartpole (target: >= 0.5).

Each figure is the median of several repeats; the ratio is what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import healgym


def steps_per_s(env_id: str, n: int, seed: int = 0, **kwargs: Any) -> float:
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    all_actions = np.arange(env.action_space.n)
    t0 = time.perf_counter()
    for i in range(n):
        mask = info.get("action_mask")
        valid = np.flatnonzero(mask) if mask is not None else all_actions
        obs, r, term, trunc, info = env.step(valid[int(u[i] * valid.size)])
        if term or trunc:
            obs, info = env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return n / dt


def resets_per_s(n: int) -> float:
    env = gym.make(healgym.ENV_ID)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(n):
        env.reset(seed=i)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("results/bench.json"))
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    steps_per_s(healgym.ENV_ID, 2000)  # warm-up: imports, caches
    steps_per_s("CartPole-v1", 2000)
    env_runs, cart_runs = [], []
    for r in range(args.repeats):  # interleaved, so drifts in machine speed hit both
        env_runs.append(steps_per_s(healgym.ENV_ID, args.steps, seed=r))
        cart_runs.append(steps_per_s("CartPole-v1", args.steps, seed=r))
    env_sps, cart_sps = statistics.median(env_runs), statistics.median(cart_runs)
    result = {
        "env_steps_per_s": env_sps,
        "cartpole_steps_per_s": cart_sps,
        "env_vs_cartpole_ratio": env_sps / cart_sps,
        "env_reset_per_s": resets_per_s(200),
        "runs": {"env_steps_per_s": env_runs, "cartpole_steps_per_s": cart_runs},
        "setup": {"steps_per_run": args.steps, "repeats": args.repeats,
                  "env": healgym.ENV_ID, "chaos": "on (defaults)",
                  "actions": "uniform among info['action_mask'] (CartPole: all)",
                  "python": platform.python_version(), "gymnasium": gym.__version__,
                  "numpy": np.__version__, "machine": platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"healgym  {env_sps:>10,.0f} steps/s")
    print(f"CartPole {cart_sps:>10,.0f} steps/s")
    print(f"ratio    {env_sps / cart_sps:>10.3f}  (target >= 0.5)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
