"""Replaying a decision log's incidents in the simulator: the fault is recovered from the logged
observations, the scenario runs, and a policy's what-if sits beside the recorded outcome."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.oracle import OracleAgent
from agents.random_agent import NoOpAgent
from healgym.analysis import load_log
from healgym.analysis.replay import diagnose, replay_incidents, signature, what_if, write_scenarios
from healgym.cli import main
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.serving.sim import simulate_serving
from healgym.sim.chaos import load_scenario

ROOT = Path(__file__).resolve().parents[1]

#: faults whose signatures no other fault shares (a crash loop looks like a crash, a leak that
#: ends in a crash like one, an error spike like a crash loop: those are ambiguous by design)
DISTINCT = [("process_crash", "serve"), ("gpu_oom", "serve"), ("network_delay", "serve"),
            ("bad_model_deploy", "serve"), ("schema_mismatch", "ingest"),
            ("null_surge", "ingest"), ("upstream_outage", "ingest"),
            ("sink_write_failure", "serve")]


def one_fault_log(path: Path, fault: str, stage: str, seed: int) -> Path:
    """A decision log of a pipeline left alone with one fault (the incident stays open)."""
    env = PipelineHealEnv(episode_steps=240, chaos=False)
    sc = {"name": "truth", "random_chaos": False,
          "faults": [{"at": 600, "fault": fault, "stage": stage}]}
    simulate_serving(env, NoOpAgent(), f"sqlite:///{path}", seed=seed,
                     options={"scenario": sc}, start=1.79e9)
    return path


@pytest.mark.parametrize(("fault", "stage"), DISTINCT)
def test_the_logged_fault_is_recovered_from_the_observations(tmp_path, fault, stage):
    """In three logs of the fault on randomly drawn telemetry, at least two diagnoses name it
    with a high match (a steep diurnal ramp in the replayed baseline can pass for a surge)."""
    from healgym.sim.faults import BY_NAME

    env = PipelineHealEnv(episode_steps=240, chaos=False)
    right = []
    for j, seed in enumerate(DISTINCT.index((fault, stage)) + np.array([0, 8, 16])):
        frames = load_log(str(one_fault_log(tmp_path / f"log{j}.db", fault, stage, int(seed))))
        assert len(frames.incidents) == 1
        # nobody acted: open when the adapter stopped, unless the fault fades by itself
        assert frames.incidents["resolved"].iloc[0] == np.isfinite(BY_NAME[fault].duration_s)
        (r,) = replay_incidents(frames, env.model)
        if r.diagnosis.fault == fault and r.diagnosis.score > 0.75:
            right.append(r)
    assert len(right) >= 2, f"{fault} recognised in {len(right)} of 3 logs"
    r = right[0]
    if fault not in ("bad_model_deploy", "schema_mismatch", "null_surge", "upstream_outage"):
        assert r.diagnosis.stage == stage  # pipeline-level faults look the same anywhere
    # the scenario is a valid scenario file, placing the fault after a healthy lead
    (path,) = write_scenarios([r], tmp_path / "replayed")
    sc = load_scenario(path)
    assert sc.faults[0]["fault"] == fault and not sc.random_chaos
    assert "diagnosed" in sc.description


def test_a_signature_is_what_the_simulator_shows(tmp_path):
    """The signature of a fault is the simulator's own: it matches the env's observation with
    that fault at full intensity better than any other fault's does."""
    env = PipelineHealEnv(episode_steps=120, chaos=False)
    obs, info = env.reset(seed=3, options={"scenario": {
        "name": "x", "faults": [{"at": 10, "fault": "gpu_oom", "stage": "serve"}]}})
    for _ in range(5):
        obs, *_ = env.step(0)
    d = diagnose(env.model, obs)
    assert (d.fault, d.stage) == ("gpu_oom", "serve")
    assert d.alternatives and all(f != "gpu_oom" for f, _, _ in d.alternatives)
    s = signature(env.model, "bad_model_deploy", 3)
    # accuracy falls and the predictions shift (the last ML feature), nothing else to speak of
    assert np.count_nonzero(s) >= 2 and s[-7] < 0 and s[-1] > 0


def test_what_if_runs_a_policy_on_every_recorded_incident(tmp_path):
    env = PipelineHealEnv(episode_steps=240, chaos=False)
    log = one_fault_log(tmp_path / "log.db", "process_crash", "serve", 0)
    replayed = replay_incidents(load_log(str(log)), env.model)
    table = what_if(replayed, OracleAgent(env),
                    lambda n: PipelineHealEnv(episode_steps=n, chaos=False), range(3))
    row = table.iloc[0]
    assert row["fault"] == "process_crash" and row["recorded_resolved"] == False  # noqa: E712
    assert row["sim_resolved_share"] == 1.0 and row["sim_resolved_by"] == "restart_serve"
    assert row["sim_ttr_median_s"] <= 60


def test_replay_command_writes_scenarios_and_the_what_if_table(tmp_path, capsys):
    log = one_fault_log(tmp_path / "log.db", "gpu_oom", "serve", 1)
    out = tmp_path / "replayed"
    rc = main(["replay", "--log", str(log), "--out", str(out), "--policy",
               str(ROOT / "configs/runbooks/classic.yaml"), "--episodes", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "1 incidents replayed" in text and "gpu_oom" in text
    table = pd.read_csv(out / "what_if.csv")
    assert list(table["fault"]) == ["gpu_oom"] and table["episodes"].iloc[0] == 2
    assert len(list(out.glob("replay-*.yaml"))) == 1
