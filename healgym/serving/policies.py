"""Load the policy to serve: an exported folder, a runbook YAML, or ``models:/NAME@ALIAS``.

Returns (policy, version string). The policy is checked against the pipeline it will run on
(env version, actions, observation layout) by its own loader, which refuses a mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from healgym.errors import HealgymError


def load_policy(spec: str, model: Any) -> tuple[Any, str]:
    version = spec
    path = Path(spec)
    if spec.startswith("models:/"):
        import mlflow
        from mlflow import MlflowClient

        name, _, ref = spec[len("models:/"):].partition("@")
        if ref:
            mv = MlflowClient().get_model_version_by_alias(name, ref)
            version = f"{name}/{mv.version} (@{ref})"
            uri = f"models:/{name}/{mv.version}"
        else:
            uri, version = spec, spec[len("models:/"):]
        path = Path(mlflow.artifacts.download_artifacts(f"{uri}/artifacts/policy"))
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from agents.runbook import RunbookAgent

        class _Env:  # RunbookAgent reads env.unwrapped.model
            unwrapped = type("U", (), {"model": model})()

        return RunbookAgent(_Env(), path), version
    meta_path = path / "policy.json"
    if not meta_path.is_file():
        raise HealgymError(f"--policy {spec}: not a runbook YAML, an exported policy folder "
                           "(policy.json) or models:/NAME@ALIAS")
    fmt = json.loads(meta_path.read_text()).get("format")
    if fmt == "healgym-qtable":
        from agents.qlearning import QLearningAgent

        return QLearningAgent.load(path, model), version
    if fmt == "healgym-rlmodule":
        from agents.rllib.policy import RLlibPolicy

        return RLlibPolicy.load(path, model), version
    raise HealgymError(f"{meta_path}: unknown policy format {fmt!r}")
