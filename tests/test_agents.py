"""Baselines and the evaluation harness."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import healgym
from agents.evaluation import evaluate, markdown_table, mean_ci, summarize
from agents.oracle import OracleAgent
from agents.policy import Policy
from agents.random_agent import NoOpAgent, RandomAgent
from agents.runbook import RunbookAgent
from healgym.errors import ConfigError
from tests.helpers import quiet_env

CLASSIC = "configs/runbooks/classic.yaml"


def scenario_env(fault: str, stage: str | None = None, at: float = 60.0, **kw):
    f = {"at": at, "fault": fault}
    if stage:
        f["stage"] = stage
    return quiet_env(scenario={"faults": [f]}, episode_steps=120, **kw)


def run(env, policy, seed=0):
    obs, info = env.reset(seed=seed)
    policy.reset()
    decisions = []
    while True:
        d = policy.decide(obs, info)
        decisions.append(d)
        obs, r, te, tr, info = env.step(d.action)
        if te or tr:
            return info["episode_metrics"], decisions


def test_every_baseline_is_a_policy():
    env = quiet_env()
    for p in (NoOpAgent(), RandomAgent(env.action_space.n, 0), RunbookAgent(env, CLASSIC),
              OracleAgent(env)):
        assert isinstance(p, Policy)


def test_oracle_heals_with_the_matrix_best_action():
    env = scenario_env("process_crash", "serve", healing_matrix={"process_crash":
                                                                  {"restart": 1.0}})
    m, decisions = run(env, OracleAgent(env))
    acted = [d for d in decisions if d.action]
    assert env.action_names[acted[0].action] == "restart_serve"
    assert acted[0].explanation["faults"] == [["process_crash", "serve"]]
    assert m["incidents"][0]["resolved_by"] == "restart_serve"
    assert m["incidents"][0]["mttr_s"] == 30.0  # seen at 60 s, restarted at once, 30 s later


def test_runbook_fires_the_rule_that_matches():
    env = scenario_env("bad_model_deploy")
    m, decisions = run(env, RunbookAgent(env, CLASSIC))
    fired = [d.explanation for d in decisions if d.action]
    assert fired[0]["rule"] == "accuracy-low" and fired[0]["action"] == "retrain"
    assert fired[0]["value"] < 0.85
    env = scenario_env("error_spike", "features")
    _, decisions = run(env, RunbookAgent(env, CLASSIC))
    fired = [d.explanation for d in decisions if d.action]
    assert fired[0]["rule"] == "errors" and fired[0]["action"] == "restart_features"


def test_runbook_cooldown_and_quiet_when_healthy():
    env = quiet_env(episode_steps=100)
    _, decisions = run(env, RunbookAgent(env, CLASSIC))
    assert all(d.action == 0 for d in decisions)  # healthy synthetic pipeline: nothing fires
    env = scenario_env("error_spike", "deliver", healing_matrix={"error_spike": {}})
    _, decisions = run(env, RunbookAgent(env, CLASSIC))
    times = [i * 10 for i, d in enumerate(decisions) if d.action]
    assert len(times) >= 2 and min(np.diff(times)) >= 300  # the cooldown holds


@pytest.mark.parametrize(("rule", "match"), [
    ({"signal": "acuracy", "op": "<", "threshold": 1, "action": "retrain"},
     'Did you mean "accuracy"'),
    ({"signal": "accuracy", "op": "<<", "threshold": 1, "action": "retrain"}, "op"),
    ({"signal": "accuracy", "op": "<", "threshold": 1, "action": "retrian"},
     'Did you mean "retrain"'),
    ({"signal": "accuracy", "op": "<", "action": "retrain"}, "missing 'threshold'"),
])
def test_bad_runbooks_are_refused(rule, match):
    with pytest.raises(ConfigError, match=match):
        RunbookAgent(quiet_env(), {"rules": [rule]})


def test_mean_ci_is_the_t_interval():
    x = [3.0, 5.0, 4.0, 8.0]
    m, lo, hi = mean_ci(x)
    half = stats.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2.0
    assert (m, lo, hi) == pytest.approx((5.0, 5.0 - half, 5.0 + half))


def test_summary_counts_open_incidents_in_the_censored_mttr():
    eps = [{"elapsed_s": 1000.0, "uptime_pct": 90.0, "downtime_s": 100.0, "n_actions": 2,
            "unresolved_incidents": 1, "action_cost": 3.0, "total_reward": -5.0,
            "n_incidents": 2, "ineffective_actions": 1,
            "incidents": [{"mttr_s": 100.0, "onset_s": 0.0},
                          {"mttr_s": None, "onset_s": 400.0}]},
           {"elapsed_s": 1000.0, "uptime_pct": 100.0, "downtime_s": 0.0, "n_actions": 1,
            "unresolved_incidents": 0, "action_cost": 1.0, "total_reward": 0.0,
            "n_incidents": 1, "ineffective_actions": 0,
            "incidents": [{"mttr_s": 300.0, "onset_s": 10.0}]}]
    s = summarize(eps)
    assert s["mttr_mean_s"]["value"] == 200.0
    assert s["mttr_censored_mean_s"]["value"] == pytest.approx((100 + 600 + 300) / 3)
    assert s["uptime_pct"]["value"] == 95.0 and s["actions_per_incident_pooled"] == 1.0
    assert s["uptime_pct"]["ci_high"] == 100.0  # the t-interval, clipped to the range
    assert s["unresolved_per_episode"]["ci_low"] == 0.0
    assert s["actions_per_incident"]["value"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    assert "| a |" in markdown_table({"a": s})


def test_oracle_beats_noop_and_runbook_on_held_out_seeds():
    def make():
        return gym.make(healgym.ENV_ID, chaos={"rate_scale": 2.0})

    seeds = range(500, 512)
    oracle = summarize(evaluate(make, OracleAgent, seeds))
    noop = summarize(evaluate(make, lambda env: NoOpAgent(), seeds))
    runbook = summarize(evaluate(make, lambda env: RunbookAgent(env, CLASSIC), seeds))
    assert oracle["uptime_pct"]["value"] > runbook["uptime_pct"]["value"] > \
        noop["uptime_pct"]["value"]
    assert oracle["mttr_censored_mean_s"]["value"] < noop["mttr_censored_mean_s"]["value"]


def test_tuning_never_does_worse_than_the_default_on_its_seeds():
    from agents.tuning import score, tune_runbook

    def make():
        return gym.make(healgym.ENV_ID, chaos={"rate_scale": 2.0})

    base = RunbookAgent(make(), CLASSIC)
    tuned, report = tune_runbook(make, base, range(3), passes=1, grid=(0.5, 1.0, 2.0))
    assert report["reward"] >= report["default_reward"]
    assert score(make, tuned, range(3)) == report["reward"]  # deterministic
    assert set(report["thresholds"]) == {r.name for r in base.rules}


def test_headline_experiment_writes_results(tmp_path):
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "experiments/headline.py", "--steps", "200",
                          "--envs", "16", "--episodes", "2", "--tune-seeds", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads((tmp_path / "results.json").read_text())
    assert {"q-learning", "runbook (tuned)", "oracle", "noop"} <= set(out["policies"])
    assert "uptime %" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "qlearning" / "policy.json").is_file()
