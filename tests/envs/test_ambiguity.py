"""Ambiguity that real incidents have (docs/environment.md, section 5): look-alikes that only
history separates, and healing odds that depend on the state. Each test drives the env through
its public API, scalar and batched (the compiled kernel is one), and checks what an operator
would see and what the ground truth says."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import healgym
from agents.oracle import OracleAgent
from healgym.errors import ConfigError
from healgym.sim.actions import KIND_INDEX
from healgym.sim.faults import BY_NAME, LIBRARY
from tests.helpers import action_index, quiet_env


def scenario(*faults: tuple[int, str, str]) -> dict:
    return {"faults": [{"at": at, "fault": f, "stage": st} for at, f, st in faults]}


def play(env, seed: int, plan: dict[int, str], steps: int):
    """Noop except ``plan[step] = action name``: per step (obs, info)."""
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for k in range(steps):
        a = action_index(env, plan[k]) if k in plan else 0
        obs, _, _, _, info = env.step(a)
        out.append((obs, info))
    return out


def err(env, obs, stage: str = "serve") -> float:
    """The error-rate z-score of ``stage`` in an observation."""
    z = env.unwrapped.model.layout.z_block(obs[None])[0]
    return float(z[env.unwrapped.model.stages.index(stage), 1])


def test_the_ambiguity_rules_name_real_action_kinds():
    for f in LIBRARY:
        for kind in (*f.relieved_by, *f.heals_after_ramp, *f.blocks):
            assert kind in KIND_INDEX, (f.name, kind)
        assert f.relapse_s >= 0


def test_a_crash_loop_looks_like_a_crash_until_it_recurs_after_the_restart():
    """Kubernetes' CrashLoopBackOff after a bad dependency upgrade: the first crash reads
    exactly like a plain one; the restart brings the process back (the operator sees it
    recover); a minute later it crashes again; only the rollback heals it."""
    runs = {}
    for fault in ("process_crash", "crash_loop"):
        env = quiet_env(episode_steps=60, scenario=scenario((50, fault, "serve")),
                        healing_matrix={"process_crash": {"restart": 1.0}})
        runs[fault] = (env, play(env, 3, {7: "restart_serve"}, 40))
    (ec, crash), (el, loop) = runs["process_crash"], runs["crash_loop"]
    lay = ec.unwrapped.model.layout
    # before the restart the two observations are the same, bit for bit (z-scores and context)
    for k in range(6, 8):
        assert np.array_equal(crash[k][0][:lay.replicas.start], loop[k][0][:lay.replicas.start])
        assert err(ec, crash[k][0]) > 10
    # the restart (issued at 70 s, done at 100 s) heals the crash; the loop is back up from
    # 100 s, as a healed crash is, and crashes again 60 s later (160 s: observation 16)
    after = [round(err(el, o)) for o, _ in loop[10:22]]
    assert all(abs(err(ec, o)) < 3 for o, _ in crash[10:22])
    assert max(abs(e) for e in after[:6]) < 3 and min(after[6:]) > 10, after
    assert loop[-1][1]["faults"] == [("crash_loop", "serve")]
    assert el.episode_metrics()["ineffective_actions"] == 1  # relieving is not healing
    # the rollback heals it for good
    env = quiet_env(episode_steps=60, scenario=scenario((50, "crash_loop", "serve")),
                    healing_matrix={"crash_loop": {"rollback": 1.0}})
    fixed = play(env, 3, {7: "restart_serve", 20: "rollback"}, 40)
    assert fixed[-1][1]["faults"] == [] and abs(err(env, fixed[-1][0])) < 3


def test_a_leak_in_a_new_release_comes_back_after_a_restart_until_rolled_back():
    """A restart resets a leaky release's memory, which grows back (and the crash it leads to
    is due again from the restart); a plain leak is healed by the restart."""
    def memory(env, obs):
        z = env.unwrapped.model.layout.z_block(obs[None])[0]
        return float(z[env.unwrapped.model.stages.index("serve"), 3])

    out = {}
    for fault in ("memory_leak", "leaky_release"):
        env = quiet_env(episode_steps=300, scenario=scenario((10, fault, "serve")),
                        healing_matrix={"memory_leak": {"restart": 1.0}})
        out[fault] = (env, play(env, 1, {120: "restart_serve"}, 290))
    (em, leak), (er, rel) = out["memory_leak"], out["leaky_release"]
    assert memory(em, leak[119][0]) == pytest.approx(memory(er, rel[119][0]))  # look-alikes
    assert memory(er, rel[119][0]) > 6
    assert abs(memory(em, leak[-1][0])) < 3 and leak[-1][1]["faults"] == []
    grown = [memory(er, o) for o, _ in rel[126:240:20]]  # ramping again until 2430 s
    assert grown[0] < 3 and all(b > a for a, b in zip(grown, grown[1:], strict=False)), grown
    assert ("leaky_release", "serve") in rel[-1][1]["faults"]
    # the cascade's crash is due 1500 s after the new start (1230 s), not after the onset
    assert ("process_crash", "serve") not in rel[270][1]["faults"]  # 1510 s and 2700 s
    assert ("process_crash", "serve") in rel[275][1]["faults"]
    env = quiet_env(episode_steps=300, scenario=scenario((10, "leaky_release", "serve")),
                    healing_matrix={"leaky_release": {"rollback": 1.0}})
    assert play(env, 1, {120: "rollback"}, 140)[-1][1]["faults"] == []


def test_a_restart_during_a_surge_heals_nothing_on_that_stage():
    """A stage restarted under overload fails again (Google SRE book, ch. 22): the surge on
    serve blocks the restart of a crashed serve; the same restart after the surge heals."""
    heal = {"process_crash": {"restart": 1.0}}
    faults = scenario((20, "request_surge", "serve"), (40, "process_crash", "serve"))
    env = quiet_env(episode_steps=200, scenario=faults, healing_matrix=heal)
    during = play(env, 0, {6: "restart_serve"}, 12)
    assert ("process_crash", "serve") in during[-1][1]["faults"]
    env = quiet_env(episode_steps=200, scenario=faults, healing_matrix=heal)
    after = play(env, 0, {140: "restart_serve"}, 146)  # the surge fades at 1220-1340 s
    assert ("request_surge", "serve") not in after[140][1]["faults"]
    assert ("process_crash", "serve") not in after[-1][1]["faults"]
    # a surge on another stage does not block it
    env = quiet_env(episode_steps=200, healing_matrix=heal, scenario=scenario(
        (20, "request_surge", "ingest"), (40, "process_crash", "serve")))
    assert ("process_crash", "serve") not in play(env, 0, {6: "restart_serve"}, 12)[-1][1][
        "faults"]


def test_a_slow_dependency_is_upstream_of_its_loudest_symptom():
    """A slow feature store: its own latency rises five-fold, but its callers downstream (train,
    then serve) time out and fail, so the loudest stage is not the cause. Restarting the stages
    that fail heals nothing; restarting the slow one does (healing odds set to 1 here)."""
    heal = {"slow_dependency": {"restart": 1.0}}
    faults = scenario((100, "slow_dependency", "features"))
    env = quiet_env(episode_steps=80, scenario=faults, healing_matrix=heal)
    m = env.unwrapped.model
    run = play(env, 0, {14: "restart_serve", 20: "restart_train"}, 30)
    z = m.layout.z_block(run[13][0][None])[0]  # 30 s after the onset
    stages = list(m.stages)
    loudest = stages[int(np.abs(z).max(axis=1).argmax())]
    assert loudest in ("train", "serve")
    assert z[stages.index("features"), 0] > 3.0  # its latency shows, its errors barely
    assert z[stages.index("serve"), 1] > z[stages.index("features"), 1] + 3.0
    assert ("slow_dependency", "features") in run[-1][1]["faults"]  # both restarts in vain
    env = quiet_env(episode_steps=80, scenario=faults, healing_matrix=heal)
    fixed = play(env, 0, {14: "restart_features"}, 30)
    assert ("slow_dependency", "features") not in fixed[-1][1]["faults"]
    assert err(env, fixed[-1][0]) < 3.0  # serve's errors went with it


@pytest.mark.parametrize("fault,stage", [("covariate_drift", "ingest"),
                                         ("concept_drift", "serve")])
def test_a_retrain_while_drift_still_ramps_does_not_hold(fault, stage):
    """Retraining on data that is still moving fits a distribution that is already gone
    (Gama et al. 2014): issued before the 1800 s ramp is over, the retrain heals nothing;
    issued after it, it heals."""
    heal = {fault: {"retrain": 1.0}}
    env = quiet_env(episode_steps=360, scenario=scenario((10, fault, stage)),
                    healing_matrix=heal)
    early = play(env, 0, {60: "retrain"}, 185)  # issued at 600 s, done at 1800 s
    assert (fault, stage) in early[-1][1]["faults"]
    env = quiet_env(episode_steps=360, scenario=scenario((10, fault, stage)),
                    healing_matrix=heal)
    late = play(env, 0, {190: "retrain"}, 312)  # issued at 1900 s, after the ramp (1810 s)
    assert late[-1][1]["faults"] == []


def test_the_batched_env_applies_the_same_rules():
    """Scalar and batched envs share the kernel: the same plans give the same observations."""
    faults = scenario((20, "request_surge", "serve"), (40, "crash_loop", "serve"))
    kw = {"chaos": False, "episode_steps": 60, "scenario": faults, "metric_lag_s": 20}
    venv = gym.make_vec(healgym.ENV_ID, num_envs=2, **kw)
    env = quiet_env(**kw)
    plans = [{6: "restart_serve", 30: "rollback"}, {4: "restart_serve"}]
    scalar = [play(env, 5 + n, p, 40) for n, p in enumerate(plans)]
    obs, _ = venv.reset(seed=[5, 6])
    for k in range(40):
        acts = [action_index(env, p[k]) if k in p else 0 for p in plans]
        obs, *_ = venv.step(np.array(acts))
        for n in range(2):
            assert np.array_equal(obs[n], scalar[n][k + 1][0]), (n, k)


def test_the_oracle_knows_the_state_dependent_rules():
    env = quiet_env(episode_steps=30, scenario=scenario((20, "request_surge", "serve"),
                                                         (30, "process_crash", "serve")))
    oracle = OracleAgent(env)
    obs, info = env.reset(seed=0)
    for _ in range(4):
        obs, *_, info = env.step(0)
    assert set(info["faults"]) == {("request_surge", "serve"), ("process_crash", "serve")}
    # a restart is blocked by the surge: not the restart (scale_up heals both kinds)
    assert env.action_names[oracle.decide(obs, info).action] != "restart_serve"
    oracle.reset()
    drift = {**info, "faults": [("covariate_drift", "ingest")]}
    assert env.action_names[oracle.decide(obs, drift).action] != "retrain"  # still ramping
    for _ in range(int(BY_NAME["covariate_drift"].ramp_s / 10) + 1):
        a = oracle.decide(obs, drift).action
    assert env.action_names[a] == "retrain"


def test_labels_arrive_late_and_the_slo_counts_the_true_accuracy():
    """A bad release drops the true accuracy by 0.18 at once; the estimate, from late labels,
    slides over minutes (time constant 600 s), while the SLO is breached from the onset. With
    label_lag_s=0 the estimate drops at once. The deploy shows in the context at once."""
    deploy = scenario((100, "bad_model_deploy", "serve"))
    env = quiet_env(episode_steps=200, scenario=deploy)
    lay = env.unwrapped.model.layout
    acc, since = lay.ctx("accuracy"), lay.ctx("since_deploy_h")
    run = play(env, 0, {}, 150)
    assert run[9][0][since] == 1.0 and run[10][0][since] == 0.0  # the release lands at 100 s
    assert run[12][0][since] == pytest.approx(20 / 3600)
    first = run[11][0][acc]  # 10 s after the drop: ~1.6 % of it shows
    assert first > 0.90
    assert run[70][0][acc] < 0.92 - 0.18 * 0.55  # 600 s: 1 - 1/e of it (plus noise)
    assert run[140][0][acc] < 0.92 - 0.18 * 0.8
    # the SLO (true accuracy) breaks at once: every step since the onset is downtime
    assert env.unwrapped.downtime_s == pytest.approx(150 * 10 - 100, abs=10)
    now = play(quiet_env(episode_steps=200, scenario=deploy, label_lag_s=0), 0, {}, 12)
    assert now[11][0][acc] < 0.92 - 0.18 + 0.02
    with pytest.raises(ConfigError, match="label_lag_s=-1"):
        quiet_env(label_lag_s=-1)


def test_the_prediction_shift_shows_a_bad_release_before_its_labels_and_not_concept_drift():
    """A proxy that needs no label: the PSI of the prediction distribution. A bad release moves
    it at once (past the 0.25 alarm on the first step) while the late-label accuracy estimate
    has barely moved; concept drift (the label relation changes, the inputs and hence the
    predictions do not) never moves it while the accuracy slides; covariate drift moves it with
    its ramp. Its healthy floor is the sampling noise (0.01-0.04)."""
    def shift_and_accuracy(fault: str, stage: str, steps: int):
        env = quiet_env(episode_steps=steps + 10, scenario=scenario((100, fault, stage)))
        lay = env.unwrapped.model.layout
        run = play(env, 0, {}, steps)
        return (np.array([o[lay.ctx("pred_shift")] for o, _ in run]),
                np.array([o[lay.ctx("accuracy")] for o, _ in run]))

    pred, acc = shift_and_accuracy("bad_model_deploy", "serve", 40)
    assert pred[:10].max() < 0.05 and pred[:10].min() >= 0.01  # healthy: the noise floor
    assert pred[11] > 0.25 and acc[11] > 0.90  # 10 s after the release: proxy yes, labels no
    pred, acc = shift_and_accuracy("concept_drift", "serve", 250)
    assert pred.max() < 0.05 and acc[240] < 0.92 - 0.15 * 0.7
    pred, _ = shift_and_accuracy("covariate_drift", "ingest", 250)
    assert pred[30] < pred[100] < pred[200] and pred[200] > 0.45
    # serving reads it from its own query: the observation carries it at the same offset
    from healgym.sim.observation import Signals, encode

    m = quiet_env().unwrapped.model
    obs = encode(m, Signals(raw=m.median.copy(), replicas=np.full(m.n_stages, 2.0),
                            pred_shift=0.7))
    assert obs[m.layout.ctx("pred_shift")] == pytest.approx(0.7)


def test_serving_reads_the_deploy_time_from_a_query_or_its_own_deploys():
    from healgym.serving.config import SourceConf
    from healgym.serving.observe import AdapterState, Observer
    from tests.serving_helpers import DictSource

    env = quiet_env()
    m = env.unwrapped.model
    src = DictSource(m)
    obs = Observer(m, SourceConf(), source=src)
    now = 1_000_000.0
    src.t = now
    since = lambda r: r.signals.since_deploy_s  # noqa: E731
    assert since(obs.read(AdapterState(), now)) == 3600.0  # nothing known: long ago
    assert since(obs.read(AdapterState(deploy_t=now - 120), now)) == 120.0  # its rollback
    assert since(obs.read(AdapterState(deploy_t=now + 30), now)) == 3600.0  # still running
    src.values[("last_deploy_unix_s", None)] = now - 45  # a deploy annotation
    assert since(obs.read(AdapterState(deploy_t=now - 120), now)) == 45.0
    from healgym.sim.observation import encode

    o = encode(m, obs.read(AdapterState(), now).signals)
    assert o[m.layout.ctx("since_deploy_h")] == pytest.approx(45 / 3600)


def test_a_failed_scrape_repeats_the_stages_previous_metrics():
    """With scrape gaps, a stage's observed metrics sometimes repeat the previous step's (as
    Prometheus' lookback serves the last sample), stage by stage, while the SLO counts the
    truth; without them the same episode never repeats a crashed stage's reading."""
    faults = scenario((100, "memory_leak", "serve"))
    gappy = quiet_env(episode_steps=200, scenario=faults, scrape_gap_p=0.3)
    clean = quiet_env(episode_steps=200, scenario=faults, scrape_gap_p=0.0)
    lay, m = gappy.unwrapped.model.layout, gappy.unwrapped.model
    a, b = play(gappy, 2, {}, 150), play(clean, 2, {}, 150)
    za = np.array([lay.z_block(o[None])[0] for o, _ in a])
    zb = np.array([lay.z_block(o[None])[0] for o, _ in b])
    same_a = (za[1:] == za[:-1]).all(axis=2)  # (steps, stages): the reading repeated
    same_b = (zb[1:] == zb[:-1]).all(axis=2)
    assert not same_b.any()  # the replayed telemetry moves every step
    share = same_a.mean()
    assert 0.2 < share < 0.4, share
    assert 0 < same_a.all(axis=1).mean() < share  # gaps are per stage
    # where a stage's scrape did not fail, the reading is the clean one, exactly
    fresh = ~np.concatenate([np.zeros((1, m.n_stages), bool), same_a])
    np.testing.assert_array_equal(za[fresh], zb[fresh])
    assert gappy.unwrapped.downtime_s == clean.unwrapped.downtime_s  # the truth
    with pytest.raises(ConfigError, match="scrape_gap_p=1.5"):
        quiet_env(scrape_gap_p=1.5)


def test_metrics_arrive_late_while_the_slo_counts_the_present():
    """Delayed metrics (metric_lag_s, default 20 s: a scrape interval, a rule evaluation and a
    rate window): a crash at 100 s shows in the observed error rate two steps after it shows
    without the lag, the observation is the undelayed one shifted by two steps (the first
    observation repeated before it), and the downtime is the same: the SLO counts the truth.
    The batched env shows the same."""
    faults = scenario((100, "process_crash", "serve"))
    late = quiet_env(episode_steps=60, scenario=faults, metric_lag_s=20)
    now = quiet_env(episode_steps=60, scenario=faults, metric_lag_s=0)
    lay = late.unwrapped.model.layout
    a, b = play(late, 3, {}, 40), play(now, 3, {}, 40)
    za = np.array([lay.z_block(o[None])[0] for o, _ in a])
    zb = np.array([lay.z_block(o[None])[0] for o, _ in b])
    np.testing.assert_array_equal(za[2:], zb[:-2])
    np.testing.assert_array_equal(za[0], zb[0])
    np.testing.assert_array_equal(za[1], zb[0])
    first = lambda run: next(k for k, (o, _) in enumerate(run) if err(late, o) > 10)  # noqa: E731
    assert first(a) == first(b) + 2 == 12
    assert late.unwrapped.downtime_s == now.unwrapped.downtime_s > 0
    # the rest of the observation (context) is not delayed
    assert a[11][0][lay.ctx("since_deploy_h")] == b[11][0][lay.ctx("since_deploy_h")]
    venv = gym.make_vec(healgym.ENV_ID, num_envs=2, chaos=False, episode_steps=60,
                        scenario=faults)
    obs, _ = venv.reset(seed=3)
    batched = [obs[0]]
    for _ in range(40):
        obs, *_ = venv.step(np.zeros(2, dtype=np.int64))
        batched.append(obs[0])
    np.testing.assert_array_equal(np.array(batched), np.array([o for o, _ in a]))
    with pytest.raises(ConfigError, match="metric_lag_s=-5"):
        quiet_env(metric_lag_s=-5)
    with pytest.raises(ConfigError, match="metric_lag_s=9000"):
        quiet_env(metric_lag_s=9000)
