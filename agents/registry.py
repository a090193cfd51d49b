"""Registering trained policies in the MLflow model registry, and promoting them.

A trained policy is logged as a pyfunc model from code and registered with the alias
``candidate``: Q-learning as ``healgym-qlearning`` (``agents/mlflow_model.py``), PPO and DQN as
``healgym-ppo`` and ``healgym-dqn`` (``agents/rllib/mlflow_model.py``). Promoting a version
moves the alias ``champion`` to it (``python experiments/promote.py VERSION [--name NAME]``);
serving loads ``models:/<name>@champion``.
"""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "healgym-qlearning"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
RLLIB_MODEL_CODE = Path(__file__).parent / "rllib" / "mlflow_model.py"


def model_name(kind: str) -> str:
    return f"healgym-{kind}"


def log_and_register(policy_dir: Path, name: str = MODEL_NAME, code: Path = MODEL_CODE) -> str:
    """Log the policy in the active run and register it; returns the new version."""
    import mlflow
    from mlflow import MlflowClient

    info = mlflow.pyfunc.log_model(name="policy_model", python_model=str(code),
                                   artifacts={"policy": str(policy_dir)})
    version = mlflow.register_model(info.model_uri, name)
    MlflowClient().set_registered_model_alias(name, "candidate", version.version)
    return str(version.version)


def promote(version: str, name: str = MODEL_NAME, alias: str = "champion") -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)
