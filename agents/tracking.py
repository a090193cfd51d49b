"""MLflow tracking for experiments: where runs go, and what every run records.

Default store: a SQLite database and an artifact folder inside the project
(``sqlite:///<project>/mlflow.db``, ``<project>/mlruns``, absolute paths); ``MLFLOW_TRACKING_URI``
or ``mlflow.tracking_uri=...`` points it at a team server instead. Every run records the resolved
config, the git commit, and the telemetry dataset's id and hash.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def tracking_uri(configured: str | None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dataset_identity(dataset: str | None) -> tuple[str, str]:
    """(id, hash) of the telemetry: the dataset folder's metadata, or the embedded default."""
    if not dataset:
        return "embedded-synthetic (seed 0, 3 days)", "synthetic"
    meta = Path(dataset) / "metadata.json"
    digest = hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else "missing"
    return str(dataset), digest


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = str(d)
    return out


@contextmanager
def mlflow_run(config: dict[str, Any], run_name: str, uri: str | None,
               experiment: str) -> Iterator[Any]:
    """An MLflow run with the config, commit and dataset logged; always closed."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(ROOT / "mlruns").as_uri())
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=run_name)
    try:
        params = flatten({k: v for k, v in config.items() if k != "defaults"})
        mlflow.log_params({k: v[:500] for k, v in params.items()})
        ds_id, ds_hash = dataset_identity(config.get("telemetry", {}).get("dataset"))
        mlflow.set_tags({"git_commit": git_commit(), "dataset_id": ds_id,
                         "dataset_hash": ds_hash})
        yield run
    finally:
        mlflow.end_run()
