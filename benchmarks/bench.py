"""`make bench`: healgym's speed as ratios against a reference measured in the same process.

Writes results/bench.json. Measured here, in one run:

* env_steps_per_s: healgym/PipelineHeal-v1 through gymnasium.make (its wrappers included),
  chaos on, random valid actions (from info["action_mask"]), auto-reset at episode end.
* cartpole_steps_per_s: CartPole-v1 through gymnasium.make, the same loop.
* env_reset_per_s (healgym) for reference; ratio = env / cartpole (target: >= 0.5).
* qlearning_updates_per_s: batched tabular Q-learning updates (one per sub-env transition) on
  the vector env, N=256, environment stepping included; and the wall time for Q-learning to reach
  the tuned runbook's censored mean MTTR on 48 held-out episodes (null if it does not within the
  budget; both MTTRs with 95 % confidence intervals: a point estimate crossing is not a
  significant difference).
* vector_env_steps_per_s / cartpole_vector_steps_per_s at N=4096 and N=65536: the natively
  batched healgym env from gymnasium.make_vec (chaos on, uniformly random valid actions from the
  batch's action masks) against Gymnasium's CartPoleVectorEnv in the same loop, timed over a
  whole episode cycle (361 steps from a seeded reset; CartPole 4x as many); sub-env steps
  counted. vector_env_bytes_per_env: the batched env's array state per sub-env.
  contract_only_steps_per_s: an env with healgym's observation, action mask and info keys and
  no simulation (ContractOnlyVectorEnv), same loop: the ceiling any env with this contract can
  reach here (contract_only_vs_cartpole_vector_ratio). vector_env_cpu_ns_per_step_1thread and
  cartpole_vector_cpu_ns_per_step: the same loop with healgym on one thread, per CPU second
  (vector_vs_cartpole_cpu_ratio_1thread: steadier on a shared machine than the wall clock).
* rllib_env_steps_sampled_per_s: RLlib 2.60 PPO's EnvRunner sampling (module forward pass,
  connectors, episode bookkeeping included) on healgym (masking module, batched vector env) and,
  with the same RLlib config, on CartPole-v1 (its vector env, RLlib's default module):
  rllib_vs_cartpole_ratio (target: >= 1.0, the env is not the bottleneck).
* rllib_policy_inference_ms_p50/p99: one observation through the exported policy
  (``RLlibPolicy.decide``: torch forward_inference, mask, argmax), no Ray.
* decision_latency_p50_us / p99_us: the serving adapter in process, observation read to guarded
  action logged (SQLite WAL, synchronous=FULL), for the tabular Q-learning and the RLlib (PPO)
  policy; reference: the same policy's decide() alone (ratio = adapter / policy).
* http_round_trip_ms_p50/p99: an authenticated POST to the override API over loopback (uvicorn).
* decision_log_writes_per_s: durable decision inserts; reference: a bare sqlite3 insert+commit
  with the same pragmas in the same process.

Each figure is the median of several repeats; the ratio is what to compare across machines.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import healgym
from healgym.envs.pipeline_heal import PipelineHealEnv


def steps_per_s(env_id: str, n: int, seed: int = 0, **kwargs: Any) -> float:
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    all_actions = np.arange(env.action_space.n)
    gc.collect()  # no full collection left pending from set-up (see vector_steps_per_s)
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


def vector_steps_per_s(env: Any, steps: int, seed: int = 0, cpu: bool = False) -> float:
    """Sub-env steps per second; random valid actions drawn from a pool of score matrices.
    ``cpu``: per second of this process's CPU time instead (steadier on a shared machine)."""
    clock = time.process_time if cpu else time.perf_counter
    n = env.num_envs
    obs, info = env.reset(seed=seed)
    n_actions = int(env.single_action_space.n)
    rng = np.random.default_rng(seed)
    pool = rng.random((8, n, n_actions)).astype(np.float32) + 1e-3
    # A full collection of this process's ~150 k objects (torch, numba, ray) takes ~70 ms; one
    # left pending from imports and set-up would land in a short timed run of either env by
    # chance. Collect first, for both envs alike (the loops' own collections still count).
    gc.collect()
    t0 = clock()
    for s in range(steps):
        mask = info.get("action_mask")
        scores = pool[s % 8] if mask is None else pool[s % 8] * mask
        obs, r, term, trunc, info = env.step(scores.argmax(axis=1))
    return n * steps / (clock() - t0)


def array_bytes(obj: Any) -> int:
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


