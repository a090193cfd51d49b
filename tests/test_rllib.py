"""RLlib agents: PPO learns an easy case, checkpoints round-trip and resume, the exported policy
loads without Ray and never picks a masked action, DQN's masking module, batched MLflow
logging, and train.py/evaluate.py through Hydra.

The tests share one local Ray (2 CPUs) per worker and run on one xdist worker (group "ray").
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from agents.config import AGENTS, PPOConf
from agents.evaluation import run_episode
from agents.oracle import OracleAgent
from agents.random_agent import RandomAgent
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.errors import ConfigError, HealgymError

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

#: The easy case: the serving process crashes 10 s in; the optimum restarts it at once.
EASY = {"episode_steps": 30, "chaos": {"enabled": False},
        "scenario": {"name": "easy-crash",
                     "faults": [{"at": 10, "fault": "process_crash", "stage": "serve"}]}}


def agent_conf(kind: str = "ppo", **kw: Any) -> Any:
    base: dict[str, Any] = {
        "kind": kind, "iterations": 20, "train_batch_size": 512, "minibatch_size": 128,
        "num_epochs": 8, "lr": 1e-3, "hidden": [64, 64], "num_envs_per_env_runner": 16,
        "rollout_fragment_length": 32, "checkpoint_every": 0, "learning_starts": 256,
        "epsilon_decay_steps": 3000, "target_update_steps": 256}
    if kind == "dqn":
        base["train_batch_size"] = 64
    base.update(kw)
    schema = AGENTS.get(kind, PPOConf)  # an unknown kind keeps PPO's fields (a test of it)
    known = {f.name for f in dataclasses.fields(schema)}
    return OmegaConf.structured(schema(**{k: v for k, v in base.items() if k in known}))


@pytest.fixture(scope="module")
def ray_up():
    import ray

    from agents.rllib import trainer

    trainer.init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained_ppo(ray_up, tmp_path_factory):
    """PPO trained 20 iterations on the easy case, exported; (summary, policy dir, algo)."""
    from agents.rllib import trainer
    from agents.rllib.policy import export

    out = tmp_path_factory.mktemp("ppo")
    algo, summary = trainer.train(agent_conf(checkpoint_every=10), EASY, out, seed=0)
    policy_dir = export(algo.get_module(), "ppo", PipelineHealEnv(**EASY).model, out / "policy")
    yield summary, policy_dir, algo, out
    algo.stop()


def mean_reward(policy: Any, env: PipelineHealEnv, seeds: range) -> float:
    return float(np.mean([run_episode(env, policy, s)["total_reward"] for s in seeds]))


def test_ppo_learns_the_easy_case(trained_ppo):
    from agents.rllib.policy import RLlibPolicy

    summary, policy_dir, _, _ = trained_ppo
    assert summary.iterations == 20 and summary.env_steps == 20 * 512
    returns = [r for r in summary.returns if np.isfinite(r)]
    assert np.mean(returns[-3:]) > returns[0] + 500  # the training return improved
    env = PipelineHealEnv(**EASY)
    seeds = range(100, 110)  # held out: training used seeds from 0
    trained = mean_reward(RLlibPolicy.load(policy_dir, env.model), env, seeds)
    oracle = mean_reward(OracleAgent(env), env, seeds)
    rand = mean_reward(RandomAgent(int(env.action_space.n), 0), env, seeds)
    assert oracle > rand + 1000
    # the greedy policy closes at least half of the gap between random and the oracle
    assert trained > rand + 0.5 * (oracle - rand), (trained, rand, oracle)


def test_training_metrics_include_healgym_incident_metrics(trained_ppo):
    summary = trained_ppo[0]
    last = summary.history[-1]
    assert 0.0 <= last["env_runners/healgym/uptime_pct"] <= 100.0
    assert "learners/default_policy/policy_loss" in last
    assert last["env_runners/num_env_steps_sampled_lifetime"] == 20 * 512


def test_exported_policy_loads_without_ray_and_only_picks_valid_actions(trained_ppo):
    """In a fresh interpreter: no Ray started, no Ray worker; random masks are respected."""
    policy_dir = trained_ppo[1]
    code = f"""
