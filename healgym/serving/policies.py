"""Load the policy to serve: an exported folder, a runbook YAML, or ``models:/NAME@ALIAS``.

Returns (policy, version string). The policy is checked against the pipeline it will run on
(env version, actions, observation layout) by its own loader, which refuses a mismatch; loaders
are found by format in :mod:`healgym.policy`'s registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healgym.errors import HealgymError
from healgym.policy import load_saved_policy, registered_policy_dir


def load_policy(spec: str, model: Any) -> tuple[Any, str]:
    version = spec
    path = Path(spec)
    if spec.startswith("models:/"):
        from mlflow import MlflowClient

        name, _, ref = spec[len("models:/"):].partition("@")
        if ref:
            mv = MlflowClient().get_model_version_by_alias(name, ref)
            version = f"{name}/{mv.version} (@{ref})"
            uri = f"models:/{name}/{mv.version}"
        else:
            uri, version = spec, spec[len("models:/"):]
        path = registered_policy_dir(uri)
    if not (path.is_file() and path.suffix in (".yaml", ".yml")) and \
            not (path / "policy.json").is_file():
        raise HealgymError(f"--policy {spec}: not a runbook YAML, an exported policy folder "
                           "(policy.json) or models:/NAME@ALIAS")
    return load_saved_policy(path, model), version