class ContractOnlyVectorEnv(gym.vector.VectorEnv):
    """healgym's vector-env contract with no simulation at all: every step returns a fresh
    (N, n_obs) float32 observation (a copy), rewards, flags and the same info keys with an
    all-valid (N, n_actions) mask. In the bench loop it is the ceiling of any env with this
    observation and action space: what the contract alone costs."""

    def __init__(self, n: int) -> None:
        m = gym.make_vec(healgym.ENV_ID, num_envs=1).unwrapped.model
        self.num_envs = n
        self.single_observation_space = m.observation_space
        self.single_action_space = m.action_space
        self._obs = np.random.default_rng(0).random((n, m.n_obs)).astype(np.float32)
        self._mask = np.ones((n, len(m.actions)), np.int8)
        self._t = np.zeros(n)

    def _info(self) -> dict[str, Any]:
        n = self.num_envs
        ones = np.ones(n, dtype=bool)
        return {"action_mask": self._mask, "_action_mask": ones, "time_s": self._t.copy(),
                "_time_s": ones, "slo_violated": np.zeros(n, dtype=bool),
                "_slo_violated": ones, "invalid_action": np.zeros(n, dtype=bool),
                "_invalid_action": ones, "n_faults": np.zeros(n, np.int64), "_n_faults": ones}

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict]:
        return self._obs.copy(), self._info()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        np.require(actions, np.int64, ["C", "W"])
        n = self.num_envs
        return (self._obs.copy(), np.zeros(n), np.zeros(n, dtype=bool),
                np.zeros(n, dtype=bool), self._info())


def vector_figures(n: int, steps: int, repeats: int) -> dict[str, float]:
    from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

    env_runs, cart_runs, bare_runs = [], [], []
    healgym_env = gym.make_vec(healgym.ENV_ID, num_envs=n, num_threads=2)  # an idle machine
    cartpole = CartPoleVectorEnv(num_envs=n)
    bare = ContractOnlyVectorEnv(n)
    for e in (healgym_env, cartpole, bare):
        vector_steps_per_s(e, 30)  # compile the kernels, fill the slots
    for r in range(repeats):
        env_runs.append(vector_steps_per_s(healgym_env, steps, seed=r))
        cart_runs.append(vector_steps_per_s(cartpole, steps * 4, seed=r))
        bare_runs.append(vector_steps_per_s(bare, steps * 4, seed=r))
    env_sps, cart_sps = statistics.median(env_runs), statistics.median(cart_runs)
    bare_sps = statistics.median(bare_runs)
    # The same loop on one thread, per second of CPU time: healgym's work per sub-env step
    # against CartPole's, without the threads and with less of a shared VM's noise (repeats
    # in a process agree within ~2 %, processes within ~10 %; wall-clock ratios vary 10-30 %).
    one = gym.make_vec(healgym.ENV_ID, num_envs=n, num_threads=1)
    vector_steps_per_s(one, 30)
    env_cpu, cart_cpu = [], []
    for r in range(repeats):
        env_cpu.append(vector_steps_per_s(one, steps, seed=r, cpu=True))
        cart_cpu.append(vector_steps_per_s(cartpole, steps * 4, seed=r, cpu=True))
    env_c, cart_c = statistics.median(env_cpu), statistics.median(cart_cpu)
    return {"vector_env_steps_per_s": env_sps, "cartpole_vector_steps_per_s": cart_sps,
            "vector_vs_cartpole_vector_ratio": env_sps / cart_sps,
            "contract_only_steps_per_s": bare_sps,
            "contract_only_vs_cartpole_vector_ratio": bare_sps / cart_sps,
            "vector_env_cpu_ns_per_step_1thread": 1e9 / env_c,
            "cartpole_vector_cpu_ns_per_step": 1e9 / cart_c,
            "vector_vs_cartpole_cpu_ratio_1thread": env_c / cart_c,
            "vector_env_bytes_per_env": array_bytes(healgym_env.unwrapped) / n}


def _busy(seconds: float) -> None:  # a competing CPU-bound process (one core)
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def history_figures(n: int = 4096, steps: int = 361, repeats: int = 5) -> dict[str, Any]:
    """The history observation's cost: sub-env steps per second of CPU time with and without
    ``history=True``, alternating, in this process (median of ``repeats`` each)."""
    from healgym.envs.vector import PipelineHealVectorEnv

    plain = PipelineHealVectorEnv(num_envs=n, num_threads=1)
    hist = PipelineHealVectorEnv(num_envs=n, num_threads=1, history=True)
    vector_steps_per_s(plain, 5)  # compile outside the timing
    vector_steps_per_s(hist, 5)
    a, b = [], []
    for r in range(repeats):
        a.append(vector_steps_per_s(plain, steps, seed=r, cpu=True))
        b.append(vector_steps_per_s(hist, steps, seed=r, cpu=True))
    pa, pb = float(np.median(a)), float(np.median(b))
    return {"plain_steps_per_cpu_s": pa, "history_steps_per_cpu_s": pb,
            "history_vs_plain_ratio": pb / pa, "obs_size": {"plain": plain.model.n_obs,
                                                            "history": hist.model.n_obs}}


