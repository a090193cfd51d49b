"""Learning from the decision log: transitions and their rewards, fine-tuning a tabular policy
from overrides (it then handles the scenario the humans corrected), the support constraint,
trust in overrides, experiments/finetune.py, and the offline dataset export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.evaluation import run_episode
from agents.offline import (
    export_offline_dataset,
    finetune_qtable,
    load_offline_metadata,
    mask_from_obs,
    transitions_from_log,
)
from agents.qlearning import QLearningAgent
from agents.runbook import RunbookAgent
from healgym.analysis import load_log
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.errors import HealgymError
from healgym.serving.sim import OracleOperator, simulate_serving

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_790_000_000.0
DEPLOY = ("name: bad-deploy\nrandom_chaos: false\nfaults:\n"
          "  - {at: 300, fault: bad_model_deploy, stage: serve}\n")


def watcher(env: PipelineHealEnv) -> QLearningAgent:
    """A policy that only watches: noop in every state (it has never seen an incident)."""
    agent = QLearningAgent(env.model)
    agent.q[:, 0] = 1.0
    return agent


def served(env, policy, path: Path, seeds, scenario: str | None, operator=None) -> list[dict]:
    out = []
    for i, seed in enumerate(seeds):
        out.append(simulate_serving(env, policy, f"sqlite:///{path}", seed=seed,
                                    options={"scenario": scenario} if scenario else None,
                                    operator=operator, start=T0 + i * 10_000))
    return out


def deploy_outcomes(env, policy, scenario: str, seeds) -> list[tuple]:
    return [(i["resolved_by"], i["mttr_s"]) for s in seeds
            for i in run_episode(env, policy, s, {"scenario": scenario})["incidents"]]


def test_transitions_are_the_logged_steps_with_the_envs_reward(tmp_path):
    # metric_lag_s=0: a log holds what was observed, and with delayed metrics the observed SLO
    # lags the true one the env's reward counts by the lag (docs/environment.md, 4b)
    env = PipelineHealEnv(episode_steps=240, metric_lag_s=0)
    runs = served(env, RunbookAgent(env, ROOT / "configs/runbooks/classic.yaml"),
                  tmp_path / "log.db", [1, 2], None, OracleOperator(env))
    frames = load_log(str(tmp_path / "log.db"))
    tr = transitions_from_log(frames, env.model)
    # two segments (episodes 10 000 s apart), each one transition shorter than its decisions
    assert len(tr) == sum(r["decisions"] for r in runs) - 2
    assert len(set(tr.episode.tolist())) == 2
    assert tr.truncated.sum() == 2 and not tr.terminated.any()
    # the action is what really happened: the override's action where a human overrode
    d = frames.decisions.set_index("id")
    for i, did in enumerate(tr.decision_id):
        x = d.loc[did]
        if x["human_verdict"] == "override":
            assert env.model.action_names[tr.actions[i]] == x["human_action"]
            assert tr.source[i] == "override" and tr.demo[i] == (
                frames.incidents.set_index("incident_id")["resolved"].get(x["incident_id"],
                                                                          True) is not False)
        elif isinstance(x["executed_action"], str) and x["actuator_ok"] is True:
            assert env.model.action_names[tr.actions[i]] == x["executed_action"]
        else:
            assert tr.actions[i] == 0
    assert (np.asarray(tr.source) == "override").sum() > 0
    # rewards recomputed from the logged observations agree with the env's own
    env_r = np.concatenate([r["rewards"][: r["decisions"] - 1] for r in runs])
    assert len(env_r) == len(tr)
    assert np.mean(np.isclose(tr.rewards, env_r)) > 0.95
    assert tr.rewards.sum() == pytest.approx(env_r.sum(), rel=0.1)


def test_finetuning_from_overrides_makes_the_policy_handle_the_scenario(tmp_path):
    """The watcher never fixes a bad deploy; an operator who knows the fault overrides it with
    a rollback; fine-tuned on that log, it rolls back by itself and nobody needs to step in."""
    scenario = tmp_path / "deploy.yaml"
    scenario.write_text(DEPLOY)
    env = PipelineHealEnv(episode_steps=120)
    agent = watcher(env)
    held_out = range(100, 112)
    before = deploy_outcomes(env, agent, str(scenario), held_out)
    assert all(by is None for by, _ in before)  # never resolved
    op = OracleOperator(env, name="olivia")
    served(env, agent, tmp_path / "log.db", range(10), str(scenario), op)
    assert op.overrides >= 5
    frames = load_log(str(tmp_path / "log.db"))
    tr = transitions_from_log(frames, env.model)
    report = finetune_qtable(agent, tr)
    # overrides in incidents still open when an episode ended are not trusted (yet)
    assert op.overrides * 0.5 <= report.demonstrations == tr.demo.sum() <= op.overrides
    assert report.demo_agreement_before == 0.0
    # the policy's choice changed where the humans disagreed
    demo = np.flatnonzero(tr.demo)
    chosen = agent.greedy(agent.disc.states(env.model, tr.obs[demo]),
                          mask_from_obs(env.model, tr.obs[demo]))
    agree = chosen == tr.actions[demo]
    assert agree.mean() == report.demo_agreement_after >= 0.8  # conflicting demos: majority
    assert {env.model.action_names[a] for a in chosen} >= {"rollback"}
    after = deploy_outcomes(env, agent, str(scenario), held_out)
    fixed = [mttr for by, mttr in after if by == "rollback"]
    assert len(fixed) >= 0.75 * len(held_out) and max(fixed) <= 180
    # served again on new episodes, the operator hardly has to step in
    op2 = OracleOperator(env, name="olivia")
    served(env, agent, tmp_path / "log2.db", range(20, 24), str(scenario), op2)
    assert op2.overrides / 4 <= 0.5 * op.overrides / 10  # per episode: at most half


def test_finetuning_changes_nothing_the_log_does_not_show(tmp_path):
    scenario = tmp_path / "deploy.yaml"
    scenario.write_text(DEPLOY)
    env = PipelineHealEnv(episode_steps=120)
    agent = watcher(env)
    rng = np.random.default_rng(0)
    agent.q += rng.normal(0, 0.01, agent.q.shape)  # distinct values, greedy still noop
    q0 = agent.q.copy()
    served(env, agent, tmp_path / "log.db", range(3), str(scenario), OracleOperator(env))
    tr = transitions_from_log(load_log(str(tmp_path / "log.db")), env.model)
    finetune_qtable(agent, tr)
    s = agent.disc.states(env.model, tr.obs)
    untouched = np.setdiff1d(np.arange(len(q0)), np.concatenate(
        [s, agent.disc.states(env.model, tr.next_obs)]))
    assert np.array_equal(agent.q[untouched], q0[untouched])
    # in logged states without a demonstration the greedy action is one the log shows there
    m = mask_from_obs(env.model, tr.obs)
    greedy = agent.greedy(s, m)
    for st in set(s[~tr.demo].tolist()) - set(s[tr.demo].tolist()):
        seen = set(tr.actions[s == st].tolist())
        assert set(greedy[s == st].tolist()) <= seen


def test_overrides_on_unresolved_incidents_are_not_trusted_by_default(tmp_path):
    scenario = tmp_path / "deploy.yaml"
    scenario.write_text(DEPLOY)
    env = PipelineHealEnv(episode_steps=60)  # ends before most rollbacks can resolve it
    served(env, watcher(env), tmp_path / "log.db", range(2), str(scenario),
           OracleOperator(env))
    frames = load_log(str(tmp_path / "log.db"))
    n_over = int((frames.decisions["human_verdict"] == "override").sum())
    assert n_over > 0
    for trust, want in (("all", n_over), ("none", 0)):
        assert transitions_from_log(frames, env.model, trust=trust).demo.sum() == want
    # an override inside an incident that escalated unresolved is not a demonstration
    frames.incidents.loc[:, "resolved"] = False
    assert transitions_from_log(frames, env.model).demo.sum() == (
        frames.decisions[frames.decisions["human_verdict"] == "override"]["incident_id"]
        .isna().sum())
    with pytest.raises(HealgymError, match="trust='maybe'"):
        transitions_from_log(frames, env.model, trust="maybe")


def test_a_log_from_another_pipeline_is_refused(tmp_path):
    env = PipelineHealEnv(episode_steps=30)
    served(env, watcher(env), tmp_path / "log.db", [0], None)
    other = PipelineHealEnv(stages=["ingest", "serve"]).model
    with pytest.raises(HealgymError, match=r"observation has 73 values, this pipeline.s has 43"):
        transitions_from_log(load_log(str(tmp_path / "log.db")), other)


def test_export_offline_dataset_is_a_versioned_parquet_folder(tmp_path):
    env = PipelineHealEnv(episode_steps=60)
    served(env, RunbookAgent(env, ROOT / "configs/runbooks/classic.yaml"), tmp_path / "log.db",
           [0], None, OracleOperator(env))
    frames = load_log(str(tmp_path / "log.db"))
    tr = transitions_from_log(frames, env.model)
    out = export_offline_dataset(tr, env.model, tmp_path / "ds", source=frames.source)
    meta = load_offline_metadata(out)
    assert meta["format_version"] == 1 and meta["observation_space"]["shape"] == [73]
    assert meta["action_space"]["names"] == env.model.action_names
    assert meta["counts"]["transitions"] == len(tr)
    data = pd.read_parquet(out / "data")
    assert list(data.columns) == ["eps_id", "t", "obs", "actions", "rewards", "new_obs",
                                  "terminateds", "truncateds"]
    assert np.allclose(np.stack(data["obs"].to_numpy()), tr.obs)
    assert np.array_equal(data["actions"].to_numpy(), tr.actions)
    prov = pd.read_parquet(out / "provenance.parquet")
    assert list(prov["decision_id"]) == tr.decision_id
    with pytest.raises(HealgymError, match="not empty"):
        export_offline_dataset(tr, env.model, out)
    (out / "metadata.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(HealgymError, match="v99"):
        load_offline_metadata(out)


@pytest.mark.slow
def test_finetune_py_updates_evaluates_and_registers(tmp_path):
    scenario = tmp_path / "deploy.yaml"
    scenario.write_text(DEPLOY)
    env = PipelineHealEnv(episode_steps=120)
    agent = watcher(env)
    agent.save(tmp_path / "watcher")
    served(env, agent, tmp_path / "log.db", range(8), str(scenario), OracleOperator(env))
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments/finetune.py"), f"log={tmp_path}/log.db",
         f"policy={tmp_path}/watcher", "episodes=4", "env.episode_steps=120",
         f"eval_scenarios=[{scenario}]", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
         f"output_dir={tmp_path}/out", "register=true"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = next((tmp_path / "out").iterdir())
    results = json.loads((run / "results.json").read_text())["policies"]
    assert results["finetuned"]["uptime_pct"]["value"] > results["original"]["uptime_pct"][
        "value"]
    assert json.loads((run / "finetune.json").read_text())["demonstrations"] > 0
    tuned = QLearningAgent.load(run, env.model)  # loads like any trained policy
    assert not np.array_equal(tuned.q, agent.q)
    assert "registered models:/healgym-qlearning/1" in r.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "experiments/finetune.py"),
                          f"log={tmp_path}/missing.db", f"policy={tmp_path}/watcher"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert bad.returncode != 0 and "no such decision log" in bad.stderr


def test_the_commands_simulate_serving_export_and_report(tmp_path, capsys):
    from healgym.cli import main

    log = tmp_path / "decisions.db"
    assert main(["simulate-serving", "--policy", str(ROOT / "configs/runbooks/classic.yaml"),
                 "--out", str(log), "--episodes", "2", "--episode-steps", "60",
                 "--start", "1790000000"]) == 0
    out = capsys.readouterr().out
    assert "episode 1 (seed 1): 61 decisions" in out
    assert main(["export-offline", "--log", str(log), "--out", str(tmp_path / "ds"),
                 "--since", "2026-09-21T14:25:00", "--trust", "all"]) == 0
    meta = load_offline_metadata(tmp_path / "ds")
    assert meta["source"]["filters"].startswith("from 2026-09-21 14:25:00")
    assert meta["counts"]["transitions"] == 60  # the second episode only
    assert main(["export-offline", "--log", str(log), "--out", str(tmp_path / "ds")]) == 2
    assert "not empty" in capsys.readouterr().err
