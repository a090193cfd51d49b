"""A metric is data: an extra per-stage metric, replayed from a dataset column, reaches the
kernel's observation, the encoder/decoder, serving's observer and mask, the offline reward and
the dashboard, and leaves the dynamics of the canonical metrics exactly as they were."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.envs.vector import PipelineHealVectorEnv
from healgym.errors import ConfigError
from healgym.sim.model import default_dataset
from healgym.sim.observation import encode, metric_z
from healgym.sim.signals import decode, signal_names
from healgym.telemetry.schema import CANONICAL_METRICS, MetricSpec

DISK = MetricSpec("disk_util_pct", "disk utilisation, percent", 0.0, 100.0, 40.0, 2.0)


def disk_dataset():
    """The default telemetry plus a disk column: measured (a daily wave) on every stage but
    ``features``, which never measured it."""
    ds = default_dataset()
    frame = ds.frame.copy()
    t = (frame["timestamp"] - frame["timestamp"].min()).dt.total_seconds().to_numpy()
    disk = 60.0 + 10.0 * np.sin(2 * np.pi * t / 86_400.0)
    frame["disk_util_pct"] = np.where(frame["stage"] == "features", np.nan, disk)
    return dataclasses.replace(ds, frame=frame)


SCEN = {"faults": [{"at": 10, "fault": "memory_leak", "stage": "train"},
                   {"at": 30, "fault": "process_crash", "stage": "serve"}]}


def pair(**kw):
    ds = disk_dataset()
    base = PipelineHealEnv(dataset=ds, **kw)
    extra = PipelineHealEnv(dataset=ds, extra_metrics=(DISK,), **kw)
    return base, extra


def test_an_extra_metric_is_replayed_into_the_observation_and_leaves_the_rest_alone():
    base, extra = pair(episode_steps=80, scenario=SCEN)
    m, mb = extra.model, base.model
    S, M = m.n_stages, len(CANONICAL_METRICS) + 1
    assert m.metrics == (*CANONICAL_METRICS, "disk_util_pct") and m.n_metrics == M
    assert m.layout.z.size == S * M and extra.observation_space.shape == (m.layout.n,)
    assert m.layout.n == mb.layout.n + S
    assert m.replay.report["absent_metrics"] == ["features.disk_util_pct"]
    # the baseline of the measured column is its median (the wave's), the absent one neutral
    assert m.median[0, -1] == pytest.approx(60.0, abs=1.0)
    assert m.median[1, -1] == 40.0
    ob, ib = base.reset(seed=3)
    oe, ie = extra.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(80):
        ze = m.layout.z_block(oe[None])[0]
        zb = mb.layout.z_block(ob[None])[0]
        np.testing.assert_array_equal(ze[:, :-1], zb)  # canonical metrics: bit-identical
        np.testing.assert_array_equal(oe[m.layout.replicas.start:],
                                      ob[mb.layout.replicas.start:])
        assert abs(ze[1, -1]) < 1e-6  # features never measured disk: its neutral baseline
        # a leak and a crash move memory, errors, throughput; disk has no fault effect
        np.testing.assert_allclose(extra._raw[:, -1], extra._raw[:, -1].clip(0, 100))
        np.testing.assert_array_equal(ie["action_mask"], ib["action_mask"])
        a = int(rng.choice(np.flatnonzero(ie["action_mask"])))
        ob, rb, *_, ib = base.step(a)
        oe, re, *_, ie = extra.step(a)
        assert re == rb
    assert extra.episode_metrics() == base.episode_metrics()
    # the replayed disk follows the dataset's wave, measured in the raw view
    assert 45.0 < extra._raw[0, -1] < 75.0


def test_the_batched_env_carries_the_extra_metric_too():
    ds = disk_dataset()
    vec = PipelineHealVectorEnv(4, dataset=ds, extra_metrics=(DISK,), episode_steps=50)
    one = PipelineHealVectorEnv(4, dataset=ds, episode_steps=50)
    ov, _ = vec.reset(seed=1)
    oo, _ = one.reset(seed=1)
    m = vec.model
    for _ in range(50):
        np.testing.assert_array_equal(m.layout.z_block(ov)[:, :, :-1],
                                      one.model.layout.z_block(oo))
        a = np.zeros(4, dtype=np.int64)
        ov, rv, *_ = vec.step(a)
        oo, ro, *_ = one.step(a)
        np.testing.assert_array_equal(rv, ro)


def test_encoder_decoder_observer_mask_and_offline_reward_read_the_extra_metric(tmp_path):
    from healgym.analysis.offline import log_reward
    from healgym.render import dashboard
    from healgym.serving.adapter import Adapter
    from healgym.serving.config import ActuatorConf, ServeConf
    from healgym.serving.decision_log import DecisionLog
    from healgym.serving.observe import Observer
    from tests.serving_helpers import DictSource, RestartOnErrors
    from tests.test_observation import signals_from

    _, env = pair(episode_steps=60, scenario=SCEN, metric_lag_s=0)  # compared with _raw: now
    m = env.model
    obs, info = env.reset(seed=0)
    start_mask = info["action_mask"]
    rows = []
    for _ in range(60):
        nxt, r, _, _, info = env.step(0)
        rows.append((obs, nxt, r))
        obs = nxt
    # decode names it, encode(decode) round-trips the whole observation
    d = decode(m, obs)
    assert f"{m.stages[0]}.disk_util_pct" in d and f"{m.stages[0]}.disk_util_pct" in (
        signal_names(m))
    assert d[f"{m.stages[0]}.disk_util_pct"] == pytest.approx(env._raw[0, -1], rel=1e-4)
    np.testing.assert_allclose(encode(m, signals_from(m, obs)), obs, atol=1e-5)
    # serving's observer reads disk like any other per-stage metric; a high disk shows in z
    src = DictSource(m)
    src.values[("disk_util_pct", m.stages[0])] = 99.0
    conf = ServeConf(actuators=[ActuatorConf(type="log", actions=m.action_names[1:])])
    obs_reader = Observer(m, conf.source, src)
    adapter = Adapter(conf, RestartOnErrors(m), m,
                      DecisionLog(f"sqlite:///{tmp_path / 'log.db'}"), obs_reader)
    reading = obs_reader.read(adapter.state)
    assert reading.signals is not None and reading.signals.raw.shape == (m.n_stages, 7)
    served = encode(m, reading.signals)
    z = metric_z(m, reading.signals.raw)
    assert served[m.layout.z.start + m.n_metrics - 1] == pytest.approx(z[0, -1], rel=1e-5)
    assert z[0, -1] == pytest.approx((99.0 - m.median[0, -1]) / m.replay.scale[0, -1])
    assert z[0, -1] > 3
    np.testing.assert_array_equal(adapter.mask(reading.signals, 0.0), start_mask)
    # the offline reward on the env's own transitions (quiet ones: no action, no bonus)
    o, n, r = (np.array(x) for x in zip(*rows, strict=True))
    mine = log_reward(m, o, np.zeros(len(o), dtype=np.int64), n, np.full(len(o), m.dt),
                      np.full(len(o), np.nan))
    ok = np.abs(n[:, m.layout.ctx("cost_factor")]) < 10
    np.testing.assert_allclose(mine[ok], r[ok], rtol=1e-5, atol=1e-3)
    assert "disk_util_" in dashboard(env).splitlines()[1]


def test_extra_metrics_are_validated():
    ds = disk_dataset()
    with pytest.raises(ConfigError, match="already in the model"):
        PipelineHealEnv(dataset=ds, extra_metrics=({"name": "cpu_pct"},))
    with pytest.raises(ConfigError, match="unknown metric field 'hgih'"):
        PipelineHealEnv(dataset=ds, extra_metrics=({"name": "disk", "hgih": 1},))
    with pytest.raises(ConfigError, match="lo < hi"):
        PipelineHealEnv(dataset=ds, extra_metrics=({"name": "disk", "lo": 5, "hi": 1},))
    env = PipelineHealEnv(dataset=ds, extra_metrics=({"name": "disk_util_pct", "hi": 100,
                                                      "neutral": 40, "scale_floor": 2},))
    assert env.model.metric_specs[-1] == dataclasses.replace(DISK, doc="")