def thread_figures(n: int = 4096, steps: int = 361, repeats: int = 3) -> dict[str, Any]:
    """The vector env's wall-clock steps/s with one and two threads, on an idle machine and
    with one competing CPU-bound process (what an RLlib learner or torch does to env runners);
    the versions alternate within each repeat. The default (one thread) is the case that is
    never slow."""
    import multiprocessing as mp

    envs = {t: gym.make_vec(healgym.ENV_ID, num_envs=n, num_threads=t) for t in (1, 2)}
    for e in envs.values():
        vector_steps_per_s(e, 30)
    out: dict[str, Any] = {}
    for load in ("idle", "one_busy_process"):
        runs: dict[int, list[float]] = {1: [], 2: []}
        busy = None
        if load != "idle":
            busy = mp.get_context("spawn").Process(target=_busy, args=(600.0,), daemon=True)
            busy.start()
            time.sleep(0.5)
        try:
            for r in range(repeats):
                for t in (1, 2) if r % 2 == 0 else (2, 1):
                    runs[t].append(vector_steps_per_s(envs[t], steps, seed=r))
        finally:
            if busy is not None:
                busy.terminate()
                busy.join()
        one, two = statistics.median(runs[1]), statistics.median(runs[2])
        out[load] = {"one_thread_steps_per_s": one, "two_threads_steps_per_s": two,
                     "two_vs_one_thread_ratio": two / one, "runs": runs}
    return out


