"""Registering trained policies in the MLflow model registry, and promoting them.

A trained Q-learning policy is logged as a pyfunc model from code (``agents/mlflow_model.py``)
and registered under ``healgym-qlearning`` with the alias ``candidate``. Promoting a version
moves the alias ``champion`` to it (``python experiments/promote.py VERSION``); serving loads
``models:/healgym-qlearning@champion``.
"""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "healgym-qlearning"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")


def log_and_register(policy_dir: Path, name: str = MODEL_NAME) -> str:
    """Log the policy in the active run and register it; returns the new version."""
    import mlflow
    from mlflow import MlflowClient

    info = mlflow.pyfunc.log_model(name="policy_model", python_model=str(MODEL_CODE),
                                   artifacts={"policy": str(policy_dir)})
    version = mlflow.register_model(info.model_uri, name)
    MlflowClient().set_registered_model_alias(name, "candidate", version.version)
    return str(version.version)


def promote(version: str, name: str = MODEL_NAME, alias: str = "champion") -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)
