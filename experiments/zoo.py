"""The reference policy zoo (`make zoo`): trained policies committed under ``zoo/`` with the
command, config, seeds, wall time and evaluation that produced them, so `make run` and users
evaluate the same policies without training them.

    python experiments/zoo.py [--entries qlearning ppo ppo_history] [--seeds 3] [--steps 20000]
        [--envs 256] [--ppo-iterations 100] [--episodes 100]

Each entry is a folder of seeds in the pickle-free saved formats (a Q-table is ``q.npz``, an
RLlib policy ``weights.npz``, both read with ``allow_pickle=False``, plus ``policy.json``) and a
``card.json``. Entries: ``qlearning`` (the tabular agent), ``ppo`` (RLlib PPO on the plain
observation) and ``ppo_history`` (PPO on the observation with the history block: z deltas,
time since the alarm, the last completed action and whether it held; PPO's memory here). Q-
learning's training is seeded and single-threaded, so the same command on the same code
reproduces the same tables; PPO's is seeded but torch's kernels are not bit-reproducible
across machines (the card records the figures measured here).
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


def env_kwargs(dataset: Path, split: str, history: bool = False) -> dict[str, Any]:
    """The zoo's pipeline: make run's (the sample telemetry, default chaos, one-hour episodes);
    ``split``: "train" replays the first 70 % of the telemetry, "eval" the rest; ``history``:
    the observation's history block (the same dynamics, a longer observation)."""
    kw: dict[str, Any] = {"dataset": str(dataset),
                          "time_range": [0.0, 0.7] if split == "train" else [0.7, 1.0]}
    if history:
        kw["history"] = True
    return kw


#: The PPO entries: RLlib's PPO with the masking module, make run's env; ``gamma`` 0.99 fits
#: actions of 30-1200 s at 10 s steps (docs/agents.md)
PPO_ENTRIES = {"ppo": False, "ppo_history": True}  # entry -> history observation
PPO_CONFIG: dict[str, Any] = {"lr": 3e-4, "gamma": 0.99, "hidden": [128, 128],
                              "train_batch_size": 4096, "minibatch_size": 512, "num_epochs": 6,
                              "entropy_coeff": 0.01, "num_envs_per_env_runner": 64,
                              "rollout_fragment_length": 64}


def train_ppo(dataset: Path, seed: int, iterations: int, history: bool, out: Path) -> Any:
    """Train PPO for ``iterations`` (4096 env steps each); returns the exported policy's path."""
    import tempfile

    from agents.config import PPOConf
    from agents.rllib import trainer
    from agents.rllib.policy import export
    from healgym.sim.model import build_model

    trainer.init_ray(num_cpus=2)
    conf = PPOConf(iterations=iterations, checkpoint_every=0, **{
        k: v for k, v in PPO_CONFIG.items()})
    kw = env_kwargs(dataset, "train", history)
    with tempfile.TemporaryDirectory() as tmp:
        algo, summary = trainer.train(conf, kw, Path(tmp), seed=seed)
        try:
            export(algo.get_module(), "ppo", build_model(**env_kwargs(dataset, "eval", history)),
                   out, extra={"zoo": True, "iterations": summary.iterations,
                               "env_steps": summary.env_steps}, ray_checkpoint=False)
        finally:
            algo.stop()
    return summary


