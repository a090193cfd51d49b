"""Telemetry presets bind a real dataset's entities to the roles runbooks and scenario files
speak of, through Hydra; every preset runs the default evaluation end to end on its dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from agents.config import env_kwargs, register

ROOT = Path(__file__).resolve().parents[1]
ROLES = ["ingest", "features", "train", "serve", "deliver"]

#: preset -> (importer, source under ../shared/data, labelled faults on the bound entities)
PRESETS = {
    "nezha_ob": ("nezha", "nezha/rca_data/2022-08-22", True),
    "nezha_tt": ("nezha", "nezha/rca_data/2023-01-29", True),
    "petshop": ("petshop", "petshop/dataset/low_traffic", True),
    "nab": ("nab", "nab", True),
}


def composed(*overrides: str):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides))


def test_stages_take_a_role_mapping_a_list_or_a_partial_rebinding_through_hydra():
    kw = env_kwargs(composed("telemetry=nezha_ob"))
    assert list(kw["stages"]) == ROLES and kw["stages"]["serve"] == "frontend"
    kw = env_kwargs(composed("telemetry=nezha_ob", "telemetry.stages.serve=adservice"))
    assert kw["stages"]["serve"] == "adservice" and kw["stages"]["ingest"] == "cartservice"
    kw = env_kwargs(composed("telemetry.stages={serve: frontend, features: cartservice}"))
    assert kw["stages"] == {"serve": "frontend", "features": "cartservice"}
    kw = env_kwargs(composed("telemetry.stages=[a,b]", "telemetry.replay_incidents=true"))
    assert kw["stages"] == ["a", "b"] and kw["replay_incidents"] is True
    assert "replay_incidents" not in env_kwargs(composed())


@pytest.mark.realdata
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_evaluates_the_default_policies_end_to_end(preset, shared_data, tmp_path):
    from healgym.telemetry.importers import import_source

    fmt, src, faulted = PRESETS[preset]
    ds = import_source(fmt, shared_data / src)
    ds.save(tmp_path / "ds")
    bound = composed(f"telemetry={preset}").telemetry.stages
    assert list(bound) == ROLES and set(bound.values()) <= set(ds.stages)
    if faulted:  # the bound entities carry labelled incidents to replay
        assert ds.faults.entity.isin(list(bound.values())).any()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = subprocess.run(
        [sys.executable, "experiments/evaluate.py", f"telemetry={preset}",
         f"telemetry.dataset={tmp_path / 'ds'}", f"telemetry.replay_incidents={faulted}",
         "episodes=2", "train_seeds=1", "agent.steps=60", "agent.num_envs=8",
         "eval_scenarios=[null,configs/scenarios/leak_cascade.yaml]",
         f"mlflow.tracking_uri={uri}", f"output_dir={tmp_path / 'out'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    out = next((tmp_path / "out").glob("evaluate__*"))
    results = json.loads((out / "results.json").read_text())
    assert set(results["policies"]) == {"qlearning", "expert", "runbook", "oracle", "random",
                                        "noop"}
    assert set(results["distributions"]) == {"random chaos", "leak_cascade"}
    assert "random chaos: 2 held-out episodes" in res.stdout
    # the held-out real-incident test: every policy on the labelled incidents
    real = results["real_incidents"]
    assert set(real) == set(results["policies"]) and "real incidents: 2" in res.stdout
    assert all(r["incidents"] >= 2 for r in real.values())
    assert real["oracle"]["localisation"]["value"] >= real["noop"]["localisation"]["value"]


@pytest.mark.realdata
def test_without_a_role_binding_evaluation_stops_before_training_saying_how_to_bind(
        shared_data, tmp_path):
    from healgym.telemetry.importers import import_source

    import_source("nezha", shared_data / "nezha/rca_data/2022-08-22").save(tmp_path / "ds")
    res = subprocess.run(
        [sys.executable, "experiments/evaluate.py", f"telemetry.dataset={tmp_path / 'ds'}",
         "episodes=2", f"output_dir={tmp_path / 'out'}",
         f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "is not a signal of this pipeline" in res.stderr
    assert "telemetry=nezha_ob" in res.stderr and "telemetry.stages={" in res.stderr
    assert "training Q-learning" not in res.stdout + res.stderr  # it stopped before training
