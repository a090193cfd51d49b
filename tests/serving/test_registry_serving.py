"""Registered policies load from ``models:/NAME@ALIAS`` by what the registry recorded (not by a
folder name), for every policy kind; the pyfunc models refuse to predict without the mask."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from healgym.errors import HealgymError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    mlflow.set_experiment(experiment_id=exp)
    yield mlflow
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("kind, src, folder, name", [
    # a train run's folder keeps its own name under artifacts/: not 'policy'
    ("qlearning", "zoo/qlearning/seed0", "qlearning__seed0__1796", "healgym-qlearning"),
    ("finetuned", "zoo/qlearning/seed1", "finetune__20261202", "healgym-qlearning"),
    ("ppo", "zoo/ppo/seed0", "policy", "healgym-ppo"),
    ("specialists", "zoo/specialists/seed0", "specialists__seed0__1796",
     "healgym-specialists"),
])
def test_register_promote_and_serve_from_the_registry(registry, tmp_path, kind, src, folder,
                                                      name):
    import gymnasium as gym

    import healgym
    from agents.registry import (
        MODEL_CODE,
        RLLIB_MODEL_CODE,
        ROUTED_MODEL_CODE,
        log_and_register,
        promote,
    )
    from healgym.serving.policies import load_policy

    policy_dir = tmp_path / folder
    shutil.copytree(ROOT / src, policy_dir)
    code = {"ppo": RLLIB_MODEL_CODE, "specialists": ROUTED_MODEL_CODE}.get(kind, MODEL_CODE)
    with registry.start_run():
        version = log_and_register(policy_dir, name, code)
    promote(version, name)
    env = gym.make(healgym.ENV_ID)
    policy, label = load_policy(f"models:/{name}@champion", env.unwrapped.model)
    assert label == f"{name}/{version} (@champion)"
    obs, info = env.reset(seed=3)
    a = policy.decide(obs, info).action
    assert info["action_mask"][a]
    # the registered pyfunc model answers with a valid action, and only given the mask
    model = registry.pyfunc.load_model(f"models:/{name}@champion")
    mask = info["action_mask"][None, :].astype(float)
    got = int(np.asarray(model.predict({"obs": obs[None, :], "action_mask": mask}))[0])
    assert mask[0, got] == 1
    with pytest.raises(Exception, match="action_mask"):
        model.predict({"obs": obs[None, :]})
    with pytest.raises(Exception, match="action_mask"):
        model.predict(obs[None, :])
    if kind == "specialists":  # the router's window: each row's earlier observations
        history = np.stack([obs[None, :]] * 5, axis=1)
        got = np.asarray(model.predict({"obs": obs[None, :], "action_mask": mask,
                                        "history": history}))
        assert got.shape == (1,) and mask[0, int(got[0])] == 1


def test_a_registered_model_without_a_policy_says_so(registry, tmp_path):
    from mlflow.exceptions import MlflowException

    from healgym.policy import registered_policy_dir

    with pytest.raises(MlflowException):
        registered_policy_dir("models:/no-such-model/1")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "MLmodel").write_text("flavors: {python_function: {artifacts: {}}}\n")
    with pytest.raises(HealgymError, match="no saved policy"):
        registered_policy_dir(str(tmp_path / "m"))
