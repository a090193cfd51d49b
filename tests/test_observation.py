"""The serving adapter's observation encoder reproduces the env's observations exactly."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.sim.faults import METRICS
from healgym.sim.model import MAX_REPLICAS
from healgym.sim.observation import CONTEXT, Signals, encode
from healgym.sim.signals import decode, observation_names


def signals_from(env: PipelineHealEnv, obs: np.ndarray) -> Signals:
    """What a monitoring system would report for this observation, in dashboard units."""
    m = env.model
    d = decode(m, obs)
    raw = np.array([[d[f"{s}.{k}"] for k in METRICS] for s in m.stages])
    S = m.n_stages
    ctx = obs[7 * S: 7 * S + len(CONTEXT)]
    return Signals(
        raw=raw, replicas=np.array([d[f"{s}.replicas"] for s in m.stages]),
        accuracy=float(ctx[0]), drift_ks=float(ctx[1]), drift_psi=float(ctx[2]),
        null_rate=float(ctx[3]), schema_error_rate=float(ctx[4]),
        staleness_s=float(ctx[5]) * 3600, cost_factor=float(ctx[6]),
        since_last_action_s=float(ctx[7]) * 3600, action_in_flight=bool(ctx[8]),
        light_model=bool(ctx[9]), can_rollback=bool(ctx[10]),
        last_action=int(obs[7 * S + len(CONTEXT):].argmax()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_reproduces_the_envs_observations(seed):
    env = PipelineHealEnv(episode_steps=240)
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    worst = 0.0
    for _ in range(240):
        served = encode(env.model, signals_from(env, obs))
        worst = max(worst, float(np.abs(served - obs).max()))
        a = int(rng.choice(np.flatnonzero(info["action_mask"]))) if rng.random() < 0.2 else 0
        obs, _, term, trunc, info = env.step(a)
        if term or trunc:
            break
    assert worst < 1e-3


def test_encode_names_the_shape_it_needs():
    env = PipelineHealEnv()
    with pytest.raises(ValueError, match=r"shape \(2, 6\).*needs \(5, 6\)"):
        encode(env.model, Signals(raw=np.zeros((2, 6)), replicas=np.ones(5)))
    obs = encode(env.model, Signals(raw=env.model.median, replicas=np.full(5, 2.0),
                                    staleness_s=10 * 24 * 3600.0))
    names = observation_names(env.model)
    assert obs[names.index("ingest.replicas_frac")] == pytest.approx(2 / MAX_REPLICAS)
    assert obs[names.index("staleness_h")] == 24.0  # clipped to the space's range
    assert env.observation_space.contains(obs)
