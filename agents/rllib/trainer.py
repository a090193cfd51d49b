"""Train PPO or DQN on healgym with RLlib, from the Hydra config.

The AlgorithmConfig is built from ``cfg.agent`` (algorithm, network, batch sizes, EnvRunners,
Learners) and ``cfg.ray`` (a cluster address or local resources). Sampling uses the natively
batched healgym vector env (``gym_env_vectorize_mode="vector_entry_point"``,
``num_envs_per_env_runner`` sub-envs per EnvRunner).

Every iteration's metrics are buffered and sent to MLflow in one ``log_batch`` call every
``mlflow_flush_every`` iterations (a synchronous MLflow call costs milliseconds; an iteration
logs dozens of metrics). Algorithm checkpoints go to ``<out>/checkpoints/iter_NNNNN`` every
``checkpoint_every`` iterations and at the end; ``agent.resume_from=<checkpoint>`` restores one
and continues counting iterations from it.

RLlib checkpoints are pickles: resume only from checkpoints you wrote. The exported policy
(:mod:`agents.rllib.policy`) is pickle-free.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healgym.errors import ConfigError

ALGOS = ("ppo", "dqn")
#: Result keys (flattened with "/") that go to MLflow, by prefix.
METRIC_PREFIXES = ("env_runners/episode_", "env_runners/num_env_steps_sampled",
                   "env_runners/num_episodes", "env_runners/healgym/",
                   "learners/default_policy/", "time_this_iter_s", "num_env_steps_sampled")


def quiet_ray() -> None:
    """Keep Ray's start-up chatter and deprecation warnings out of the user's terminal."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # RLlib re-registers its env wrapper for every algorithm it builds
    warnings.filterwarnings("ignore", message=".*Overriding environment rllib-single-agent")
    for name in ("ray", "ray.rllib", "ray.tune", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(address: str | None = None, num_cpus: int | None = None,
             runtime_env: dict[str, Any] | None = None) -> None:
    """Connect to the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379"), or
    start a local Ray with ``num_cpus``. A no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    quiet_ray()
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR,
                          "include_dashboard": False}
    if runtime_env:
        kw["runtime_env"] = dict(runtime_env)
    if address:
        try:
            ray.init(address=address, **kw)
        except ConnectionError as exc:
            raise ConfigError(
                f"ray.address={address!r}: no Ray cluster answered ({exc}). Start one with "
                "`ray start --head` (see docs/agents.md, 'On a Ray cluster'), or leave "
                "ray.address unset to train on a local Ray") from exc
    else:
        ray.init(num_cpus=num_cpus, **kw)


def episode_end_metrics(*, episode: Any, metrics_logger: Any = None, **_: Any) -> None:
    """RLlib callback: healgym's incident metrics of each finished episode, averaged per
    iteration under ``env_runners/healgym/*``."""
    if metrics_logger is None:
        return
    info = episode.get_infos(-1)
    em = info.get("episode_metrics") if isinstance(info, dict) else None
    if not em:
        return
    censored = [i["mttr_s"] if i["mttr_s"] is not None else em["elapsed_s"] - i["onset_s"]
                for i in em["incidents"]]
    values = {"total_reward": em["total_reward"], "uptime_pct": em["uptime_pct"],
              "downtime_s": em["downtime_s"],
              "n_actions": em["n_actions"], "action_cost": em["action_cost"],
              "unresolved_incidents": em["unresolved_incidents"],
              "ineffective_actions": em.get("ineffective_actions", 0)}
    if censored:
        values["mttr_censored_mean_s"] = sum(censored) / len(censored)
    for k, v in values.items():
        metrics_logger.log_value(("healgym", k), float(v), window=100)


def build_config(agent: Any, env_config: dict[str, Any], seed: int,
                 env: str | None = None) -> Any:
    """The RLlib AlgorithmConfig for ``agent.kind`` ("ppo" or "dqn") from ``cfg.agent``.

    ``env``: a registered env name; default: healgym's masked env (:mod:`agents.rllib.env`).
    Another env (CartPole, for the benchmark) gets the same config with RLlib's default
    module."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.rllib.env import RLLIB_ENV, register
    from agents.rllib.modules import module_class

    kind = agent.kind
    if kind not in ALGOS:
        raise ConfigError(f"agent.kind={kind!r}: RLlib agents are {list(ALGOS)}")
    if env is None:
        register()
    config = (PPOConfig() if kind == "ppo" else DQNConfig())
    config = config.environment(
        env or RLLIB_ENV,
        env_config={**env_config, "reward_scale": float(agent.reward_scale)} if env is None
        else {})
    config = config.env_runners(
        num_env_runners=int(agent.num_env_runners),
        num_envs_per_env_runner=int(agent.num_envs_per_env_runner),
        gym_env_vectorize_mode=agent.vectorize_mode,
        rollout_fragment_length=int(agent.rollout_fragment_length),
        num_cpus_per_env_runner=agent.num_cpus_per_env_runner)
    config = config.learners(num_learners=int(agent.num_learners),
                             num_cpus_per_learner=float(agent.num_cpus_per_learner),
                             num_gpus_per_learner=float(agent.num_gpus_per_learner))
    model_config = {"fcnet_hiddens": list(agent.hidden), "fcnet_activation": "relu"}
    spec_kw: dict[str, Any] = {"model_config": model_config}
    if env is None:
        spec_kw["module_class"] = module_class(kind)
    config = config.rl_module(rl_module_spec=RLModuleSpec(**spec_kw))
    common: dict[str, Any] = {"lr": float(agent.lr), "gamma": float(agent.gamma),
              "train_batch_size_per_learner": int(agent.train_batch_size)}
    if kind == "ppo":
        config = config.training(**common, minibatch_size=int(agent.minibatch_size),
                                 num_epochs=int(agent.num_epochs),
                                 entropy_coeff=float(agent.entropy_coeff),
                                 lambda_=float(agent.gae_lambda), clip_param=float(agent.clip),
                                 vf_clip_param=float(agent.vf_clip))
    else:
        config = config.training(
            **common, double_q=True, dueling=True, n_step=int(agent.n_step),
            target_network_update_freq=int(agent.target_update_steps),
            num_steps_sampled_before_learning_starts=int(agent.learning_starts),
            epsilon=[[0, float(agent.epsilon_start or 1.0)],
                     [int(agent.epsilon_decay_steps), float(agent.epsilon)]],
            replay_buffer_config={"type": "PrioritizedEpisodeReplayBuffer",
                                  "capacity": int(agent.replay_capacity),
                                  "alpha": 0.6, "beta": 0.4})
    if agent.extra_training:
        config = config.training(**dict(agent.extra_training))
    if env is None:
        config = config.callbacks(on_episode_end=episode_end_metrics)
    return config.debugging(seed=int(seed), log_level="ERROR").reporting(
        metrics_num_episodes_for_smoothing=100)


def flatten_result(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric scalars of an RLlib result dict, keys joined with "/"."""
    out: dict[str, float] = {}
    for k, v in result.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_result(v, key + "/"))
        elif isinstance(v, bool):
            continue
        elif isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[key] = float(v)
        elif hasattr(v, "item") and getattr(v, "size", 2) == 1:
            try:
                f = float(v.item())
            except (TypeError, ValueError):
                continue
            if math.isfinite(f):
                out[key] = f
    return out


def mlflow_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in flatten_result(result).items() if k.startswith(METRIC_PREFIXES)}


class BatchedMetrics:
    """Buffers per-iteration metrics and sends them in one MLflow ``log_batch`` per flush."""

    def __init__(self, run_id: str | None, flush_every: int = 10) -> None:
        self.run_id, self.flush_every = run_id, max(int(flush_every), 1)
        self.pending: list[Any] = []
        self.calls = 0
        self._since = 0

    def add(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.pending.extend(Metric(k.replace(":", "_"), v, ts, step) for k, v in metrics.items())
        self._since += 1
        if self._since >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.run_id is None:
            self.pending, self._since = [], 0
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for i in range(0, len(self.pending), 1000):  # MLflow's batch limit
            client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
            self.calls += 1
        self.pending, self._since = [], 0


@dataclass
class TrainSummary:
    iterations: int
    env_steps: int
    seconds: float
    checkpoint: str
    returns: list[float] = field(default_factory=list)  # mean episode reward per iteration
    history: list[dict[str, float]] = field(default_factory=list)


def train(agent: Any, env_config: dict[str, Any], out: Path, seed: int = 0,
          run_id: str | None = None, progress: bool = False,
          on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> tuple[
              Any, TrainSummary]:
    """Build the algorithm (or restore ``agent.resume_from``), train ``agent.iterations``
    iterations in total, checkpoint, and return (algorithm, summary). Ray must be up."""
    config = build_config(agent, env_config, seed)
    algo = config.build_algo()
    start = 0
    if agent.resume_from:
        path = Path(agent.resume_from)
        if not (path / "rllib_checkpoint.json").is_file():
            raise ConfigError(
                f"agent.resume_from={str(path)!r}: not an RLlib algorithm checkpoint (no "
                "rllib_checkpoint.json); use a folder under <run>/checkpoints/")
        algo.restore_from_path(str(path.resolve()))
        start = int(json.loads((path / "healgym_progress.json").read_text())["iteration"]) \
            if (path / "healgym_progress.json").is_file() else 0
    ckpt_dir = out / "checkpoints"
    metrics = BatchedMetrics(run_id, agent.mlflow_flush_every)
    summary = TrainSummary(iterations=start, env_steps=0, seconds=0.0, checkpoint="")
    t0 = time.perf_counter()
    bar: Any = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task(f"{agent.kind}", total=int(agent.iterations), completed=start)
    last = ""
    last_ret = float("nan")  # the latest iteration in which an episode ended
    try:
        for it in range(start, int(agent.iterations)):
            result = algo.train()
            flat = mlflow_metrics(result)
            summary.iterations = it + 1
            summary.env_steps = int(flat.get("env_runners/num_env_steps_sampled_lifetime",
                                             flat.get("num_env_steps_sampled_lifetime", 0)))
            # healgym's own (unscaled) episode reward; RLlib's return is x reward_scale
            ret = flat.get("env_runners/healgym/total_reward",
                           flat.get("env_runners/episode_return_mean", float("nan")))
            if math.isfinite(ret):
                last_ret = ret
            summary.returns.append(ret)
            summary.history.append(flat)
            metrics.add(flat, it + 1)
            if on_iteration is not None:
                on_iteration(it + 1, flat)
            if bar is not None:
                bar.update(task, completed=it + 1,
                           description=f"{agent.kind} return {last_ret:8.1f}")
            elif (it + 1) % max(int(agent.iterations) // 10, 1) == 0:
                print(f"[{agent.kind}] iteration {it + 1}/{agent.iterations}: "
                      f"episode reward {last_ret:.1f}, {summary.env_steps} env steps, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            if agent.checkpoint_every and (it + 1) % int(agent.checkpoint_every) == 0:
                last = save_checkpoint(algo, ckpt_dir, it + 1)
        if summary.iterations and not last.endswith(f"iter_{summary.iterations:05d}"):
            last = save_checkpoint(algo, ckpt_dir, summary.iterations)
    finally:
        metrics.flush()
        if bar is not None:
            bar.stop()
    summary.seconds = time.perf_counter() - t0
    summary.checkpoint = last
    return algo, summary


def save_checkpoint(algo: Any, ckpt_dir: Path, iteration: int) -> str:
    path = ckpt_dir / f"iter_{iteration:05d}"
    algo.save_to_path(str(path.resolve()))
    (path / "healgym_progress.json").write_text(json.dumps({"iteration": iteration}) + "\n")
    return str(path)
