"""The serving adapter's observation encoder reproduces the env's observations exactly."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.sim.model import MAX_REPLICAS, PipelineModel
from healgym.sim.observation import CONTEXT, Signals, encode
from healgym.sim.signals import decode, observation_names


def signals_from(env: PipelineHealEnv | PipelineModel, obs: np.ndarray) -> Signals:
    """What a monitoring system would report for this observation, in dashboard units."""
    m = env if isinstance(env, PipelineModel) else env.model
    d = decode(m, obs)
    raw = np.array([[d[f"{s}.{k}"] for k in m.metrics] for s in m.stages])
    ctx = dict(zip(CONTEXT, obs[m.layout.context.slice].tolist(), strict=True))
    return Signals(
        raw=raw, replicas=np.array([d[f"{s}.replicas"] for s in m.stages]),
        accuracy=ctx["accuracy"], drift_ks=ctx["drift_ks"], drift_psi=ctx["drift_psi"],
        null_rate=ctx["null_rate"], schema_error_rate=ctx["schema_error_rate"],
        staleness_s=ctx["staleness_h"] * 3600, cost_factor=ctx["cost_factor"],
        since_last_action_s=ctx["since_last_action_h"] * 3600,
        action_in_flight=bool(ctx["action_in_flight"]), light_model=bool(ctx["light_model"]),
        can_rollback=bool(ctx["can_rollback"]),
        escalation_in_flight=bool(ctx["escalation_in_flight"]), shedding=bool(ctx["shedding"]),
        since_deploy_s=float(ctx["since_deploy_h"]) * 3600.0, pred_shift=ctx["pred_shift"],
        last_action=int(obs[m.layout.last.slice].argmax()))


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
