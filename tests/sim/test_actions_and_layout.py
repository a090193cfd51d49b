"""Action kinds are data and the observation has one layout: an extra action kind reaches the
kernel, the encoder/decoder, serving's mask and the offline reward alike; serving's mask is
the env's mask."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.serving.config import ActuatorConf, ServeConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.observe import Observer
from healgym.sim import actions as act
from healgym.sim.layout import CONTEXT, ObsLayout
from healgym.sim.observation import encode
from healgym.sim.signals import decode

#: An extra kind: drain a stage's traffic to its peers (40 s, cost 3), when nothing is in flight
#: and load is not being shed; it heals process crashes for sure.
DRAIN = act.ActionKind("drain", "stage", 40.0, 3.0, act.NOT_SHEDDING, act.NO_EFFECT,
                       "Drain the stage's traffic to its peers.")
KINDS = (*act.KINDS[:-1], DRAIN, act.KINDS[-1])
HEAL = {"process_crash": {"drain": 1.0, "restart": 0.95, "escalate": 0.98}}


def drain_env(**kw):
    return PipelineHealEnv(action_kinds=KINDS, healing_matrix=HEAL, **kw)


def test_layout_blocks_follow_metrics_stages_and_actions():
    lay = ObsLayout(("a", "b"), ("m1", "m2", "m3"), ("noop", "x", "y"))
    assert [(b.name, b.start, b.stop) for b in lay.blocks] == [
        ("z", 0, 6), ("replicas", 6, 8), ("context", 8, 8 + len(CONTEXT)),
        ("last", 8 + len(CONTEXT), 11 + len(CONTEXT))]
    assert lay.n == 11 + len(CONTEXT) and len(lay.names()) == lay.n
    assert lay.names()[lay.ctx("can_rollback")] == "can_rollback"
    low, high = lay.bounds(50.0)
    assert low[0] == -50 and high[lay.ctx("drift_psi")] == 10 and high[lay.ctx("staleness_h")] == 24


def test_an_extra_action_kind_reaches_every_part_of_the_model():
    env = drain_env(chaos=False, episode_steps=60,
                    scenario={"faults": [{"at": 20, "fault": "process_crash", "stage": "train"}]})
    m = env.model
    S = m.n_stages
    assert len(m.actions) == 3 * S + 8 + S  # one drain per stage, before escalate
    assert m.actions[-1].name == "escalate" and f"drain_{m.stages[0]}" in m.action_names
    assert env.observation_space.shape == (m.layout.n,) and m.layout.last.size == len(m.actions)
    # the kernel: drain heals the crash after its 40 s, and counts as a resolution
    drain = m.action_names.index("drain_train")
    obs, info = env.reset(seed=0)
    assert info["action_mask"][drain] == 1
    for _ in range(3):
        obs, *_ , info = env.step(0)
    assert env.faults == [("process_crash", "train")]
    obs, *_, info = env.step(drain)
    assert env.in_flight == "drain_train" and info["action_mask"][drain] == 0
    for _ in range(4):
        obs, *_, info = env.step(0)
    assert env.faults == []
    inc = env.episode_metrics()["incidents"][0]
    assert inc["resolved_by"] == "drain_train" and inc["mttr_s"] == 50.0
    # the encoder/decoder: the last action's one-hot sits at its layout offset, round trip
    assert obs[m.layout.last.start + drain] == 1.0
    d = decode(m, obs)
    from tests.test_observation import signals_from  # the decode->encode helper of that test

    np.testing.assert_allclose(encode(m, signals_from(m, obs)), obs, atol=1e-5)
    assert d["action_in_flight"] == 0.0
    # the offline reward charges the kind's own cost
    from agents.offline import log_reward

    r = log_reward(m, np.array([obs]), np.array([drain]), np.array([obs]), np.array([0.0]),
                   np.array([np.nan]))
    assert r[0] == -m.reward.action_cost_weight * 3.0


def env_masks_and_states(seed: int, steps: int, **kw):
    """The env's masks along a random episode, with the state serving would know."""
    env = PipelineHealEnv(episode_steps=steps, chaos={"rate_scale": 4.0}, **kw)
    _, info = env.reset(seed=seed)
    core = env._core.state  # noqa: SLF001 (the ground truth the serving state mirrors)
    rng = np.random.default_rng(seed)
    out = []
    from healgym.envs.vector import SHED

    for _ in range(steps):
        sl = core.slots
        shedding = any(sl.kind[0, f] == SHED and sl.inc[0, f] < 0 for f in range(sl.n[0]))
        out.append((info["action_mask"].copy(), dict(
            in_flight=env.in_flight is not None, paged=core.actions.esc_done[0] != np.inf,
            replicas=env.replicas, can_rollback=env.model_version > 1, light=env.light_model,
            shedding=shedding, spent=float(core.actions.spent[0]))))
        m = info["action_mask"]
        a = int(rng.choice(np.flatnonzero(m))) if rng.random() < 0.5 else 0
        _, _, _, tr, info = env.step(a)
        if tr:
            break
    return env.model, out


