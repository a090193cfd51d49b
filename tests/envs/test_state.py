"""The state's field table is the one description of the state: allocation, the compiled reset
and the episode-metric fields follow it."""

from __future__ import annotations

import pickle

import numpy as np

from healgym.envs import _kernel as K
from healgym.envs.state import FIELDS, GROUPS, METRIC_FIELDS, State, allocate, dims, get
from healgym.envs.vector import PipelineHealVectorEnv


def test_allocation_follows_the_table():
    st = allocate(dims(3, 4, 6, 20, events=5, rows=7))
    assert isinstance(st, State) and st._fields == GROUPS
    for f in FIELDS:
        a = get(st, f"{f.group}.{f.name}")
        assert a.dtype == np.dtype(f.dtype), f.name
        assert a.shape[0] == 3 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, np.full(a.shape, f.init, dtype=f.dtype))
    assert st.events.t.shape == (3, 5) and st.clock.rows.shape == (3, 7)
    assert st.pipeline.replicas.shape == (3, 4) and st.actions.counts.shape == (3, 20)
    assert st.effects.za.shape == (3, 24)


def test_compiled_reset_restores_every_start_value_of_the_table():
    """Dirty every field by running chaos with actions, then run the compiled reset alone: each
    field that has a start value in the table holds exactly it (a field added to the table but
    not to the kernel's reset fails here)."""
    env = PipelineHealVectorEnv(num_envs=6, time_limit=False, episode_steps=200,
                                chaos={"rate_scale": 5.0}, num_threads=1)
    _, info = env.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(150):
        m = info["action_mask"]
        a = (rng.random(m.shape) * m).argmax(axis=1)
        _, _, _, _, info = env.step(a)
    st = env.state
    assert st.incidents.n.max() > 0 and st.actions.counts.sum() > 0
    K.reset_range(np.ones(6, dtype=bool), False, st, env.core._ec, env.core._c, 0, 6)
    checked = 0
    for f in FIELDS:
        if f.start is None:
            continue
        a = get(st, f"{f.group}.{f.name}")
        np.testing.assert_array_equal(a, np.full(a.shape, f.start, dtype=f.dtype),
                                      err_msg=f"{f.group}.{f.name}")
        checked += 1
    assert checked >= 40


def test_metric_fields_are_what_the_episode_metrics_read():
    env = PipelineHealVectorEnv(num_envs=2, episode_steps=30, chaos={"rate_scale": 8.0})
    env.reset(seed=1)
    for _ in range(30):
        _, _, _, tr, info = env.step(np.zeros(2, dtype=np.int64))
    assert tr.all()
    em = info["episode_metrics"][0]
    assert em == env.episode_metrics(0) and em["elapsed_s"] == 300.0
    assert all(p.split(".")[0] in GROUPS for p in METRIC_FIELDS)
    assert "incidents.detected" in METRIC_FIELDS and "slots.kind" not in METRIC_FIELDS


def test_state_pickles_with_its_record_types():
    st = allocate(dims(2, 3, 6, 17))
    back = pickle.loads(pickle.dumps(st))
    assert type(back) is State and type(back.slots) is type(st.slots)
    np.testing.assert_array_equal(back.slots.end, st.slots.end)
