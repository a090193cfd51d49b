"""The history observation (``history=True``): compiled in the env, the same in the scalar and
the batched env, and nothing changes without it (the fingerprint test holds the rest)."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.envs.vector import PipelineHealVectorEnv
from healgym.errors import ConfigError
from healgym.sim.observation import Signals, encode
from healgym.sim.signals import decode

DEPLOY = {"faults": [{"at": 100, "fault": "bad_model_deploy", "stage": "serve"}]}
SURE = {"bad_model_deploy": {"rollback": 1.0}}


def test_the_history_block_follows_the_plain_observation():
    plain = PipelineHealEnv(chaos=False)
    hist = PipelineHealEnv(chaos=False, history=True)
    lay, m = hist.model.layout, hist.model
    assert lay.dz.start == plain.model.n_obs
    assert hist.model.n_obs == plain.model.n_obs + m.n_stages * m.n_metrics + 2 + len(m.actions)
    assert lay.names()[lay.hst("last_done_fixed")] == "last_done_fixed"
    o1, _ = plain.reset(seed=4)
    o2, _ = hist.reset(seed=4)
    np.testing.assert_array_equal(o2[:plain.model.n_obs], o1)
    for _ in range(30):
        o1, r1, *_ = plain.step(0)
        o2, r2, *_ = hist.step(0)
        np.testing.assert_array_equal(o2[:plain.model.n_obs], o1)  # the same dynamics
        assert r1 == r2


def test_deltas_alarm_age_deploy_age_and_the_last_completed_action():
    env = PipelineHealEnv(chaos=False, history=True, episode_steps=60, scenario=DEPLOY,
                          healing_matrix=SURE)
    lay = env.model.layout
    rb = env.model.action_names.index("rollback")
    obs, _ = env.reset(seed=0)
    assert not obs[lay.dz.slice].any()  # the first observation has no previous one
    prev = obs
    rows = []
    for k in range(40):
        obs, *_ = env.step(rb if k == 11 else 0)
        np.testing.assert_allclose(obs[lay.dz.slice], obs[lay.z.slice] - prev[lay.z.slice],
                                   atol=1e-5)
        prev = obs
        rows.append((obs[lay.hst("since_alarm_h")], obs[lay.ctx("since_deploy_h")],
                     obs[lay.hst("last_done_fixed")], int(np.argmax(obs[lay.done.slice]))))
    # the bad release lands at t=100 s (step call 9): a deploy; detected there, alarm ages after
    assert rows[8][1] == 1.0 and rows[9][1] == 0.0 and rows[10][1] == pytest.approx(10 / 3600)
    assert rows[8][0] == 0.0 and rows[10][0] == pytest.approx(10 / 3600)
    # the rollback (issued at call 11, 60 s) completes at call 17: a deploy, it fixed the fault
    assert rows[16][1] == pytest.approx(0.0) and rows[16][2] == 1.0 and rows[16][3] == rb
    assert rows[17][0] == 0.0  # no open alarm any more
    assert rows[15][3] == 0 and rows[15][2] == 0.0  # nothing had completed before


def test_the_batched_env_writes_the_same_history():
    kw = dict(history=True, episode_steps=50, chaos={"rate_scale": 4.0})
    vec = PipelineHealVectorEnv(num_envs=3, **kw)
    ov, _ = vec.reset(seed=7)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 3, size=(50, 3)) * 0  # noop: the masks differ per env
    outs = [[] for _ in range(3)]
    for k in range(50):
        ov, *_ = vec.step(acts[k])
        for i in range(3):
            outs[i].append(ov[i].copy())
    for i in range(3):
        env = PipelineHealEnv(**kw)
        env.reset(seed=7 + i)
        for k in range(49):
            o, *_ = env.step(0)
            np.testing.assert_array_equal(o, outs[i][k])


def test_encode_needs_a_history_builder_for_a_history_model():
    env = PipelineHealEnv(history=True)
    obs, _ = env.reset(seed=0)
    assert "serve.latency_p95_ms_dz" in decode(env.model, obs)
    with pytest.raises(ConfigError, match="encode it with a HistoryBuilder"):
        encode(env.model, Signals(raw=env.model.median.copy(), replicas=np.full(5, 2.0)))