import json, numpy as np, ray
from agents.rllib.policy import RLlibPolicy
from healgym.envs.pipeline_heal import PipelineHealEnv
env = PipelineHealEnv(episode_steps=30)
pol = RLlibPolicy.load({str(policy_dir)!r}, env.model)
rng = np.random.default_rng(0)
obs = rng.normal(0, 3, size=(500, env.observation_space.shape[0])).astype(np.float32)
mask = (rng.random((500, env.action_space.n)) < 0.3).astype(np.int8)
mask[:, 0] = 1
acts = pol.act(obs, mask)
ok = bool(mask[np.arange(500), acts].all())
o, info = env.reset(seed=3)
invalid = 0
for _ in range(30):
    d = pol.decide(o, info)
    invalid += int(info["action_mask"][d.action] == 0)
    o, r, term, trunc, info = env.step(d.action)
print(json.dumps({{"ok": ok, "invalid": invalid, "ray": ray.is_initialized(),
                  "distinct": len(set(acts.tolist()))}}))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"ok": True, "invalid": 0, "ray": False, "distinct": out["distinct"]}
    assert out["distinct"] > 1  # the masks changed the choice


def test_exported_policy_matches_the_trained_module_and_rllib_checkpoint(trained_ppo):
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    from agents.rllib.policy import RLlibPolicy

    _, policy_dir, algo, _ = trained_ppo
    pol = RLlibPolicy.load(policy_dir)
    rng = np.random.default_rng(1)
    obs = rng.normal(0, 2, size=(64, 73)).astype(np.float32)
    mask = np.ones((64, 23), dtype=np.float32)
    mask[:, 5:9] = 0

    def logits(module: Any) -> np.ndarray:
        batch = {Columns.OBS: torch.from_numpy(np.concatenate([obs, mask], axis=1))}
        with torch.no_grad():
            return module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS].numpy()

    ours = pol.scores(obs, mask)
    d = pol.decide(obs[0], {"action_mask": mask[0]})
    probs = np.exp(ours[0] - ours[0].max())
    assert d.explanation["confidence"] == pytest.approx(probs.max() / probs.sum(), rel=1e-6)
    for module in (algo.get_module(), RLModule.from_checkpoint(str(policy_dir / "rl_module"))):
        ref = logits(module)
        np.testing.assert_allclose(ours[mask > 0], ref[mask > 0], rtol=1e-5, atol=1e-5)
    assert np.isneginf(ours[:, 5:9]).all()


def test_checkpoint_resume_continues_from_the_saved_iteration(trained_ppo, tmp_path):
    from agents.rllib import trainer

    _, _, algo, out = trained_ppo
    ckpt = out / "checkpoints" / "iter_00010"
    final = out / "checkpoints" / "iter_00020"
    assert (ckpt / "rllib_checkpoint.json").is_file() and final.is_dir()
    resumed, summary = trainer.train(agent_conf(iterations=12, resume_from=str(final)), EASY,
                                     tmp_path, seed=0)
    try:
        # restored weights are the trained ones: same logits before any further update
        before = {k: np.asarray(v) for k, v in algo.get_module().get_state().items()}
        resumed_ckpt = trainer.build_config(agent_conf(), EASY, 0).build_algo()
        resumed_ckpt.restore_from_path(str(final))
        after = {k: np.asarray(v) for k, v in resumed_ckpt.get_module().get_state().items()}
        resumed_ckpt.stop()
        assert before.keys() == after.keys()
        for k in before:
            np.testing.assert_array_equal(before[k], after[k])
        # resuming from iteration 20 with iterations=12 trains nothing more and says so
        assert summary.iterations == 20 and summary.history == []
    finally:
        resumed.stop()
    resumed, summary = trainer.train(agent_conf(iterations=22, resume_from=str(ckpt)), EASY,
                                     tmp_path / "b", seed=0)
    resumed.stop()
    assert summary.iterations == 22 and len(summary.history) == 12  # 10 -> 22
    assert (tmp_path / "b" / "checkpoints" / "iter_00022" / "rllib_checkpoint.json").is_file()


