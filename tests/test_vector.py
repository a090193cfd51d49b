"""The vector env is the scalar env, batched: parity bit for bit, and the VectorEnv API."""

from __future__ import annotations

import pickle
import zlib

import gymnasium as gym
import numpy as np
import pytest

import healgym
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.envs.vector import PipelineHealVectorEnv
from healgym.errors import ConfigError


def scalar_run(seed: int, actions: np.ndarray, episodes_steps: int, **kw):
    """Scalar env, autoreset by hand as NEXT_STEP does; returns per-step tuples."""
    env = PipelineHealEnv(episode_steps=episodes_steps, **kw)
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, False, False, None)]
    done = False
    for a in actions:
        if done:
            obs, info = env.reset()
            out.append((obs, 0.0, False, False, None))
            done = False
            continue
        if not info["action_mask"][a]:
            a = 0
        obs, r, te, tr, info = env.step(a)
        out.append((obs, r, te, tr, info.get("episode_metrics")))
        done = te or tr
    return out


def vector_run(seed: int, actions: np.ndarray, n: int, steps: int, **kw):
    env = PipelineHealVectorEnv(num_envs=n, episode_steps=steps, **kw)
    obs, info = env.reset(seed=seed)
    out = [[(obs[i], 0.0, False, False, None)] for i in range(n)]
    for t in range(actions.shape[1]):
        a = actions[:, t].copy()
        ok = info["action_mask"][np.arange(n), a] == 1
        a[~ok] = 0
        obs, r, te, tr, info = env.step(a)
        em = info.get("episode_metrics")
        for i in range(n):
            out[i].append((obs[i], r[i], te[i], tr[i],
                           em[i] if em is not None and info["_episode_metrics"][i] else None))
    return out


def random_actions(n: int, steps: int, n_actions: int, seed: int) -> np.ndarray:
    # Mostly noop, with bursts of every action, so that actions start, complete and heal.
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_actions, size=(n, steps))
    return np.where(rng.random((n, steps)) < 0.6, 0, a)


def assert_same(scalar, vector):
    assert len(scalar) == len(vector)
    for k, (s, v) in enumerate(zip(scalar, vector, strict=True)):
        np.testing.assert_array_equal(s[0], v[0], err_msg=f"observation at step {k}")
        assert s[1] == v[1], f"reward at step {k}: {s[1]} vs {v[1]}"
        assert (s[2], s[3]) == (bool(v[2]), bool(v[3])), f"termination at step {k}"
        assert s[4] == v[4], f"episode metrics at step {k}"


