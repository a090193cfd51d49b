"""Hydra configs compose; train and evaluate run through Hydra and record MLflow runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.config import env_kwargs, register

ROOT = Path(__file__).resolve().parents[1]
register()


@pytest.mark.parametrize("primary", ["train", "evaluate"])
@pytest.mark.parametrize("agent", ["qlearning", "runbook"])
@pytest.mark.parametrize("chaos", ["default", "none"])
def test_every_config_composes_and_builds_an_env(primary, agent, chaos):
    import gymnasium as gym

    import healgym

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(primary, overrides=[f"agent={agent}", f"chaos={chaos}"])
    assert cfg.agent.kind == agent and cfg.chaos.enabled == (chaos == "default")
    env = gym.make(healgym.ENV_ID, **env_kwargs(cfg))
    env.reset(seed=0)
    env.step(0)


@pytest.mark.parametrize(("override", "says"), [
    ("agent.alpah=0.1", "Key 'alpah' not in 'QLearningConf'"),
    ("agent=dqn agent.minibatch_size=64", "Key 'minibatch_size' not in 'DQNConf'"),
    ("agent.alpha=abc", "could not be converted to Float"),
    ("env.episode_steps=many", "could not be converted to Integer"),
])
def test_bad_overrides_fail_at_compose_time(override, says):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"), \
            pytest.raises(Exception) as exc:
        compose("train", overrides=override.split())
    chain = f"{exc.value} {exc.value.__cause__}"
    assert says in chain and override.split()[-1].split("=")[0] in chain


def mlflow_runs(uri: str) -> list:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["healgym-test"], output_format="list")


def test_train_and_evaluate_through_hydra_are_tracked(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [f"mlflow.tracking_uri={uri}", "mlflow.experiment=healgym-test",
              f"output_dir={tmp_path / 'out'}"]
    res = subprocess.run([sys.executable, "experiments/train.py", "agent.steps=120",
                          "agent.num_envs=8", "register=true", *common], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = list((tmp_path / "out").glob("qlearning__seed0__*"))
    assert saved and (saved[0] / "policy.json").is_file()
    res = subprocess.run([sys.executable, "experiments/evaluate.py", "episodes=2",
                          f"qlearning_path={saved[0]}", "runbook.tune_seeds=1",
                          "policies=[qlearning,runbook_tuned,oracle,noop]", *common], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = next((tmp_path / "out").glob("evaluate__*"))
    results = json.loads((out / "results.json").read_text())
    assert set(results["policies"]) == {"qlearning", "runbook_tuned", "oracle", "noop"}
    assert (out / "mttr.png").stat().st_size > 1000 and "uptime %" in (out / "results.md"
                                                                        ).read_text()
    runs = mlflow_runs(uri)
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["git_commit"] and run.data.tags["dataset_id"]
        assert run.data.params["seed"] == "0"
    evaluate_run = next(r for r in runs if r.info.run_name.startswith("evaluate"))
    assert "eval/oracle/uptime_pct" in evaluate_run.data.metrics
    # the trained policy is in the registry as 'candidate'; promote it and serve the champion
    import mlflow
    import numpy as np

    from healgym.envs.pipeline_heal import PipelineHealEnv

    client = mlflow.MlflowClient(tracking_uri=uri)
    assert str(client.get_model_version_by_alias("healgym-qlearning", "candidate").version) == "1"
    res = subprocess.run([sys.executable, "experiments/promote.py", "1", "--tracking-uri", uri],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "champion" in res.stdout
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/healgym-qlearning@champion")
    env = PipelineHealEnv()
    obs, info = env.reset(seed=0)
    mask = info["action_mask"][None, :].astype(float)
    action = model.predict({"obs": obs[None, :], "action_mask": mask})
    assert mask[0, int(np.asarray(action)[0])] == 1


def test_multirun_sweeps(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = subprocess.run([sys.executable, "experiments/train.py", "-m",
                          "agent.alpha=0.05,0.2", "agent.steps=60", "agent.num_envs=4",
                          f"mlflow.tracking_uri={uri}", "mlflow.experiment=healgym-test",
                          f"output_dir={tmp_path / 'out'}",
                          f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    alphas = sorted(r.data.params["agent.alpha"] for r in mlflow_runs(uri))
    assert alphas == ["0.05", "0.2"]


def test_registration_only_when_asked_and_sweeps_move_no_alias(tmp_path):
    """A plain training run registers nothing (its policy stays a run artifact that
    promote.py --run registers later); register=true registers and moves 'candidate'; the
    members of a sweep register with register=true but move no alias."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["agent.steps=60", "agent.num_envs=4", f"mlflow.tracking_uri={uri}",
              "mlflow.experiment=healgym-test", f"output_dir={tmp_path / 'out'}"]
    res = subprocess.run([sys.executable, "experiments/train.py", *common], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "not registered" in res.stdout, res.stderr[-2000:]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.search_registered_models() == []
    (run,) = mlflow_runs(uri)
    res = subprocess.run([sys.executable, "experiments/promote.py", "--run", run.info.run_id,
                          "--tracking-uri", uri], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(client.get_model_version_by_alias("healgym-qlearning", "champion").version) == "1"
    res = subprocess.run([sys.executable, "experiments/train.py", "-m", "agent.alpha=0.05,0.2",
                          "register=true", *common, f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "a sweep member: no alias moved" in res.stdout
    versions = client.search_model_versions("name='healgym-qlearning'")
    assert len(versions) == 3
    aliases = {a for v in versions for a in client.get_model_version(
        "healgym-qlearning", v.version).aliases}
    assert aliases == {"champion"}  # no 'candidate' moved by the sweep


def test_experiment_presets_compose():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["+experiment=study"])
        assert cfg.agent.steps == 60000 and cfg.episodes == 50
        cfg = compose("train", overrides=["+experiment=quick"])
        assert cfg.agent.steps == 2000 and cfg.env.episode_steps == 180
        assert env_kwargs(cfg, "eval")["time_range"] == [0.7, 1.0]