def serving_mask(model, tmp_path: Path, state: dict) -> np.ndarray:
    from healgym.serving.adapter import Adapter
    from tests.serving_helpers import DictSource, RestartOnErrors

    conf = ServeConf(actuators=[ActuatorConf(type="log", actions=model.action_names[1:])])
    a = Adapter(conf, RestartOnErrors(model), model,
                DecisionLog(f"sqlite:///{tmp_path / 'log.db'}"),
                Observer(model, conf.source, DictSource(model)))
    now = 1000.0
    a.state.paged_until = now + 1 if state["paged"] else -np.inf
    a.state.shedding_until = now + 1 if state["shedding"] else -np.inf
    a.state.spent = state["spent"]
    from healgym.sim.observation import Signals

    s = Signals(raw=model.median.copy(), replicas=state["replicas"],
                action_in_flight=state["in_flight"], light_model=state["light"],
                can_rollback=state["can_rollback"])
    return a.mask(s, now)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.sampled_from([None, 40.0, 150.0]))
def test_serving_mask_equals_the_env_mask_on_random_states(seed, budget, tmp_path_factory):
    kw = {} if budget is None else {"reward": {"cost_budget": budget}}
    model, pairs = env_masks_and_states(seed, 120, **kw)
    tmp = tmp_path_factory.mktemp("mask")
    for env_mask, state in pairs[::7]:
        np.testing.assert_array_equal(serving_mask(model, tmp, state), env_mask, err_msg=str(state))


def test_action_kind_tables_are_validated():
    import pytest

    from healgym.errors import ConfigError

    with pytest.raises(ConfigError, match="must page a human"):
        act.validate_kinds(act.KINDS[:-1])
    bad = dataclasses.replace(DRAIN, target="pipeline", effect=act.ADD_REPLICA)
    with pytest.raises(ConfigError, match="needs target 'stage'"):
        act.validate_kinds((*act.KINDS[:-1], bad, act.KINDS[-1]))


def test_the_action_table_is_in_action_space_order():
    table = act.action_table(["a", "b_c"])
    assert [a.index for a in table] == list(range(len(table)))
    assert [a.name for a in table] == [
        "noop", "restart_a", "restart_b_c", "scale_up_a", "scale_up_b_c", "scale_down_a",
        "scale_down_b_c", "rollback", "retrain", "backfill", "switch_light", "switch_back",
        "shed_load", "escalate"]
    assert [a.stage for a in table[1:3]] == [0, 1] and table[-1].stage == -1


def test_the_offline_reward_and_slo_are_the_envs_on_its_own_transitions():
    """Replaying an env episode as a log: where the observation shows what the env knows (the
    SLO flag agrees; no fast-resolution bonus; the cost factor below its clip), the offline
    reward is the env's reward, and serving's SLO test on decoded signals is the env's."""
    from agents.offline import log_reward
    from healgym.sim.observation import obs_violates_slo, slo_violated
    from tests.test_observation import signals_from

    env = PipelineHealEnv(episode_steps=200, chaos={"rate_scale": 4.0})
    m = env.model
    obs, info = env.reset(seed=5)
    rng = np.random.default_rng(5)
    rows, agree = [], 0
    for _ in range(200):
        mask = info["action_mask"]
        a = int(rng.choice(np.flatnonzero(mask))) if rng.random() < 0.3 else 0
        nxt, r, _, tr, info = env.step(a)
        rows.append((obs, a, nxt, r, info["slo_violated"]))
        obs = nxt
        if tr:
            break
    o, a, n, r, v = (np.array(x) for x in zip(*rows, strict=True))
    shown = obs_violates_slo(m, n)
    assert (shown == v).mean() > 0.9 and v.any() and (~v).any()
    ok = (shown == v) & (n[:, m.layout.ctx("cost_factor")] < 10)
    mine = log_reward(m, o, a, n, np.full(len(a), m.dt), np.full(len(a), np.nan))
    np.testing.assert_allclose(mine[ok], r[ok], rtol=1e-5, atol=1e-3)
    for k in np.flatnonzero(ok)[::10]:
        assert slo_violated(m, signals_from(m, n[k])) == shown[k]
        agree += 1
    assert agree > 5
