"""The runbook format has what real alerting has: a condition held ``for_s``, rates of change,
conjunctions bound to the same stage, counters of what was tried, escalation ladders; old files
keep working, and mistakes name the rule and the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.runbook import RunbookAgent
from healgym.errors import ConfigError
from tests.helpers import quiet_env

ROOT = Path(__file__).resolve().parents[1]


def fired(env, book, seed=0, steps=None):
    """(step, action, rule) of every non-noop decision along an episode run by ``book``."""
    rb = RunbookAgent(env, book)
    obs, info = env.reset(seed=seed)
    out = []
    k = 0
    while True:
        d = rb.decide(obs, info)
        if d.action:
            out.append((k, env.action_names[d.action], d.explanation["rule"]))
        obs, _, _, tr, info = env.step(d.action)
        k += 1
        if tr or (steps is not None and k >= steps):
            return out, rb


def crash(at=100, stage="serve", fault="process_crash"):
    return {"faults": [{"at": at, "fault": fault, "stage": stage}]}


def test_for_s_waits_until_the_condition_has_held_that_long():
    env = quiet_env(episode_steps=40, scenario=crash())
    base = {"signal": "*.error_rate", "op": ">", "threshold": 0.3, "action": "restart_{stage}"}
    now, _ = fired(env, {"rules": [base]})
    held, _ = fired(env, {"rules": [{**base, "for_s": 40}]})
    assert now[0][:2] == (10, "restart_serve")  # the crash shows at t=100 s, step call 10
    assert held[0][:2] == (14, "restart_serve")  # held 100..140 s


def test_a_rate_of_change_separates_a_sudden_drop_from_a_slow_one():
    cliff = {"rules": [{"name": "cliff", "signal": "accuracy", "op": "<", "threshold": -0.03,
                        "rate_window_s": 60, "action": "rollback"}]}
    # labels at once (label_lag_s=0), so the release's drop is a cliff
    deploy = quiet_env(episode_steps=60, scenario=crash(fault="bad_model_deploy"), label_lag_s=0)
    drift = quiet_env(episode_steps=200, scenario=crash(fault="concept_drift"), label_lag_s=0)
    got, _ = fired(deploy, cliff)
    assert got and got[0][1] == "rollback" and 10 <= got[0][0] <= 12
    assert fired(drift, cliff)[0] == []  # -0.15 over 30 minutes: never that steep


def test_all_conditions_bind_the_same_stage():
    rule = {"signal": "*.error_rate", "op": ">", "threshold": 0.3, "action": "restart_{stage}",
            "all": [{"signal": "{stage}.throughput_rps_ratio", "op": "<", "threshold": 0.5}]}
    env = quiet_env(episode_steps=30, scenario=crash(stage="train"))
    assert fired(env, {"rules": [rule]})[0][0][1] == "restart_train"
    # an error spike keeps throughput: the conjunction does not hold
    spike = quiet_env(episode_steps=30, scenario=crash(stage="train", fault="error_spike"))
    assert fired(spike, {"rules": [rule]})[0] == []


def test_a_counter_fires_only_after_the_action_was_tried():
    """A crash loop survives the restart; the counter rule then rolls back."""
    book = {"cooldown_s": 0, "rules": [
        {"name": "loop", "signal": "*.error_rate", "op": ">", "threshold": 0.3,
         "after": {"action": "restart_{stage}", "count": 1, "within_s": 600},
         "action": "rollback"},
        {"name": "crash", "signal": "*.error_rate", "op": ">", "threshold": 0.3,
         "action": "restart_{stage}"}]}
    env = quiet_env(episode_steps=40, scenario=crash(fault="crash_loop"),
                    healing_matrix={"crash_loop": {"restart": 0.0, "rollback": 1.0}})
    got, _ = fired(env, book)
    assert [(a, r) for _, a, r in got] == [("restart_serve", "crash"), ("rollback", "loop")]
    assert env.episode_metrics()["incidents"][0]["resolved_by"] == "rollback"


def test_a_ladder_climbs_while_the_problem_stays_and_starts_over_later():
    book = {"cooldown_s": 0, "rules": [
        {"name": "slow", "signal": "*.latency_p95_ms_ratio", "op": ">", "threshold": 5,
         "actions": ["restart_{stage}", "escalate"], "ladder_window_s": 600}]}
    env = quiet_env(episode_steps=60, scenario=crash(fault="network_delay"),
                    healing_matrix={"network_delay": {"restart": 0.0, "escalate": 1.0}})
    got, rb = fired(env, book)
    assert [a for _, a, _ in got] == ["restart_serve", "escalate"]
    assert rb._rung["slow"][0] == 1  # noqa: SLF001
    far = rb._rung["slow"][1] + 601  # noqa: SLF001
    rb._last.clear()  # noqa: SLF001
    obs = np.zeros(env.model.n_obs, dtype=np.float32)
    obs[env.model.layout.z.start + 3 * env.model.n_metrics] = 50.0  # serve latency far up
    mask = np.ones(len(env.action_names), dtype=np.int8)
    d = rb.decide(obs, {"action_mask": mask, "time_s": far})
    assert env.action_names[d.action] == "restart_serve" and d.explanation["rung"] == 0


def test_a_ladder_waits_for_its_previous_rung_to_take_effect():
    """The page comes after the restart has run (30 s) and failed, not while it runs."""
    book = {"cooldown_s": 0, "rules": [
        {"name": "slow", "signal": "*.latency_p95_ms_ratio", "op": ">", "threshold": 5,
         "actions": ["restart_{stage}", "escalate"]}]}
    env = quiet_env(episode_steps=60, scenario=crash(fault="network_delay"),
                    healing_matrix={"network_delay": {"restart": 0.0, "escalate": 1.0}})
    got, _ = fired(env, book)
    (t_restart, a0, _), (t_page, a1, _) = got[:2]
    assert (a0, a1) == ("restart_serve", "escalate")
    assert t_page >= t_restart + 3  # steps of 10 s


def test_the_expert_runbook_separates_the_look_alikes_by_history():
    """A crash loop: restart (it reads as a crash), then roll back once the crash is back; a
    drift: retrain only once it stopped moving (after its 1800 s ramp)."""
    env = quiet_env(episode_steps=60, scenario=crash(fault="crash_loop"))
    got, _ = fired(env, ROOT / "configs/runbooks/expert.yaml")
    assert [a for _, a, _ in got[:2]] == ["restart_serve", "rollback"]
    env = quiet_env(episode_steps=300, scenario=crash(fault="covariate_drift", stage="ingest"))
    got, _ = fired(env, ROOT / "configs/runbooks/expert.yaml")
    assert got and got[0][1] == "retrain" and got[0][0] >= (100 + 1800) / 10, got


def test_old_runbooks_load_and_decide_as_before():
    env = quiet_env(episode_steps=40, scenario=crash())
    got, _ = fired(env, ROOT / "configs/runbooks/classic.yaml")
    assert got[0] == (10, "restart_serve", "errors")


def test_the_expert_runbook_heals_its_signatures():
    cases = {"process_crash": "restart_serve", "bad_model_deploy": "rollback",
             "gpu_oom": "switch_light", "schema_mismatch": "rollback"}
    for fault, want in cases.items():
        stage = "features" if fault == "schema_mismatch" else "serve"
        env = quiet_env(episode_steps=60, scenario=crash(fault=fault, stage=stage))
        got, _ = fired(env, ROOT / "configs/runbooks/expert.yaml")
        assert got and got[0][1] == want, (fault, got)


@pytest.mark.parametrize(("rule", "match"), [
    ({"signal": "accuracy", "op": "<", "threshold": 1, "action": "retrain", "fro_s": 3},
     r"rules\[0\]: unknown key 'fro_s'. Did you mean .for_s."),
    ({"signal": "accuracy", "op": "<", "threshold": 1, "actions": []},
     r"rules\[0\].actions: expected a non-empty list"),
    ({"signal": "accuracy", "op": "<", "threshold": 1, "action": "retrain",
      "after": {"action": "restrat_serve", "count": 1, "within_s": 60}},
     r"rules\[0\].after.action = 'restrat_serve' is not an action"),
    ({"signal": "accuracy", "op": "<", "threshold": 1, "action": "retrain",
      "all": [{"signal": "{stage}.latency", "op": ">", "threshold": 1}]},
     r"rules\[0\].all\[0\].signal = '\{stage\}.latency' is not a signal"),
    ({"signal": "accuracy", "op": "<", "threshold": 1, "action": "retrain", "for_s": "soon"},
     r"rules\[0\].for_s = 'soon': expected a number"),
])
def test_runbook_mistakes_name_the_rule_and_the_key(rule, match):
    with pytest.raises(ConfigError, match=match):
        RunbookAgent(quiet_env(), {"rules": [rule]})
