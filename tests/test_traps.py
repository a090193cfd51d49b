"""No traps (PipelineHeal-v1): no action an SRE would call correct is punished beyond its real
cost. Each test here fails on v0's dynamics, where the trap it names was found."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.sim import actions as act
from healgym.sim.faults import BY_NAME
from tests.helpers import action_index, quiet_env

DEPLOYS = {"faults": [{"at": 300, "fault": "bad_model_deploy", "stage": "serve"},
                      {"at": 900, "fault": "bad_model_deploy", "stage": "serve"}]}
SURE = {"bad_model_deploy": {"rollback": 1.0}, "request_surge": {"shed_load": 0.0}}


def play(env, seed, choose):
    """Run an episode; ``choose(k, info, env)`` gives the action of step call ``k``."""
    obs, info = env.reset(seed=seed)
    total, out = 0.0, []
    k = 0
    while True:
        obs, r, _, tr, info = env.step(choose(k, info, env))
        total += r
        out.append((obs, r, info))
        k += 1
        if tr:
            return total, out, env.episode_metrics()


def test_rollback_heals_every_bad_release_even_after_an_idle_rollback():
    """v0: rollback worked once per episode (a bad release made no new version), so an idle
    rollback at t = 10 s left the next bad deploy to a 20-minute retrain or a page."""
    env = quiet_env(episode_steps=150, scenario=DEPLOYS, healing_matrix=SURE)
    rb = action_index(env, "rollback")
    seen = []

    def choose(k, info, env):
        if k == 0:
            return rb  # idle: nothing to roll back (an older model, a little less accurate)
        if env.faults and info["action_mask"][rb]:
            seen.append(env.model_version)
            return rb
        return 0

    _, _, m = play(env, 0, choose)
    incs = m["incidents"]
    assert [i["resolved_by"] for i in incs] == ["rollback", "rollback"]
    assert [i["mttr_s"] for i in incs] == [60.0, 60.0]
    assert env.model_version == 1  # two releases deployed and rolled back, after the idle one
    assert seen == [2, 2]  # each bad release was a new version over the old model


def test_a_bad_release_replaces_the_older_model_an_idle_rollback_left():
    env = quiet_env(episode_steps=60, scenario={"faults": [
        {"at": 200, "fault": "bad_model_deploy", "stage": "serve"}]}, healing_matrix=SURE)
    rb = action_index(env, "rollback")
    env.reset(seed=1)
    env.step(rb)
    for _ in range(8):
        env.step(0)
    acc_old = env.ml_health["accuracy"]
    for _ in range(12):
        env.step(0)
    assert env.faults == [("bad_model_deploy", "serve")] and env.model_version == 2
    for _ in range(2):
        env.step(rb if env.faults else 0)
    for _ in range(8):
        env.step(0)
    assert env.faults == [] and env.model_version == 1
    assert env.ml_health["accuracy"] > acc_old  # back to the last good model, not the older one


def surge_env():
    return quiet_env(episode_steps=180, scenario={"faults": [
        {"at": 100, "fault": "request_surge", "stage": "serve"}]}, healing_matrix=SURE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shedding_load_adds_no_errors_and_charges_only_the_shed_share(seed):
    """v0: shedding added +0.3 error rate for 600 s, breaking the error SLO it protects."""
    shed_env, noop_env = surge_env(), surge_env()
    shed = action_index(shed_env, "shed_load")
    m = shed_env.model
    err = [m.layout.z.start + s * m.n_metrics + 1 for s in range(m.n_stages)]
    _, shed_out, shed_m = play(shed_env, seed, lambda k, info, e: shed if k == 10 else 0)
    _, noop_out, noop_m = play(noop_env, seed, lambda k, info, e: 0)
    for k, ((o1, r1, i1), (o0, _, _)) in enumerate(zip(shed_out, noop_out, strict=True)):
        np.testing.assert_array_equal(o1[err], o0[err])  # error rates: what the surge made
        if k != 10 and o1[m.layout.ctx("shedding")] > 0.5 and not i1["slo_violated"]:
            assert r1 == pytest.approx(-10.0 * act.SHED_SHARE * m.dt)  # the shed share only
    assert any(o[m.layout.ctx("shedding")] > 0.5 for o, _, _ in shed_out)
    assert shed_m["uptime_pct"] >= noop_m["uptime_pct"]


def test_the_shed_share_is_the_breakers_throughput_drop():
    spec = BY_NAME["_shedding"]
    assert spec.mult["throughput_rps"] == -act.SHED_SHARE and not spec.add


def test_a_correct_sixty_second_fix_earns_the_recovery_bonus():
    """v0: the bonus went only to fixes of <= 30 s issued on the fault's first step, rewarding
    reflex guesses; a correct 60 s rollback earned nothing."""
    env = quiet_env(episode_steps=40, scenario={"faults": [
        {"at": 100, "fault": "bad_model_deploy", "stage": "serve"}]}, healing_matrix=SURE)
    rb = action_index(env, "rollback")
    _, out, m = play(env, 0, lambda k, info, e: rb if k == 10 else 0)
    inc = m["incidents"][0]
    assert inc["mttr_s"] == 60.0 and inc["resolved_by"] == "rollback"
    k_fix = int(inc["resolved_s"] // 10) - 1  # the step call that completed it
    assert out[k_fix][1] == pytest.approx(100.0 * (1 - 60.0 / 600.0))


def test_a_fault_that_ends_by_itself_earns_no_bonus():
    env = quiet_env(episode_steps=140, scenario={"faults": [
        {"at": 50, "fault": "cpu_contention", "stage": "serve"}]})  # fades after 900 s
    total, out, m = play(env, 0, lambda k, info, e: 0)
    assert m["incidents"][0]["resolved_by"] == "natural"
    assert max(r for _, r, _ in out) <= 0.0


def test_an_escalation_in_flight_is_observed():
    """v0: a page in flight was invisible, so a policy could not tell it was being handled."""
    env = quiet_env(episode_steps=120)
    esc = action_index(env, "escalate")
    i_paged = env.model.layout.ctx("escalation_in_flight")
    _, out, _ = play(env, 0, lambda k, info, e: esc if k == 2 else 0)
    paged = [o[i_paged] for o, _, _ in out]
    assert paged[:2] == [0.0, 0.0]
    assert all(p == 1.0 for p in paged[2:2 + 89]) and paged[92] == 0.0  # 900 s, then done


def test_running_below_the_baseline_cost_earns_nothing():
    """v0: removing replicas from a healthy pipeline was a positive reward every step."""
    env = quiet_env(episode_steps=60)
    downs = [action_index(env, f"scale_down_{s}") for s in env.stages]
    _, out, _ = play(env, 0, lambda k, info, e: downs[k] if k < len(downs) else 0)
    assert all(not i["slo_violated"] for _, _, i in out)
    assert max(r for _, r, _ in out) <= 0.0
    assert sum(r for _, r, _ in out[len(downs):]) == 0.0  # cheaper, but no reward for it


def test_every_action_that_changes_the_system_costs_something():
    """v0: scale_down cost nothing, so flapping scale_up/scale_down pairs were nearly free."""
    for kind in act.KINDS:
        assert (kind.cost > 0) == (kind.name != "noop"), kind