def test_resume_from_a_folder_that_is_not_a_checkpoint(ray_up, tmp_path):
    from agents.rllib import trainer

    with pytest.raises(ConfigError, match="agent.resume_from=.*not an RLlib algorithm "
                                          "checkpoint"):
        trainer.train(agent_conf(resume_from=str(tmp_path)), EASY, tmp_path, seed=0)


def test_policy_refuses_another_pipeline_env_version_or_layout(trained_ppo, tmp_path):
    import shutil

    from agents.rllib.policy import RLlibPolicy

    policy_dir = trained_ppo[1]
    other = PipelineHealEnv(stages=["ingest", "serve"])
    with pytest.raises(HealgymError, match="trained for actions .* serve it on a pipeline "
                                           "with stages"):
        RLlibPolicy.load(policy_dir, other.model)
    for key, value, says in [("env", "healgym/PipelineHeal-v9", "trained on 'healgym/"),
                             ("layout", "swap", r"observation\[0\] was 'ingest.error_rate_z', "
                                                r"here it is 'ingest.latency_p95_ms_z'"),
                             ("format_version", 99, "v99 is not")]:
        bad = tmp_path / key
        shutil.copytree(policy_dir, bad)
        meta = json.loads((bad / "policy.json").read_text())
        if key == "layout":
            lay = meta["observation"]["layout"]
            lay[0], lay[1] = lay[1], lay[0]
        else:
            meta[key] = value
        (bad / "policy.json").write_text(json.dumps(meta))
        with pytest.raises(HealgymError, match=says):
            RLlibPolicy.load(bad, PipelineHealEnv().model)


def test_dqn_masking_module_never_explores_or_picks_masked_actions():
    import gymnasium as gym
    import torch
    from ray.rllib.core.columns import Columns

    from agents.rllib.env import masked_space
    from agents.rllib.modules import ActionMaskingDQNTorchRLModule

    env = PipelineHealEnv()
    space = masked_space(env.observation_space, 23)
    module = ActionMaskingDQNTorchRLModule(
        observation_space=space, action_space=gym.spaces.Discrete(23), inference_only=False,
        model_config={"fcnet_hiddens": [32], "epsilon": [(0, 1.0), (1, 1.0)], "dueling": True,
                      "double_q": True, "num_atoms": 1, "v_min": -10.0, "v_max": 10.0})
    rng = np.random.default_rng(2)
    obs = torch.from_numpy(rng.normal(size=(400, 73)).astype(np.float32))
    mask = torch.from_numpy((rng.random((400, 23)) < 0.25).astype(np.float32))
    mask[:, 0] = 1

    def batch() -> dict:
        return {Columns.OBS: torch.cat([obs, mask], dim=1)}

    q = module.compute_q_values(batch())["qf_preds"]
    assert torch.isneginf(q[mask == 0]).all() and torch.isfinite(q[mask == 1]).all()
    for fn in (lambda b: module.forward_exploration(b, t=0), module.forward_inference):
        acts = fn(batch())[Columns.ACTIONS]
        assert bool(mask[torch.arange(400), acts].all())
    explored = module.forward_exploration(batch(), t=0)[Columns.ACTIONS]
    assert len(set(explored.tolist())) > 5  # epsilon 1: random over the valid actions
    with pytest.raises(ValueError, match="need a flat Box observation ending in one 0/1 mask"):
        ActionMaskingDQNTorchRLModule(observation_space=gym.spaces.Box(-5, 5, (30,)),
                                      action_space=gym.spaces.Discrete(23),
                                      model_config={"fcnet_hiddens": [8]})