CASES = {
    "chaos": dict(chaos={"rate_scale": 4.0}),
    "scenario": dict(scenario="configs/scenarios/leak_cascade.yaml"),
    "scenario_and_chaos": dict(scenario="configs/scenarios/data_incidents.yaml",
                               chaos={"rate_scale": 2.0}),
    "budget_and_weights": dict(chaos={"rate_scale": 3.0},
                               reward={"cost_budget": 120.0, "infra_cost_weight": 2.0}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parity_n1_and_each_subenv_of_n8(case):
    kw = CASES[case]
    steps, total = 120, 260  # two episodes and a bit, through the NEXT_STEP autoreset
    acts = random_actions(8, total, 23, seed=zlib.crc32(case.encode()) % 1000)
    vec = vector_run(100, acts, 8, steps, **kw)
    for i in range(8):
        assert_same(scalar_run(100 + i, acts[i], steps, **kw), vec[i])
    one = vector_run(105, acts[5:6], 1, steps, **kw)
    assert_same(scalar_run(105, acts[5], steps, **kw), one[0])
    # the runs did something: incidents and healing actions happened
    metrics = [x[4] for x in vec[0] + vec[3] if x[4] is not None]
    assert metrics and sum(m["n_incidents"] for m in metrics) > 0
    assert sum(m["n_actions"] for m in metrics) > 0


def test_every_fault_type_matches(tmp_path):
    from healgym.sim.faults import FAULT_NAMES

    lines = ["faults:"] + [f"  - {{at: {30 + 40 * i}, fault: {f}}}"
                           for i, f in enumerate(FAULT_NAMES)]
    path = tmp_path / "all.yaml"
    path.write_text("\n".join(lines) + "\n")
    acts = random_actions(3, 150, 23, seed=3)
    vec = vector_run(7, acts, 3, 150, scenario=str(path))
    for i in range(3):
        assert_same(scalar_run(7 + i, acts[i], 150, scenario=str(path)), vec[i])


def test_make_vec_returns_the_native_vector_env():
    env = gym.make_vec(healgym.ENV_ID, num_envs=16)
    assert isinstance(env, PipelineHealVectorEnv)
    assert env.model.episode_steps == healgym.DEFAULT_EPISODE_STEPS
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = env.reset(seed=0)
    assert obs.shape == (16, 73) and env.observation_space.contains(obs)
    assert info["action_mask"].shape == (16, 23) and info["_action_mask"].all()
    obs, r, te, tr, info = env.step(np.zeros(16, dtype=np.int64))
    assert r.shape == (16,) and not te.any() and not tr.any()


def test_final_info_masks_and_autoreset():
    env = PipelineHealVectorEnv(num_envs=3, episode_steps=5, chaos=False)
    env.reset(seed=0)
    for _ in range(4):
        _, _, _, tr, info = env.step(np.zeros(3, dtype=np.int64))
        assert not tr.any() and "episode_metrics" not in info
    obs, r, te, tr, info = env.step(np.zeros(3, dtype=np.int64))
    assert tr.all() and info["_episode_metrics"].all()
    assert info["episode_metrics"][1]["elapsed_s"] == 50.0
    obs, r, te, tr, info = env.step(np.full(3, 5))  # ignored: the envs reset
    assert (r == 0).all() and not tr.any()
    assert (info["time_s"] == 0).all()


def test_rllib_style_construction_with_kwargs():
    env = gym.make_vec(healgym.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point",
                       chaos={"rate_scale": 2.0}, step_seconds=30.0, episode_steps=40)
    assert env.model.episode_steps == 40 and env.model.dt == 30.0


@pytest.mark.realdata
def test_parity_on_real_telemetry_with_replayed_incidents(shared_data):
    from healgym.telemetry.importers import import_source

    ds = import_source("nezha", shared_data / "nezha/rca_data/2022-08-22")
    kw = dict(dataset=ds, stages=["frontend", "checkoutservice", "cartservice"],
              replay_incidents=True, healing_matrix={f: {"restart": 1.0} for f in
                                                     ("cpu_contention", "error_spike",
                                                      "network_delay", "unknown")})
    acts = random_actions(4, 130, 3 * 3 + 8, seed=5)
    vec = vector_run(11, acts, 4, 60, **kw)
    for i in range(4):
        assert_same(scalar_run(11 + i, acts[i], 60, **kw), vec[i])
    ms = [x[4] for v in vec for x in v if x[4] is not None]
    assert all(m["incidents"][0]["source"] == "replay" for m in ms)


def test_without_a_time_limit_the_plan_grows():
    env = PipelineHealVectorEnv(num_envs=2, time_limit=False, episode_steps=50,
                                chaos={"rate_scale": 5.0})
    env.reset(seed=0)
    for _ in range(180):
        obs, r, te, tr, info = env.step(np.zeros(2, dtype=np.int64))
        assert not tr.any() and np.isfinite(obs).all()
    m = env.episode_metrics(0)
    assert m["elapsed_s"] == 1800.0
    assert max(i["onset_s"] for i in m["incidents"]) > 500  # arrivals drawn past the first plan


def test_rllib_wraps_it_with_dict_info_to_list():
    # RLlib's SingleAgentEnvRunner builds make_vec(..., vectorization_mode=...) and wraps it
    # with DictInfoToList; infos must survive that, final metrics included.
    from gymnasium.wrappers.vector import DictInfoToList

    env = DictInfoToList(gym.make_vec(healgym.ENV_ID, num_envs=3,
                                      vectorization_mode=gym.VectorizeMode("vector_entry_point"),
                                      episode_steps=4))
    obs, infos = env.reset(seed=0)
    assert isinstance(infos, list) and len(infos) == 3
    assert infos[1]["action_mask"].shape == (23,)
    for _ in range(4):
        obs, r, te, tr, infos = env.step(np.zeros(3, dtype=np.int64))
    assert tr.all() and infos[2]["episode_metrics"]["elapsed_s"] == 40.0


def test_threads_do_not_change_a_result():
    """Env ranges on numba's threads: the same batch, bit for bit, as one thread."""
    kw = dict(num_envs=600, episode_steps=40, chaos={"rate_scale": 4.0})
    acts = random_actions(600, 90, 23, seed=4)
    runs = []
    for threads in (1, 2):
        env = PipelineHealVectorEnv(num_threads=threads, **kw)
        assert len(env.core._bounds) == threads + 1  # noqa: SLF001 (the split under test)
        obs, info = env.reset(seed=3)
        out = [obs]
        for t in range(acts.shape[1]):
            obs, r, te, tr, info = env.step(np.where(
                info["action_mask"][np.arange(600), acts[:, t]] == 1, acts[:, t], 0))
            out += [obs, r, tr, info["n_faults"]]
        runs.append(out)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_episode_metrics_are_built_when_read():
    env = PipelineHealVectorEnv(num_envs=4, episode_steps=30, chaos={"rate_scale": 6.0})
    env.reset(seed=1)
    for _ in range(30):
        obs, r, te, tr, info = env.step(np.zeros(4, dtype=np.int64))
    em = info["episode_metrics"]
    assert tr.all() and all(m._dict is None for m in em)  # noqa: SLF001 (laziness)
    want = [env.episode_metrics(i) for i in range(4)]
    env.step(np.zeros(4, dtype=np.int64))  # the envs reset: the metrics were copied
    for m, w in zip(em, want, strict=True):
        assert m == w and dict(m) == w and len(m) == len(w) and m["n_incidents"] == len(
            w["incidents"])
        assert pickle.loads(pickle.dumps(m)) == w  # as RLlib ships episodes between processes
    assert sum(w["n_incidents"] for w in want) > 0


def test_reset_seeds_give_the_scalar_envs_episode_chain():
    """reset(seed=s): sub-env i is the scalar env seeded s + i; later episodes follow each
    env's own key chain, with or without an explicit reset()."""
    from healgym.envs.pipeline_heal import PipelineHealEnv

    vec = PipelineHealVectorEnv(num_envs=3, episode_steps=20)
    v0, _ = vec.reset(seed=9)
    v1, _ = vec.reset()
    scalar = PipelineHealEnv(episode_steps=20)
    for i in range(3):
        s0, _ = scalar.reset(seed=9 + i)
        s1, _ = scalar.reset()
        np.testing.assert_array_equal(v0[i], s0)
        np.testing.assert_array_equal(v1[i], s1)
        assert not np.array_equal(s0, s1)
    again, _ = vec.reset(seed=[9, 10, 11])
    np.testing.assert_array_equal(again, v0)
    with pytest.raises(ConfigError, match="2 seeds for 3 envs"):
        vec.reset(seed=[1, 2])


def test_cached_kernel_entry_points_follow_the_state_layout():
    """Kernels are called through cached entry points (no per-call type resolution): results
    equal numba's own dispatch, through plan growth and a reset with new episode constants,
    and neither a replaced state array nor changed argument types reach them unnoticed (the
    tests check both; the env renews its layout wherever it replaces arrays)."""
    from healgym.envs import core

    assert core.CHECK_DISPATCH  # tests/conftest.py turns the check on
    kw = dict(num_envs=4, num_threads=1, time_limit=False, episode_steps=20)
    env, ref = PipelineHealVectorEnv(**kw), PipelineHealVectorEnv(**kw)
    ref.core._call = lambda kernel, args: kernel(*args)  # noqa: SLF001 (numba's own dispatch)
    a = np.zeros(4, dtype=np.int64)
    scenario = {"faults": [{"at": 30, "fault": "memory_leak", "stage": "serve"}]}
    for options in (None, {"scenario": scenario}):
        layout = env.core._layout  # noqa: SLF001 (the mechanism under test)
        for e in (env, ref):
            e.reset(seed=0, options=options)
        for _ in range(45):  # past the plan twice
            got, want = env.step(a), ref.step(a)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        assert options is None or env.core._layout > layout  # noqa: SLF001
    from healgym.envs.state import replace

    state = env.core.state
    env.core.state = replace(state, "clock.rows", state.clock.rows.astype(np.int32))  # behind
    with pytest.raises(AssertionError, match="replaced without a new _layout"):  # the caches'
        env.step(a)  # back
    env.core.state = state
    core = env.core
    core._entry = {k: (lay, ep, sig[:-1]) for k, (lay, ep, sig) in core._entry.items()}  # noqa: SLF001
    core._calls = 15  # noqa: SLF001 (the next call is a checked one)
    with pytest.raises(AssertionError, match="argument types changed"):
        env.step(a)


def test_envs_pickle_and_continue_identically():
    """Envs pickle (without their compiled entry points) and the copy continues the episode
    exactly as the original does."""
    scalar = gym.make(healgym.ENV_ID).unwrapped
    batch = PipelineHealVectorEnv(num_envs=3, num_threads=1)
    scalar.reset(seed=2)
    batch.reset(seed=2)
    for _ in range(5):
        scalar.step(1)
        batch.step(np.ones(3, dtype=np.int64))
    for env, act in ((scalar, 0), (batch, np.zeros(3, dtype=np.int64))):
        twin = pickle.loads(pickle.dumps(env))
        for _ in range(20):
            got, want = twin.step(act), env.step(act)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
