"""Registering trained policies in the MLflow model registry, and promoting them.

A trained policy is logged as a pyfunc model from code and registered with the alias
``candidate``: Q-learning as ``healgym-qlearning`` (``agents/mlflow_model.py``), PPO and DQN as
``healgym-ppo`` and ``healgym-dqn`` (``agents/rllib/mlflow_model.py``). Promoting a version
moves the alias ``champion`` to it (``python experiments/promote.py VERSION [--name NAME]``);
serving loads ``models:/<name>@champion``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODEL_NAME = "healgym-qlearning"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
RLLIB_MODEL_CODE = Path(__file__).parent / "rllib" / "mlflow_model.py"
ROUTED_MODEL_CODE = Path(__file__).with_name("mlflow_routed_model.py")


def model_name(kind: str) -> str:
    return f"healgym-{kind}"


def sweep_member() -> bool:
    """Whether this run is one member of a Hydra multirun sweep (its members never move an
    alias: the sweep's best is promoted by hand)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return bool(HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    except (ImportError, ValueError):
        return False


def log_and_register(policy_dir: Path, name: str = MODEL_NAME, code: Path = MODEL_CODE,
                     alias: str | None = "candidate") -> str:
    """Log the policy in the active run and register it, moving ``alias`` (None: none) to the
    new version; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    info = mlflow.pyfunc.log_model(name="policy_model", python_model=str(code),
                                   artifacts={"policy": str(policy_dir)})
    version = mlflow.register_model(info.model_uri, name)
    if alias:
        MlflowClient().set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def register_trained(cfg: object, policy_dir: Path, name: str, code: Path) -> str:
    """What a training run does with its policy: registered only when the user asks
    (``register=true``), and then ``candidate`` moves, except in a sweep; else the policy stays
    a run artifact that ``promote.py --run RUN_ID`` can register later. Returns a line saying
    which."""
    import mlflow

    if not bool(getattr(cfg, "register", False)):
        run = mlflow.active_run()
        rid = run.info.run_id if run else "<run id>"
        return (f"not registered (register=true to register it; or later: python "
                f"experiments/promote.py --run {rid} --name {name})")
    in_sweep = sweep_member()
    version = log_and_register(policy_dir, name, code, alias=None if in_sweep else "candidate")
    if in_sweep:
        return (f"registered models:/{name}/{version} (a sweep member: no alias moved; promote "
                f"the best with: python experiments/promote.py {version} --name {name})")
    return (f"registered models:/{name}/{version} (alias 'candidate'); promote with: python "
            f"experiments/promote.py {version} --name {name}")


def promote(version: str, name: str = MODEL_NAME, alias: str = "champion") -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(name, alias, version)


def pipeline_model(path: Any) -> Any:
    """The pipeline a saved policy folder was trained on (its telemetry and stages), to load
    the policy against."""
    import json

    import healgym  # noqa: F401
    from healgym.envs.pipeline_heal import PipelineHealEnv

    meta = json.loads((Path(path) / "policy.json").read_text())
    kw = dict((meta.get("hydra_config") or {}).get("telemetry") or {})
    return PipelineHealEnv(dataset=kw.get("dataset"), stages=meta["stages"]).model