def test_dqn_trains_exports_and_acts_validly(ray_up, tmp_path):
    from agents.rllib import trainer
    from agents.rllib.policy import RLlibPolicy, export

    algo, summary = trainer.train(agent_conf("dqn", iterations=4), EASY, tmp_path, seed=0)
    try:
        losses = [h.get("learners/default_policy/qf_loss") for h in summary.history]
        assert any(v is not None and np.isfinite(v) for v in losses)  # it learned something
        export(algo.get_module(), "dqn", PipelineHealEnv(**EASY).model, tmp_path / "policy")
    finally:
        algo.stop()
    env = PipelineHealEnv(**EASY)
    pol = RLlibPolicy.load(tmp_path / "policy", env.model)
    obs, info = env.reset(seed=5)
    for _ in range(30):
        d = pol.decide(obs, info)
        assert info["action_mask"][d.action] == 1 and "q" in d.explanation
        obs, _, _, _, info = env.step(d.action)
    # registered, promoted and served from the registry like every other policy kind
    import mlflow

    from agents.registry import RLLIB_MODEL_CODE, log_and_register, promote
    from healgym.serving.policies import load_policy

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'reg.db'}")
    try:
        exp = mlflow.create_experiment("dqn-reg", artifact_location=str(tmp_path / "art"))
        with mlflow.start_run(experiment_id=exp):
            version = log_and_register(tmp_path / "policy", "healgym-dqn", RLLIB_MODEL_CODE)
        promote(version, "healgym-dqn")
        served, label = load_policy("models:/healgym-dqn@champion", env.model)
        assert label == f"healgym-dqn/{version} (@champion)"
        obs, info = env.reset(seed=6)
        assert info["action_mask"][served.decide(obs, info).action] == 1
        model = mlflow.pyfunc.load_model("models:/healgym-dqn@champion")
        with pytest.raises(Exception, match="action_mask"):
            model.predict({"obs": obs[None, :]})
    finally:
        mlflow.set_tracking_uri(None)