def qlearning_figures(budget_chunks: int = 6, chunk: int = 5000, episodes: int = 100
                      ) -> dict[str, Any]:
    """Batched Q-learning's update rate, and its held-out uptime after each training chunk
    paired against the expert runbook's on the same ``episodes`` seeds (the mean difference
    with its 95 % bootstrap interval): the wall time to first beat the expert runbook, or None
    when the budget (``budget_chunks`` x ``chunk`` vector steps x 256 sub-envs) runs out."""
    from agents.paired import compare
    from agents.qlearning import QConfig, QLearningAgent
    from agents.runbook import RunbookAgent
    from agents.study import play

    def make_env() -> Any:
        return gym.make(healgym.ENV_ID, time_range=(0.7, 1.0))

    seeds = range(10_000, 10_000 + episodes)
    expert = play(make_env, [RunbookAgent(make_env(), "configs/runbooks/expert.yaml")], seeds,
                  None)[0]
    venv = gym.make_vec(healgym.ENV_ID, num_envs=256, time_range=(0.0, 0.7))
    agent = QLearningAgent(venv.unwrapped.model, config=QConfig(
        epsilon_start=1.0, epsilon=0.05, decay_steps=budget_chunks * chunk * 2 // 3))
    agent.train(venv, 20, seed=0)  # compile the kernels outside the timing
    train_s, reached_s, curve = 0.0, None, []
    for k in range(budget_chunks):
        t0 = time.perf_counter()
        agent.train(venv, chunk, seed=k + 1)
        train_s += time.perf_counter() - t0
        diff = compare(play(make_env, [agent], seeds, None)[0], expert,
                       "uptime_pct")["difference"]
        curve.append({"train_seconds": train_s, "uptime_diff_pp": diff["value"],
                      "ci_95": [diff["ci_low"], diff["ci_high"]]})
        if reached_s is None and diff["value"] > 0:
            reached_s = train_s
    updates = budget_chunks * chunk * 256
    return {"qlearning_updates_per_s": updates / train_s,
            "qlearning_seconds_to_beat_expert_uptime": reached_s,  # None: not in the budget
            "qlearning_budget_vector_steps": budget_chunks * chunk,
            "qlearning_eval_episodes": episodes,
            "qlearning_uptime_curve": curve}


def ppo_figures(budget_chunks: int = 6, chunk: int = 25, episodes: int = 100
                ) -> dict[str, Any]:
    """PPO (the zoo's config, :data:`experiments.zoo.PPO_CONFIG`, 4096 env steps an
    iteration) on make run's pipeline: its held-out uptime after each ``chunk`` of iterations,
    paired against the expert runbook's on the same ``episodes`` seeds, and the wall time of
    training to first beat it (None: not within ``budget_chunks`` x ``chunk`` iterations)."""
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/
    from agents.config import PPOConf
    from agents.paired import compare
    from agents.rllib import trainer
    from agents.rllib.policy import RLlibPolicy, export
    from agents.runbook import RunbookAgent
    from agents.study import play
    from experiments.random_chaos import sample_dataset
    from experiments.zoo import PPO_CONFIG, env_kwargs
    from healgym.sim.model import build_model

    ds = sample_dataset(Path(__file__).resolve().parents[1])

    def make_env() -> Any:
        return gym.make(healgym.ENV_ID, **env_kwargs(ds, "eval"))

    seeds = range(10_000, 10_000 + episodes)
    expert = play(make_env, [RunbookAgent(make_env(), "configs/runbooks/expert.yaml")], seeds,
                  None)[0]
    trainer.init_ray(num_cpus=2)
    conf = PPOConf(iterations=budget_chunks * chunk, checkpoint_every=0, **PPO_CONFIG)
    algo = trainer.build_config(conf, env_kwargs(ds, "train"), seed=0).build_algo()
    model = build_model(**env_kwargs(ds, "eval"))
    train_s, reached_s, curve = 0.0, None, []
    try:
        for k in range(budget_chunks):
            t0 = time.perf_counter()
            for _ in range(chunk):
                algo.train()
            train_s += time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                export(algo.get_module(), "ppo", model, Path(tmp), ray_checkpoint=False)
                policy = RLlibPolicy.load(Path(tmp), model)
            diff = compare(play(make_env, [policy], seeds, None)[0], expert,
                           "uptime_pct")["difference"]
            curve.append({"iterations": (k + 1) * chunk, "train_seconds": train_s,
                          "uptime_diff_pp": diff["value"],
                          "ci_95": [diff["ci_low"], diff["ci_high"]]})
            print(f"  PPO {(k + 1) * chunk} iterations ({train_s:.0f} s): uptime minus the "
                  f"expert's {diff['value']:+.1f} pp", flush=True)
            if reached_s is None and diff["value"] > 0:
                reached_s = train_s
    finally:
        algo.stop()
    return {"ppo_seconds_to_beat_expert_uptime": reached_s,  # None: not in the budget
            "ppo_budget_iterations": budget_chunks * chunk,
            "ppo_eval_episodes": episodes, "ppo_uptime_curve": curve}


def evaluation_figures(episodes: int = 24, repeats: int = 3) -> dict[str, Any]:
    """Held-out evaluation of the zoo's first PPO policy: its episodes one by one (a forward
    pass per step per episode) against the same episodes in lockstep in the vector env
    (``agents.study.play_batched``), alternated, in the same process; the episodes are equal."""
    from agents.rllib.policy import RLlibPolicy
    from agents.study import play

    root = Path(__file__).resolve().parents[1]

    def make_env() -> Any:
        return gym.make(healgym.ENV_ID)

    def make_vec(n: int) -> Any:
        return gym.make_vec(healgym.ENV_ID, num_envs=n)

    policy = RLlibPolicy.load(root / "zoo/ppo/seed0", make_env().unwrapped.model)
    seeds = range(30_000, 30_000 + episodes)
    play(make_env, [policy], seeds[:2], None, make_vec=make_vec)  # warm-up
    one, lock = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a = play(make_env, [policy], seeds, None)[0]
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = play(make_env, [policy], seeds, None, make_vec=make_vec)[0]
        lock.append(time.perf_counter() - t0)
        assert a == b
    return {"eval_episodes": episodes,
            "eval_one_by_one_episodes_per_s": episodes / statistics.median(one),
            "eval_lockstep_episodes_per_s": episodes / statistics.median(lock),
            "eval_lockstep_vs_one_by_one_ratio": statistics.median(one) /
            statistics.median(lock)}


def router_figures(episodes: int = 128, repeats: int = 3) -> dict[str, Any]:
    """The zoo's router + specialists in lockstep against the zoo's Q-table in lockstep, the
    same held-out episodes, alternated in the same process: what the diagnosis (a 40-tree
    forest over a 6-observation window, every step) costs on top of the table lookups; and the
    router's one-by-one decide (the serving path) per decision."""
    from agents.qlearning import QLearningAgent
    from agents.specialists import load
    from agents.study import play

    root = Path(__file__).resolve().parents[1]

    def make_env() -> Any:
        return gym.make(healgym.ENV_ID)

    def make_vec(n: int) -> Any:
        return gym.make_vec(healgym.ENV_ID, num_envs=n)

    model = make_env().unwrapped.model
    router = load(root / "zoo/specialists/seed0", model)
    table = QLearningAgent.load(root / "zoo/qlearning/seed0", model)
    seeds = range(30_000, 30_000 + episodes)
    play(make_env, [router, table], seeds[:4], None, make_vec=make_vec)  # warm-up
    r_s, q_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        play(make_env, [router], seeds, None, make_vec=make_vec)
        r_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        play(make_env, [table], seeds, None, make_vec=make_vec)
        q_s.append(time.perf_counter() - t0)
    env = make_env()
    obs, info = env.reset(seed=1)
    router.reset()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        router.decide(obs, info)
        n += 1
    return {"router_lockstep_episodes_per_s": episodes / statistics.median(r_s),
            "router_vs_qtable_lockstep_ratio": statistics.median(q_s) / statistics.median(r_s),
            "router_decide_us": 1e6 * (time.perf_counter() - t0) / n}


def resets_per_s(n: int) -> float:
    env = gym.make(healgym.ENV_ID)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for i in range(n):
        env.reset(seed=i)
    return n / (time.perf_counter() - t0)


def rllib_figures(repeats: int, fragments: int = 8) -> dict[str, Any]:
    import tempfile

    from omegaconf import OmegaConf

    from agents.config import PPOConf
    from agents.rllib import trainer
    from agents.rllib.policy import RLlibPolicy, export

    trainer.init_ray(num_cpus=2)
    conf = OmegaConf.structured(PPOConf(num_env_runners=0,
                                          num_envs_per_env_runner=64, rollout_fragment_length=64))
    algos = {"healgym": trainer.build_config(conf, {}, 0).build_algo(),
             "cartpole": trainer.build_config(conf, {}, 0, env="CartPole-v1").build_algo()}
    per_call = 64 * 64 * fragments
    runs: dict[str, list[float]] = {k: [] for k in algos}

    def sample(name: str) -> float:
        runner = algos[name].env_runner_group.local_env_runner
        t0 = time.perf_counter()
        n = 0
        while n < per_call:
            n += sum(len(e) for e in runner.sample(num_timesteps=64 * 64, explore=True))
        return n / (time.perf_counter() - t0)

    for name in algos:
        sample(name)  # warm-up
    for _ in range(repeats):
        for name in algos:
            runs[name].append(sample(name))
    env = PipelineHealEnv()
    with tempfile.TemporaryDirectory() as tmp:
        export(algos["healgym"].get_module(), "ppo", env.model, Path(tmp) / "policy")
        policy = RLlibPolicy.load(Path(tmp) / "policy", env.model)
    for a in algos.values():
        a.stop()
    obs, info = env.reset(seed=0)
    lat = []
    for i in range(2200):
        t0 = time.perf_counter()
        d = policy.decide(obs, info)
        lat.append((time.perf_counter() - t0) * 1000)
        obs, _, term, trunc, info = env.step(d.action)
        if term or trunc:
            obs, info = env.reset(seed=i)
    lat_a = np.asarray(lat[200:])
    h, c = statistics.median(runs["healgym"]), statistics.median(runs["cartpole"])
    return {"rllib_env_steps_sampled_per_s": h, "rllib_cartpole_env_steps_sampled_per_s": c,
            "rllib_vs_cartpole_ratio": h / c,
            "rllib_policy_inference_ms_p50": float(np.percentile(lat_a, 50)),
            "rllib_policy_inference_ms_p99": float(np.percentile(lat_a, 99)),
            "rllib_runs": runs,
            "rllib_setup": {"algo": "PPO", "num_env_runners": 0, "num_envs_per_env_runner": 64,
                            "rollout_fragment_length": 64, "hidden": list(conf.hidden),
                            "vectorize_mode": "vector_entry_point", "explore": True,
                            "steps_per_run": per_call}}


def serving_figures(n: int = 400) -> dict[str, Any]:
    import sqlite3
    import sys
    import tempfile
    import threading

    import requests
    import uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from serving_helpers import DictSource  # type: ignore[import-not-found]

    from agents.qlearning import QLearningAgent
    from agents.rllib.policy import RLlibPolicy, export
    from healgym.serving.actuators import ActuatorConf
    from healgym.serving.adapter import Adapter
    from healgym.serving.api import create_app
    from healgym.serving.config import GuardConf, ServeConf
    from healgym.serving.decision_log import DecisionLog
    from healgym.serving.observe import Observer

    env = PipelineHealEnv()
    m = env.model
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp())
    policies: dict[str, Any] = {"qlearning": QLearningAgent(m)}
    try:
        from omegaconf import OmegaConf

        from agents.config import PPOConf
        from agents.rllib import trainer
        from healgym.sim.observation import Signals  # noqa: F401

        trainer.init_ray(num_cpus=2)
        algo = trainer.build_config(OmegaConf.structured(PPOConf()), {}, 0
                                    ).build_algo()
        export(algo.get_module(), "ppo", m, tmp / "ppo")
        algo.stop()
        policies["ppo"] = RLlibPolicy.load(tmp / "ppo", m)
    except Exception as exc:  # noqa: BLE001 - the bench reports what it could measure
        out["ppo_error"] = str(exc)
    conf = ServeConf(guard=GuardConf(cooldown_s=0, rate_limit=10**9, hourly_budget=10**9),
                     actuators=[ActuatorConf(type="log", actions=list(m.action_names[1:]))])
    for name, pol in policies.items():
        src = DictSource(m)
        src.crash("serve")
        a = Adapter(conf, pol, m, DecisionLog(f"sqlite:///{tmp / name}.db"),
                    Observer(m, conf.source, src))
        lat, ref = [], []
        obs, info = env.reset(seed=0)
        for _ in range(n):
            t0 = time.perf_counter()
            a.step()
            lat.append((time.perf_counter() - t0) * 1e6)
            t0 = time.perf_counter()
            pol.decide(obs, info)
            ref.append((time.perf_counter() - t0) * 1e6)
        la, ra = np.asarray(lat[20:]), np.asarray(ref[20:])
        out[f"decision_latency_{name}_p50_us"] = float(np.percentile(la, 50))
        out[f"decision_latency_{name}_p99_us"] = float(np.percentile(la, 99))
        out[f"policy_decide_{name}_p50_us"] = float(np.percentile(ra, 50))
        out[f"decision_vs_policy_{name}_ratio"] = float(np.percentile(la, 50) /
                                                        np.percentile(ra, 50))
    out["decision_latency_p50_us"] = out["decision_latency_qlearning_p50_us"]
    out["decision_latency_p99_us"] = out["decision_latency_qlearning_p99_us"]
    # HTTP round trip: an authenticated POST over loopback
    a = Adapter(conf, policies["qlearning"], m, DecisionLog(f"sqlite:///{tmp / 'http'}.db"),
                Observer(m, conf.source, DictSource(m)))
    token = "b" * 32
    server = uvicorn.Server(uvicorn.Config(create_app(a, token), host="127.0.0.1", port=0,
                                           log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    session = requests.Session()
    rt = []
    for i in range(n):
        t0 = time.perf_counter()
        session.post(f"http://127.0.0.1:{port}/{'pause' if i % 2 else 'resume'}",
                     json={"operator": "bench", "reason": "bench"},
                     headers={"Authorization": f"Bearer {token}"}, timeout=10).raise_for_status()
        rt.append((time.perf_counter() - t0) * 1000)
    # the web console: a signed-in page render against /healthz over the same connection
    session.post(f"http://127.0.0.1:{port}/console/login", data={"operator": "bench",
                                                               "token": token}, timeout=10)
    page, health = [], []
    for _ in range(60):
        t0 = time.perf_counter()
        session.get(f"http://127.0.0.1:{port}/console", timeout=10).raise_for_status()
        page.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        session.get(f"http://127.0.0.1:{port}/healthz", timeout=10).raise_for_status()
        health.append((time.perf_counter() - t0) * 1000)
    server.should_exit = True
    out["console_render_ms_p50"] = float(np.percentile(page[10:], 50))
    out["console_vs_healthz_ratio"] = float(np.percentile(page[10:], 50) /
                                            np.percentile(health[10:], 50))
    out["http_round_trip_ms_p50"] = float(np.percentile(rt[20:], 50))
    out["http_round_trip_ms_p99"] = float(np.percentile(rt[20:], 99))
    out.update(approval_loop_figures(m, policies["qlearning"], tmp))
    # durable writes
    log = DecisionLog(f"sqlite:///{tmp / 'writes'}.db")
    t0 = time.perf_counter()
    for _ in range(n):
        log.new_decision(policy="p", policy_version="1", observation=np.zeros(69),
                         signals={}, proposed_action="noop", explanation={}, guard={},
                         status="proposed")
    out["decision_log_writes_per_s"] = n / (time.perf_counter() - t0)
    con = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE d (id TEXT PRIMARY KEY, body TEXT)")
    t0 = time.perf_counter()
    for i in range(n):
        con.execute("BEGIN")
        con.execute("INSERT INTO d VALUES (?, ?)", (str(i), "x" * 1500))
        con.execute("COMMIT")
    out["sqlite_raw_writes_per_s"] = n / (time.perf_counter() - t0)
    out["decision_log_vs_raw_sqlite_ratio"] = (out["decision_log_writes_per_s"]
                                               / out["sqlite_raw_writes_per_s"])
    return out


def approval_loop_figures(m: Any, policy: Any, tmp: Path, action_s: float = 45.0,
                          period_s: float = 0.2) -> dict[str, Any]:
    """The decision loop's intervals while an approved slow action (a webhook answering after
    ``action_s``) runs in the background: the p99 interval against the loop's period (it
    should stay at the period; before the approval was taken off the loop, no decision at all
    was taken for the action's whole duration)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from serving_helpers import DictSource  # type: ignore[import-not-found]

    from healgym.serving.actuators import ActuatorConf
    from healgym.serving.adapter import Adapter
    from healgym.serving.config import GuardConf, ServeConf
    from healgym.serving.decision_log import DecisionLog
    from healgym.serving.observe import Observer

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(action_s)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    conf = ServeConf(human={"mode": "approval", "timeout_s": 10_000},
                     guard=GuardConf(cooldown_s=0), actuators=[ActuatorConf(
                         type="webhook", actions=["restart_serve"], timeout_s=action_s + 30,
                         params={"url": f"http://127.0.0.1:{httpd.server_address[1]}/"})])
    src = DictSource(m)
    src.crash("serve")
    a = Adapter(conf, policy, m, DecisionLog(f"sqlite:///{tmp / 'approval'}.db"),
                Observer(m, conf.source, src))
    a.pending.clear()
    did = a.step()
    if did not in a.pending:  # the Q-table may not propose the restart: ask for it by hand
        from healgym.serving.adapter import Pending

        a.pending[did] = Pending(did, a.names.index("restart_serve"), time.time())
    t_start = time.perf_counter()
    a.approve(did, "bench", "bench")
    approve_s = time.perf_counter() - t_start
    stamps = []
    while a.running and time.perf_counter() - t_start < action_s + 30:
        stamps.append(time.perf_counter())
        a.step()
        time.sleep(max(period_s - (time.perf_counter() - stamps[-1]), 0.0))
    a.wait_idle(60)
    httpd.shutdown()
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([float("nan")])
    return {"approval_returns_s": approve_s, "approval_action_s": action_s,
            "loop_period_s": period_s, "loop_steps_during_action": len(stamps),
            "loop_interval_p99_s": float(np.percentile(gaps, 99)),
            "loop_interval_p99_vs_period_ratio": float(np.percentile(gaps, 99) / period_s)}


def analysis_figures(episodes: int = 10) -> dict[str, Any]:
    """The analyst tools on a decision log of ``episodes`` simulated episodes (the classic
    runbook behind the adapter, an oracle operator): reading it against a raw sqlite read of the
    same rows (JSON decoded), the report, serving in the simulator against plain env steps, and
    fine-tuning."""
    import json as _json
    import sqlite3
    import tempfile

    from agents.evaluation import run_episode
    from agents.offline import finetune_qtable, transitions_from_log
    from agents.qlearning import QLearningAgent
    from agents.runbook import RunbookAgent
    from healgym.analysis import load_log
    from healgym.analysis.replay import replay_incidents
    from healgym.analysis.report import write_report
    from healgym.serving.sim import OracleOperator, simulate_serving

    root = Path(__file__).resolve().parents[1]
    env = PipelineHealEnv()
    runbook = RunbookAgent(env, root / "configs/runbooks/classic.yaml")
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "decisions.db"
    op = OracleOperator(env)
    t0 = time.perf_counter()
    n = 0
    for i in range(episodes):
        n += simulate_serving(env, runbook, f"sqlite:///{path}", seed=i, operator=op,
                              start=1.79e9 + i * 4000)["decisions"]
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(episodes):
        run_episode(env, runbook, i)
    env_s = time.perf_counter() - t0
    out: dict[str, Any] = {"analysis_log_decisions": n,
                           "sim_serving_decisions_per_s": n / sim_s,
                           "sim_serving_vs_env_steps_ratio": (n / sim_s) / (n / env_s)}
    runs_raw, runs_load = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        con = sqlite3.connect(path)
        rows = con.execute("select observation, signals, explanation, guard from decisions"
                           ).fetchall()
        evs = con.execute("select payload from events").fetchall()
        for r in rows:
            for v in r:
                _json.loads(v) if v else None
        for (v,) in evs:
            _json.loads(v)
        con.close()
        runs_raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        frames = load_log(str(path))
        runs_load.append(time.perf_counter() - t0)
    out["load_log_decisions_per_s"] = n / statistics.median(runs_load)
    out["load_log_vs_raw_sqlite_json_ratio"] = statistics.median(runs_raw) / statistics.median(
        runs_load)
    t0 = time.perf_counter()
    write_report(str(path), tmp / "report.html")
    out["report_seconds"] = time.perf_counter() - t0
    out["report_vs_load_ratio"] = statistics.median(runs_load) / out["report_seconds"]
    t0 = time.perf_counter()
    tr = transitions_from_log(frames, env.model)
    agent = QLearningAgent(env.model)
    finetune_qtable(agent, tr, epochs=20)
    out["finetune_transition_sweeps_per_s"] = len(tr) * 20 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    replayed = replay_incidents(frames, env.model)
    out["replay_diagnoses_per_s"] = len(replayed) / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("results/bench.json"))
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-qlearning", action="store_true")
    p.add_argument("--skip-rllib", action="store_true")
    p.add_argument("--skip-ppo", action="store_true",
                   help="skip the ~6-minute PPO time-to-beat-the-expert figure")
    p.add_argument("--only-serving", action="store_true",
                   help="measure only the serving figures and merge them into --out")
    p.add_argument("--only-analysis", action="store_true",
                   help="measure only the analyst tools' figures and merge them into --out")
    args = p.parse_args(argv)
    if args.only_analysis:
        prev = json.loads(args.out.read_text()) if args.out.is_file() else {}
        fig = analysis_figures()
        prev.update(fig)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(prev, indent=2) + "\n")
        print(json.dumps(fig, indent=2))
        return 0
    if args.only_serving:
        prev = json.loads(args.out.read_text()) if args.out.is_file() else {}
        prev.update(serving_figures())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(prev, indent=2) + "\n")
        print(json.dumps({k: v for k, v in prev.items() if "decision" in k or "http" in k
                          or "sqlite" in k}, indent=2))
        return 0
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
    # Whole episode cycles (361 steps: 360 and the autoreset), from a seeded reset: the batch's
    # envs start together, and faults build up over an episode, so a shorter run would time
    # mostly its cheap beginning (the first 100 steps ran ~8 % faster than the cycle's mean).
    cycle = 361
    thr = thread_figures(4096, cycle, max(3, args.repeats))
    result["threads_n4096"] = thr
    print("threads, N=4096: two threads vs one, idle "
          f"{thr['idle']['two_vs_one_thread_ratio']:.2f}x, with one busy process "
          f"{thr['one_busy_process']['two_vs_one_thread_ratio']:.2f}x (default: one thread)")
    hf = history_figures(4096, cycle, max(3, args.repeats))
    result["history_obs_n4096"] = hf
    print(f"history observation, N=4096: {hf['history_vs_plain_ratio']:.2f}x the plain "
          f"observation's steps per CPU second ({hf['obs_size']['history']} vs "
          f"{hf['obs_size']['plain']} values)")
    for n, steps in ((4096, cycle), (65536, cycle)):
        # a cycle at N=4096 takes ~0.2 s: more repeats there, for a steadier median
        fig = vector_figures(n, steps, max(5, args.repeats) if n <= 4096 else
                             max(2, args.repeats // 2))
        result[f"vector_n{n}"] = fig
        print(f"vector N={n:>6}: healgym {fig['vector_env_steps_per_s']:>12,.0f}  CartPoleVector "
              f"{fig['cartpole_vector_steps_per_s']:>14,.0f} sub-env steps/s  ratio "
              f"{fig['vector_vs_cartpole_vector_ratio']:.3f}  "
              f"{fig['vector_env_bytes_per_env']:,.0f} bytes/env; the contract alone (no "
              f"simulation) {fig['contract_only_vs_cartpole_vector_ratio']:.3f}; one thread, CPU "
              f"time: {fig['vector_env_cpu_ns_per_step_1thread']:.0f} vs "
              f"{fig['cartpole_vector_cpu_ns_per_step']:.0f} ns a sub-env step")
    ev = evaluation_figures()
    result.update(ev)
    print(f"evaluation (PPO, {ev['eval_episodes']} held-out episodes): lockstep "
          f"{ev['eval_lockstep_episodes_per_s']:.0f} episodes/s, one by one "
          f"{ev['eval_one_by_one_episodes_per_s']:.1f}: "
          f"{ev['eval_lockstep_vs_one_by_one_ratio']:.1f}x")
    rf = router_figures()
    result.update(rf)
    print(f"router + specialists (lockstep, 128 episodes): "
          f"{rf['router_lockstep_episodes_per_s']:.0f} episodes/s, "
          f"{rf['router_vs_qtable_lockstep_ratio']:.2f}x the Q-table's; one decision "
          f"{rf['router_decide_us']:.0f} us")
    if not args.skip_qlearning:
        q = qlearning_figures()
        result.update(q)
        reached = q["qlearning_seconds_to_beat_expert_uptime"]
        last = q["qlearning_uptime_curve"][-1]
        print(f"Q-learning {q['qlearning_updates_per_s']:,.0f} updates/s; the expert runbook's "
              "held-out uptime " + (f"beaten after {reached:.0f} s of training" if reached
                                    is not None else
                                    f"not beaten within {q['qlearning_budget_vector_steps']:,} "
                                    f"vector steps ({last['train_seconds']:.0f} s; last paired "
                                    f"difference {last['uptime_diff_pp']:+.1f} pp "
                                    f"[{last['ci_95'][0]:+.1f}, {last['ci_95'][1]:+.1f}])"))
    if not args.skip_ppo:
        pp = ppo_figures()
        result.update(pp)
        reached = pp["ppo_seconds_to_beat_expert_uptime"]
        last = pp["ppo_uptime_curve"][-1]
        print("PPO: the expert runbook's held-out uptime " + (
            f"beaten after {reached:.0f} s of training" if reached is not None else
            f"not beaten within {pp['ppo_budget_iterations']} iterations "
            f"({last['train_seconds']:.0f} s; last paired difference "
            f"{last['uptime_diff_pp']:+.1f} pp [{last['ci_95'][0]:+.1f}, "
            f"{last['ci_95'][1]:+.1f}])"))
    if not args.skip_rllib:
        r = rllib_figures(max(3, args.repeats // 2))
        result.update(r)
        print(f"RLlib PPO sampling: healgym {r['rllib_env_steps_sampled_per_s']:,.0f} vs CartPole "
              f"{r['rllib_cartpole_env_steps_sampled_per_s']:,.0f} env steps/s, ratio "
              f"{r['rllib_vs_cartpole_ratio']:.3f} (target >= 1.0); exported policy inference "
              f"p50 {r['rllib_policy_inference_ms_p50']:.3f} ms, "
              f"p99 {r['rllib_policy_inference_ms_p99']:.3f} ms")
    result.update(serving_figures())
    print(f"serving: decision p50 {result['decision_latency_p50_us']:.0f} us, p99 "
          f"{result['decision_latency_p99_us']:.0f} us (Q-learning); HTTP round trip p50 "
          f"{result['http_round_trip_ms_p50']:.2f} ms; decision log "
          f"{result['decision_log_writes_per_s']:.0f} writes/s "
          f"({result['decision_log_vs_raw_sqlite_ratio']:.2f}x raw sqlite)")
    print(f"serving: console page {result['console_render_ms_p50']:.1f} ms "
          f"({result['console_vs_healthz_ratio']:.1f}x /healthz); while an approved "
          f"{result['approval_action_s']:.0f} s action runs the loop's p99 interval is "
          f"{result['loop_interval_p99_s']:.2f} s "
          f"({result['loop_interval_p99_vs_period_ratio']:.2f}x its "
          f"{result['loop_period_s']:g} s period; the approval returned in "
          f"{result['approval_returns_s'] * 1000:.0f} ms)")
    result.update(analysis_figures())
    print(f"analysis: load_log {result['load_log_vs_raw_sqlite_json_ratio']:.2f}x a raw sqlite "
          f"read + JSON decode; report of {result['analysis_log_decisions']} decisions in "
          f"{result['report_seconds']:.1f} s; serving in the simulator "
          f"{result['sim_serving_vs_env_steps_ratio']:.2f}x plain env steps")
    v = result["vector_n4096"]
    result["vector_env_steps_per_s"] = v["vector_env_steps_per_s"]
    result["cartpole_vector_steps_per_s"] = v["cartpole_vector_steps_per_s"]
    result["vector_env_speedup_over_scalar"] = v["vector_env_steps_per_s"] / env_sps
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"healgym  {env_sps:>10,.0f} steps/s")
    print(f"CartPole {cart_sps:>10,.0f} steps/s")
    print(f"ratio    {env_sps / cart_sps:>10.3f}  (target >= 0.5)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
