"""Each fault type produces its documented signature, onset profile, course and propagation."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.sim.chaos import stage_choices
from healgym.sim.faults import BY_NAME, INF, LIBRARY, METRICS, ML_SIGNALS
from healgym.sim.replay import HI, LO
from tests.helpers import quiet_env

ONSET = 100.0
SEED = 4


def trace(fault: str | None, stage: str, steps: int, severity: float = 1.0):
    """Raw metrics, ML health and ground-truth faults at every step, noop policy (raw metrics
    come back from z-space: exact to ~1e-14, hence the tests' atol)."""
    scen = {"faults": [{"at": ONSET, "fault": fault, "stage": stage, "severity": severity}]}
    env = quiet_env(episode_steps=steps, scenario=scen if fault else None)
    env.reset(seed=SEED)
    raws, mls, faults = [], [], []
    for _ in range(steps):
        _, _, _, _, info = env.step(0)
        raws.append(env._raw.copy())
        mls.append(dict(env.ml_health))
        faults.append(list(info["faults"]))
    return env, np.array(raws), mls, faults


def expected(base: np.ndarray, spec, inten: float) -> np.ndarray:
    mult = np.array([spec.mult.get(m, 0.0) for m in METRICS])
    add = np.array([spec.add.get(m, 0.0) for m in METRICS])
    return np.clip(base * np.maximum(1 + inten * mult, 0) + inten * add, LO, HI)


@pytest.mark.parametrize("spec", LIBRARY, ids=lambda s: s.name)
def test_signature_onset_course_and_propagation(spec):
    env0 = quiet_env()
    stage_i = stage_choices(spec.name, env0.stages)[0]
    stage = env0.stages[stage_i]
    full = ONSET + spec.ramp_s  # full intensity from here until duration_s
    horizon_t = full + 300
    if spec.duration_s < INF:
        horizon_t = max(horizon_t, ONSET + spec.duration_s + spec.fade_s + 100)
    horizon = int(horizon_t // 10) + 2
    if spec.cascade:
        horizon = int((ONSET + spec.cascade[1] - 10) // 10)  # stop before the cascade
    env, raw_f, ml_f, faults = trace(spec.name, stage, horizon)
    _, raw_0, ml_0, _ = trace(None, stage, horizon)
    dt = env.dt
    k = lambda t: int(t // dt) - 1  # noqa: E731  (index of the step ending at time t)

    # Before onset: identical to the fault-free run.
    assert np.array_equal(raw_f[k(ONSET - dt)], raw_0[k(ONSET - dt)])
    assert faults[k(ONSET - dt)] == [] and (spec.name, stage) in faults[k(ONSET)]

    # At full intensity, the stage's metrics follow the documented signature exactly.
    t_full = min(full + 2 * dt, ONSET + spec.duration_s - dt)
    np.testing.assert_allclose(raw_f[k(t_full), stage_i],
                               expected(raw_0[k(t_full), stage_i], spec, 1.0), rtol=1e-9, atol=1e-9)
    for sig, delta in spec.ml.items():
        got = ml_f[k(t_full)][sig] - ml_0[k(t_full)][sig]
        if sig == "accuracy":
            assert got == pytest.approx(delta, abs=1e-9)
        elif sig == "cost_factor":
            assert ml_f[k(t_full)][sig] == pytest.approx(ml_0[k(t_full)][sig] * (1 + delta))
        elif sig != "covariate_shift":
            assert got == pytest.approx(delta, abs=1e-9)
    if "covariate_shift" in spec.ml:
        assert ml_f[k(t_full)]["drift_psi"] > 0.25 > ml_0[k(t_full)]["drift_psi"]
        assert ml_f[k(t_full)]["drift_ks"] > 3 * ml_0[k(t_full)]["drift_ks"]
    # Every fault moves something an operator can see.
    moved = not np.allclose(raw_f[k(t_full)], raw_0[k(t_full)]) or any(
        abs(ml_f[k(t_full)][s] - ml_0[k(t_full)][s]) > 1e-9 for s in ml_f[0])
    assert moved

    # Onset profile: sudden faults are at full strength at onset, gradual ones halfway at
    # half the ramp.
    if spec.ramp_s == 0:
        np.testing.assert_allclose(raw_f[k(ONSET), stage_i],
                                   expected(raw_0[k(ONSET), stage_i], spec, 1.0),
                                   rtol=1e-9, atol=1e-9)
    else:
        t_half = ONSET + spec.ramp_s / 2
        np.testing.assert_allclose(raw_f[k(t_half), stage_i],
                                   expected(raw_0[k(t_half), stage_i], spec, 0.5),
                                   rtol=1e-9, atol=1e-9)

    # Downstream: untouched before the hop lag, attenuated after it; upstream never touched.
    spread = [*spec.propagate_metrics, *spec.downstream_mult, *spec.downstream_add]
    hops = env.hops[stage_i]
    for d, h in enumerate(hops):
        if h < 0:
            np.testing.assert_array_equal(raw_f[:, d], raw_0[:, d])
        elif h > 0 and spec.propagate > 0 and spread:
            lag = spec.hop_lag_s * h
            before = k(ONSET + lag - dt)
            np.testing.assert_array_equal(raw_f[before, d], raw_0[before, d])
            t_d = max(t_full, ONSET + lag + spec.ramp_s) + dt
            if t_d < ONSET + spec.duration_s:
                m = METRICS.index(spread[0])
                assert not np.isclose(raw_f[k(t_d), d, m], raw_0[k(t_d), d, m])
        elif h > 0:
            np.testing.assert_array_equal(raw_f[:, d], raw_0[:, d])

    # Natural course: faults that fade are gone (and the metrics back) after duration + fade.
    if spec.duration_s < INF:
        t_end = ONSET + spec.duration_s + spec.fade_s + dt
        assert faults[k(t_end)] == []
        np.testing.assert_array_equal(raw_f[k(t_end)], raw_0[k(t_end)])
        inc = env.episode_metrics()["incidents"][0]
        assert inc["resolved_by"] == "natural"
    else:
        assert (spec.name, stage) in faults[-1]


def test_memory_leak_cascades_into_a_crash_of_the_same_incident():
    spec = BY_NAME["memory_leak"]
    child, after = spec.cascade
    steps = int((ONSET + after) // 10) + 3
    env, _, _, faults = trace("memory_leak", "serve", steps)
    assert (child, "serve") in faults[-1] and ("memory_leak", "serve") in faults[-1]
    m = env.episode_metrics()
    assert m["n_incidents"] == 1  # the crash belongs to the leak's incident
    assert m["incidents"][0]["faults"] == ["memory_leak", "process_crash"]


def test_compound_faults_combine():
    scen = {"faults": [{"at": 50, "fault": "cpu_contention", "stage": "serve"},
                       {"at": 50, "fault": "network_delay", "stage": "serve"}]}
    env = quiet_env(scenario=scen)
    env.reset(seed=SEED)
    for _ in range(7):
        env.step(0)
    both = env._raw[env.stages.index("serve")].copy()
    env1 = quiet_env(scenario={"faults": scen["faults"][:1]})
    env1.reset(seed=SEED)
    for _ in range(7):
        env1.step(0)
    one = env1._raw[env.stages.index("serve")]
    lat = METRICS.index("latency_p95_ms")
    assert both[lat] > one[lat] * 3  # delay stacks on contention
    assert env.episode_metrics()["n_incidents"] == 2


def test_severity_scales_the_signature():
    _, raw_f, _, _ = trace("error_spike", "serve", 15, severity=0.5)
    _, raw_0, _, _ = trace(None, "serve", 15)
    err = METRICS.index("error_rate")
    s = 3  # serve
    assert raw_f[12, s, err] - raw_0[12, s, err] == pytest.approx(0.35 * 0.5)


def test_library_has_the_issue_faults_and_documented_fields():
    names = {f.name for f in LIBRARY}
    assert len(LIBRARY) >= 15
    for required in ("process_crash", "crash_loop", "memory_leak", "cpu_contention",
                     "network_delay", "error_spike", "request_surge", "gpu_oom",
                     "bad_model_deploy", "covariate_drift", "concept_drift", "schema_mismatch",
                     "upstream_outage", "null_surge", "stale_feature_store",
                     "sink_write_failure", "cost_overrun"):
        assert required in names
    for f in LIBRARY:
        assert f.description and f.category in ("infra", "ml", "data")
        assert set(f.ml) <= set(ML_SIGNALS)