def train_qlearning(dataset: Path, seed: int, steps: int, envs: int) -> QLearningAgent:
    venv = gym.make_vec(healgym.ENV_ID, num_envs=envs, **env_kwargs(dataset, "train"))
    agent = QLearningAgent(venv.unwrapped.model, config=QConfig(
        alpha=0.1, gamma=0.95, epsilon=0.05, epsilon_start=1.0,
        decay_steps=max(steps * 2 // 3, 1), seed=seed))
    agent.train(venv, steps, seed=seed)
    venv.close()
    return agent


def train_specialists(dataset: Path, seed: int, steps: int, envs: int) -> Any:
    """Router + specialists (agent=specialists' defaults): the diagnoser on 200 episodes, then
    a Q-table per family with the Q-learning entry's settings."""
    from omegaconf import OmegaConf

    from agents.config import QLearningConf, SpecialistsConf
    from agents.training import SpecialistsTrainer

    conf = OmegaConf.structured(SpecialistsConf(qlearning=QLearningConf(steps=steps,
                                                                        num_envs=envs)))
    trainer = SpecialistsTrainer(**OmegaConf.to_container(conf))  # type: ignore[arg-type]
    cfg = OmegaConf.create({"seed": seed, "runbook": {"expert": "configs/runbooks/expert.yaml"}})
    policy = trainer.fit(cfg, env_kwargs(dataset, "train"))
    return policy, trainer.timings


def check_episodes(dataset: Path, policy: Any, history: bool = False
                   ) -> list[dict[str, float]]:
    """What the test replays: the first held-out episodes' uptime and reward."""
    def make() -> gym.Env:
        return gym.make(healgym.ENV_ID, **env_kwargs(dataset, "eval", history))

    eps = play(make, [policy], range(HELD_OUT, HELD_OUT + CHECK_EPISODES), None)[0]
    return [{"seed": HELD_OUT + i, "uptime_pct": e["uptime_pct"], "total_reward":
             e["total_reward"]} for i, e in enumerate(eps)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", nargs="+", default=["qlearning", *PPO_ENTRIES, "specialists"],
                   choices=["qlearning", *PPO_ENTRIES, "specialists"],
                   help="which entries to (re)build")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (0 .. N-1)")
    p.add_argument("--steps", type=int, default=20_000, help="Q-learning vector steps")
    p.add_argument("--envs", type=int, default=256, help="sub-envs of the training vector env")
    p.add_argument("--ppo-iterations", type=int, default=100,
                   help="PPO iterations (4096 env steps each)")
    p.add_argument("--episodes", type=int, default=100,
                   help="held-out random-chaos episodes of the card's evaluation")
    p.add_argument("--out", type=Path, default=ROOT / "zoo")
    args = p.parse_args(argv)
    dataset = sample_dataset(ROOT)
    expert_path = ROOT / "configs/runbooks/expert.yaml"
    seeds = range(HELD_OUT, HELD_OUT + args.episodes)
    for name in args.entries:
        history = PPO_ENTRIES.get(name, False)
        entry = args.out / name
        entry.mkdir(parents=True, exist_ok=True)

        def make_eval(history: bool = history) -> gym.Env:
            return gym.make(healgym.ENV_ID, **env_kwargs(dataset, "eval", history))

        reference = play(make_eval, [RunbookAgent(make_eval(), expert_path)], seeds, None)[0]
        if name in ("qlearning", "specialists"):
            command = (f"python experiments/zoo.py --entries {name} --seeds {args.seeds} "
                       f"--steps {args.steps} --envs {args.envs} --episodes {args.episodes}")
            config: dict[str, Any] = {
                "alpha": 0.1, "gamma": 0.95, "epsilon": 0.05, "epsilon_start": 1.0,
                "decay_steps": max(args.steps * 2 // 3, 1), "steps": args.steps,
                "num_envs": args.envs, "features": "agents.qlearning.DEFAULT_FEATURES"}
            if name == "specialists":
                config = {"specialist": "qlearning (per family, each with these settings)",
                          **config, "router": "agent=specialists' defaults "
                          "(configs/agent/specialists.yaml)"}
        else:
            command = (f"python experiments/zoo.py --entries {name} --seeds {args.seeds} "
                       f"--ppo-iterations {args.ppo_iterations} --episodes {args.episodes}")
            config = {**PPO_CONFIG, "iterations": args.ppo_iterations,
                      "env_steps": args.ppo_iterations * PPO_CONFIG["train_batch_size"],
                      "history_observation": history, "reward_scale": 0.01}
        card: dict[str, Any] = {
            "policy": name, "env": healgym.ENV_ID, "command": command, "config": config,
            "telemetry": "data/sample/dataset (experiments/random_chaos.py's sample_dataset, "
                         "seed 0, 2 days); training replays time_range [0, 0.7]",
            "machine": f"{platform.machine()}, {platform.python_version()}, 1 numba thread",
            "evaluation": {"episodes": args.episodes, "held_out_seeds": f"{HELD_OUT}..",
                           "distribution": "random chaos, time_range [0.7, 1]"
                                           + (", history observation" if history else ""),
                           "reference": "expert runbook (configs/runbooks/expert.yaml)"},
            "seeds": {},
        }
        for s in range(args.seeds):
            t0 = time.perf_counter()
            where = entry / f"seed{s}"
            timings: dict[str, float] = {}
            if name == "qlearning":
                agent: Any = train_qlearning(dataset, s, args.steps, args.envs)
                agent.save(where, extra={"zoo": True, "steps": args.steps,
                                         "num_envs": args.envs})
            elif name == "specialists":
                from agents.specialists import load as load_routed

                built, timings = train_specialists(dataset, s, args.steps, args.envs)
                built.save(where, extra={"zoo": True, "timings": timings})
                agent = load_routed(where, make_eval().unwrapped.model)
            else:
                from agents.rllib.policy import RLlibPolicy

                train_ppo(dataset, s, args.ppo_iterations, history, where)
                agent = RLlibPolicy.load(where, make_eval().unwrapped.model)
            wall = time.perf_counter() - t0
            eps = play(make_eval, [agent], seeds, None)[0]
            card["seeds"][f"seed{s}"] = {
                "train_wall_s": round(wall, 1),
                **({"train_parts_s": {k: round(v, 1) for k, v in timings.items()}}
                   if timings else {}),
                "uptime_diff_pp": compare(eps, reference, "uptime_pct")["difference"],
                "mttr_censored_diff_s": compare(eps, reference, "mttr_censored_s",
                                                horizon_s=3600.0)["difference"],
                "harmful_per_incident": sum(e.get("ineffective_actions", 0) for e in eps)
                / max(sum(len(e["incidents"]) for e in eps), 1),
                "check": check_episodes(dataset, agent, history),
            }
            print(f"{name} seed {s}: trained in {wall:.0f} s; uptime minus the expert "
                  f"runbook's {card['seeds'][f'seed{s}']['uptime_diff_pp']['value']:+.1f} pp",
                  file=sys.stderr, flush=True)
        (entry / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