def test_metrics_go_to_mlflow_in_batches(tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from agents.rllib.trainer import BatchedMetrics

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    mlflow.set_experiment("batched-metrics")  # not an experiment id cached by an earlier test
    calls = []
    real = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with mlflow.start_run() as run:
        logger = BatchedMetrics(run.info.run_id, flush_every=5)
        for it in range(1, 13):
            logger.add({"env_runners/episode_return_mean": float(it), "a/b": 2.0 * it}, it)
        assert len(calls) == 2  # after iterations 5 and 10
        logger.flush()
    assert len(calls) == 3
    hist = MlflowClient().get_metric_history(run.info.run_id, "env_runners/episode_return_mean")
    assert [(m.step, m.value) for m in hist] == [(i, float(i)) for i in range(1, 13)]


def test_flatten_result_keeps_numeric_scalars():
    from agents.rllib.trainer import flatten_result, mlflow_metrics

    result = {"env_runners": {"episode_return_mean": np.float32(-3.5), "x": "text",
                              "num_episodes": 4, "nan": float("nan")},
              "learners": {"default_policy": {"policy_loss": np.array(0.25)}},
              "config": {"lr": 0.1}, "done": True}
    flat = flatten_result(result)
    assert flat == {"env_runners/episode_return_mean": -3.5, "env_runners/num_episodes": 4.0,
                    "learners/default_policy/policy_loss": 0.25, "config/lr": 0.1}
    assert set(mlflow_metrics(result)) == {"env_runners/episode_return_mean",
                                           "env_runners/num_episodes",
                                           "learners/default_policy/policy_loss"}


def test_unknown_algorithm_is_a_config_error():
    from agents.rllib.trainer import build_config

    with pytest.raises(ConfigError, match="agent.kind='sac'"):
        build_config(agent_conf("sac"), {}, 0)


def test_train_py_ppo_registers_and_evaluate_py_includes_it(tmp_path):
    """The user's commands: train.py agent=ppo trains, checkpoints, exports and registers;
    evaluate.py puts the exported policy in the table beside the baselines."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [f"mlflow.tracking_uri={uri}", "mlflow.experiment=healgym-test",
              f"output_dir={tmp_path / 'out'}", "env.episode_steps=60"]
    res = subprocess.run([sys.executable, "experiments/train.py", "agent=ppo",
                          "agent.iterations=3", "agent.train_batch_size=256",
                          "agent.minibatch_size=128", "agent.num_envs_per_env_runner=8",
                          "agent.rollout_fragment_length=32", "agent.checkpoint_every=2",
                          "register=true", *common], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = next((tmp_path / "out").glob("ppo__seed0__*"))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["iter_00002",
                                                                          "iter_00003"]
    meta = json.loads((run_dir / "policy" / "policy.json").read_text())
    assert meta["algo"] == "ppo" and meta["env"] == "healgym/PipelineHeal-v1"
    assert meta["iterations"] == 3 and len(meta["observation"]["layout"]) == 73
    assert "models:/healgym-ppo/1" in res.stdout
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias("healgym-ppo", "candidate").version) == "1"
    run = mlflow.search_runs(experiment_names=["healgym-test"], output_format="list")[0]
    hist = client.get_metric_history(run.info.run_id, "env_runners/num_env_steps_sampled_lifetime")
    assert [m.step for m in hist] == [1, 2, 3]
    # the registered model serves greedy valid actions through MLflow's pyfunc
    model = mlflow.pyfunc.load_model("models:/healgym-ppo@candidate")
    env = PipelineHealEnv()
    obs, info = env.reset(seed=0)
    mask = info["action_mask"][None, :].astype(float)
    assert mask[0, int(np.asarray(model.predict({"obs": obs[None, :], "action_mask": mask}))[0]
                   )] == 1
    res = subprocess.run([sys.executable, "experiments/evaluate.py", "episodes=2",
                          "policies=[ppo,noop]", "ppo_path=models:/healgym-ppo@candidate",
                          *common], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").glob("evaluate__*/results.json")).read_text())
    assert set(results["policies"]) == {"ppo", "noop"}
    assert results["policies"]["ppo"]["episodes"] == 2
    assert "| ppo |" in res.stdout
    res = subprocess.run([sys.executable, "experiments/evaluate.py", "policies=[ppo]",
                          *common], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "ppo_path is not set" in res.stderr + res.stdout


@pytest.mark.parametrize("num_envs", [None, 4])
def test_rllib_env_adds_the_mask_and_scales_only_the_learners_reward(num_envs):
    from agents.rllib.env import make_env
    from healgym.envs.vector import PipelineHealVectorEnv

    kw: dict[str, Any] = {"episode_steps": 20}
    if num_envs is None:
        plain: Any = PipelineHealEnv(**kw)
        wrapped: Any = make_env({**kw, "reward_scale": 0.01})
    else:
        plain = PipelineHealVectorEnv(num_envs=num_envs, episode_steps=20)
        wrapped = make_env({**kw, "reward_scale": 0.01, "num_envs": num_envs})
    o1, i1 = plain.reset(seed=7)
    o2, i2 = wrapped.reset(seed=7)
    n = o1.shape[-1]
    np.testing.assert_array_equal(o2[..., :n], o1)
    np.testing.assert_array_equal(o2[..., n:], np.asarray(i1["action_mask"], np.float32))
    space = wrapped.observation_space
    assert space.contains(o2)
    for _ in range(20):
        a = 0 if num_envs is None else np.zeros(num_envs, dtype=np.int64)
        o1, r1, *_, i1 = plain.step(a)
        o2, r2, *_, i2 = wrapped.step(a)
        np.testing.assert_allclose(r2, np.asarray(r1) * 0.01, rtol=1e-6)
    em = i2["episode_metrics"] if num_envs is None else i2["episode_metrics"][0]
    ref = i1["episode_metrics"] if num_envs is None else i1["episode_metrics"][0]
    assert em["total_reward"] == pytest.approx(ref["total_reward"])  # unscaled


def test_ray_address_connects_to_an_existing_cluster(tmp_path):
    """`ray.address` joins a running Ray cluster (a head started here with `ray start`) instead
    of starting a local Ray: train.py's PPO run uses the cluster's EnvRunner."""
    import shutil
    import signal
    import socket

    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's unix sockets live under it
    head = subprocess.Popen(
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(8)
        assert head.poll() is None, "the Ray head did not start"
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        res = subprocess.run(
            [sys.executable, "experiments/train.py", "agent=ppo", "agent.iterations=2",
             "agent.train_batch_size=256", "agent.minibatch_size=128",
             "agent.num_envs_per_env_runner=8", "agent.rollout_fragment_length=32",
             "agent.num_env_runners=1", "agent.num_cpus_per_env_runner=1",
             f"ray.address={socket.gethostbyname(socket.gethostname())}:{port}",
             "env.episode_steps=60",
             f"mlflow.tracking_uri={uri}", f"output_dir={tmp_path / 'out'}"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "2 iterations, 512 env steps" in res.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def served_dataset(tmp_path: Path, episodes: int) -> tuple[Any, Any, Path]:
    """A decision log of the classic runbook served in the simulator with an oracle operator,
    exported as an offline dataset: (env, transitions, dataset folder)."""
    from agents.offline import export_offline_dataset, transitions_from_log
    from agents.runbook import RunbookAgent
    from healgym.analysis import load_log
    from healgym.serving.sim import OracleOperator, simulate_serving

    env = PipelineHealEnv(episode_steps=120)
    for seed in range(episodes):
        simulate_serving(env, RunbookAgent(env, ROOT / "configs/runbooks/classic.yaml"),
                         f"sqlite:///{tmp_path}/log.db", seed=seed,
                         operator=OracleOperator(env), start=1.79e9 + seed * 5000)
    tr = transitions_from_log(load_log(str(tmp_path / "log.db")), env.model)
    return env, tr, export_offline_dataset(tr, env.model, tmp_path / "ds")


@pytest.mark.parametrize("algo", ["bc", "marwil"])
def test_rllib_trains_offline_on_an_exported_decision_log(ray_up, tmp_path, algo):
    """The offline dataset a decision log exports is what RLlib's BC and MARWIL train on: the
    loss falls and the learned module imitates the logged actions."""
    import torch

    from agents.rllib.offline import learner_module, offline_config

    env, tr, ds = served_dataset(tmp_path, episodes=3)
    algo_ = offline_config(ds, algo=algo, batch_size=128, seed=0).build_algo()
    try:
        losses = []
        for _ in range(25):
            r = algo_.train()
            losses.append(float(r["learners"]["default_policy"]["policy_loss"]))
        module = learner_module(algo_)
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(tr.obs)})
        pred = out["action_dist_inputs"].argmax(-1).numpy()
    finally:
        algo_.stop()
    assert np.mean(losses[-5:]) < np.mean(losses[:3])
    majority = np.bincount(tr.actions).max() / len(tr)
    assert (pred == tr.actions).mean() >= majority


def test_an_offline_policy_trained_on_masked_observations_is_served_like_ppo(ray_up, tmp_path):
    """masked=True trains healgym's masking module on the log's observations + masks; exported,
    it loads without Ray like any PPO policy, checks the pipeline and never picks a masked
    action."""
    from agents.offline import mask_from_obs
    from agents.rllib.offline import export_offline_policy, offline_config
    from agents.rllib.policy import RLlibPolicy

    env, tr, ds = served_dataset(tmp_path, episodes=2)
    algo = offline_config(ds, algo="marwil", masked=True, batch_size=128).build_algo()
    try:
        for _ in range(30):
            algo.train()
        path = export_offline_policy(algo, ds, env.model, tmp_path / "policy", "marwil")
    finally:
        algo.stop()
    policy = RLlibPolicy.load(path, env.model)
    assert json.loads((path / "policy.json").read_text())["trained_offline"]["algorithm"] == \
        "marwil"
    masks = mask_from_obs(env.model, tr.obs)
    acts = policy.act(tr.obs, masks)
    assert masks[np.arange(len(acts)), acts].all()
    assert (acts == tr.actions).mean() >= np.bincount(tr.actions).max() / len(tr) - 0.05
    m = run_episode(env, policy, 0)  # and it runs an episode like any policy
    assert m["invalid_actions"] == 0
    with pytest.raises(HealgymError, match="observation layout differs|actions"):
        RLlibPolicy.load(path, PipelineHealEnv(stages=["ingest", "serve"]).model)


# --------------------------------------------------------------------------- multi-agent view
def test_the_multi_agent_view_asks_the_family_that_owns_the_incident():
    """One pipeline, an agent per family: a data fault asks the data agent, a later crash the
    infra agent; quiet steps ask nobody and their rewards go to the last agent that acted; at
    the end every agent that acted sees the last observation; the rewards add up to the env's
    (scaled) after the first action."""
    from agents.rllib.multiagent import SpecialistsMultiAgentEnv
    from agents.specialists import default_families

    kw = {"episode_steps": 60, "chaos": {"enabled": False}, "scenario": {
        "name": "two-families", "faults": [
            {"at": 50, "fault": "covariate_drift", "stage": "ingest"},
            {"at": 300, "fault": "process_crash", "stage": "serve"}]}}
    env = SpecialistsMultiAgentEnv({**kw, "families": default_families(), "reward_scale": 0.5})
    ref = PipelineHealEnv(**kw)
    obs, _ = env.reset(seed=3)
    _, rinfo = ref.reset(seed=3)
    assert list(obs) == ["data"] and obs["data"].shape == env.observation_spaces["data"].shape
    assert env._info["time_s"] == 50.0  # the quiet steps before the drift ran on noop
    asked, total, ref_total = [], 0.0, 0.0
    while True:
        agent = next(iter(obs))
        asked.append(agent)
        obs, rew, term, trunc, info = env.step({agent: 0})
        total += sum(rew.values())
        while rinfo["time_s"] < env._info["time_s"]:
            _, r, *_, rinfo = ref.step(0)
            if rinfo["time_s"] > 50.0:  # rewards after the first action
                ref_total += r
        if term["__all__"] or trunc["__all__"]:
            break
    assert asked[0] == "data" and "infra" in asked and "model" not in asked
    assert set(obs) == {"data", "infra"} and set(info) == {"data", "infra"}
    assert info["infra"]["episode_metrics"]["incidents"]
    assert total == pytest.approx(0.5 * ref_total, rel=1e-9)


def test_multi_agent_ppo_specialists_learn_the_easy_case_and_serve_as_one_policy(ray_up,
                                                                                tmp_path):
    """agent=specialists agent.specialist=ppo: RLlib's multi-agent PPO (a module per family)
    on the easy crash; the infra specialist learns the restart, and the composite built from
    the exported modules loads without Ray and acts."""
    from agents.config import SpecialistsConf
    from agents.rllib.policy import RLlibPolicy
    from agents.specialists import load
    from agents.training import SpecialistsTrainer

    conf = OmegaConf.structured(SpecialistsConf(
        specialist="ppo", diagnoser_episodes=8, diagnoser_trees=4,
        ppo=agent_conf(iterations=20)))
    trainer = SpecialistsTrainer(**OmegaConf.to_container(conf))
    cfg = OmegaConf.create({"seed": 0, "runbook": {"expert": "configs/runbooks/expert.yaml"}})
    policy = trainer.fit(cfg, dict(EASY), tmp_path)
    policy.save(tmp_path)
    env = PipelineHealEnv(**EASY)
    infra = RLlibPolicy.load(tmp_path / "specialists" / "infra", env.model)

    class TruthRouted:
        """The training route: the specialist acts while a fault is active, else noop (the
        module never saw a healthy pipeline: the router's healthy answer covers those)."""

        name = "truth-routed"

        def reset(self):
            pass

        def decide(self, obs, info):
            from agents.policy import Decision

            return infra.decide(obs, info) if info["faults"] else Decision(0)

    seeds = range(100, 110)
    trained = mean_reward(TruthRouted(), env, seeds)
    oracle = mean_reward(OracleAgent(env), env, seeds)
    rand = mean_reward(RandomAgent(int(env.action_space.n), 0), env, seeds)
    assert trained > rand + 0.5 * (oracle - rand), (trained, rand, oracle)
    composite = load(tmp_path, env.model)
    assert {type(s).__name__ for s in composite.specialists.values()} == {"RLlibPolicy"}
    composite.reset()
    obs, info = env.reset(seed=100)
    for _ in range(10):
        d = composite.decide(obs, info)
        assert info["action_mask"][d.action]
        obs, *_, info = env.step(d.action)
