from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import healgym
from healgym.errors import ConfigError
from tests.helpers import action_index, episode_equal, quiet_env, run_actions


def test_make_registers_and_passes_check_env():
    env = gym.make(healgym.ENV_ID)
    # one time limit, the env's own episode_steps: gymnasium wraps no TimeLimit around it
    assert env.spec.max_episode_steps is None and not isinstance(env, gym.wrappers.TimeLimit)
    assert env.unwrapped.model.episode_steps == healgym.DEFAULT_EPISODE_STEPS
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["action_mask"].shape == (env.action_space.n,)
    assert env.action_space.n == 23  # 3 x 5 stages + 8


def test_same_seed_same_episode_under_chaos_and_random_actions():
    def episode(seed):
        env = gym.make(healgym.ENV_ID, chaos={"rate_scale": 5.0})
        rng = np.random.default_rng(123)
        obs, info = env.reset(seed=seed)
        out = [obs]
        while True:
            valid = np.flatnonzero(info["action_mask"])
            obs, r, te, tr, info = env.step(int(rng.choice(valid)))
            out.append((obs, r, tuple(info["faults"])))
            if te or tr:
                return out, info["episode_metrics"]

    a, ma = episode(7)
    b, mb = episode(7)
    c, _ = episode(8)
    assert all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a[1:], b[1:],
                                                                               strict=True))
    assert ma == mb
    assert ma["n_incidents"] > 0  # chaos x5 over an hour: incidents happen
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a[1:], c[1:], strict=True))


@pytest.mark.parametrize("limit", [50, 1000])
def test_episode_ends_by_truncation_with_final_metrics(limit):
    # The episode length is episode_steps, the one knob (the registration sets no TimeLimit).
    env = gym.make(healgym.ENV_ID, episode_steps=limit, chaos={"rate_scale": 3.0})
    env.reset(seed=1)
    for k in range(limit):
        obs, r, te, tr, info = env.step(0)
        assert not te and env.observation_space.contains(obs)
        if k < limit - 1:
            assert not tr and "episode_metrics" not in info
    assert tr and info["episode_metrics"]["elapsed_s"] == limit * 10.0
    if limit > 360:  # random chaos keeps arriving over the whole episode
        assert max(i["onset_s"] for i in info["episode_metrics"]["incidents"]) > 3600


def test_an_outer_time_limit_gets_metrics_from_the_wrapper():
    from healgym.wrappers import EpisodeMetrics

    env = EpisodeMetrics(gym.make(healgym.ENV_ID, max_episode_steps=30))
    env.reset(seed=0)
    for _ in range(30):
        _, _, _, tr, info = env.step(0)
    assert tr and info["episode_metrics"]["elapsed_s"] == 300.0


def test_one_time_limit_knob():
    from healgym.envs.vector import PipelineHealVectorEnv

    with pytest.raises(ConfigError, match="one time limit, episode_steps=N"):
        gym.make_vec(healgym.ENV_ID, num_envs=2, max_episode_steps=30)
    vec = PipelineHealVectorEnv(num_envs=2, episode_steps=7, chaos=False)
    vec.reset(seed=0)
    trunc = [vec.step(np.zeros(2, dtype=np.int64))[3].all() for _ in range(7)]
    assert trunc == [False] * 6 + [True]
    endless = quiet_env(episode_steps=5, time_limit=False)
    endless.reset(seed=0)
    assert not any(endless.step(0)[3] for _ in range(40))  # past 8 plan chunks, never truncated


def test_masked_action_is_noop_with_penalty():
    env = quiet_env()
    env.reset(seed=0)
    rb = action_index(env, "switch_back")  # not serving the light model: masked
    assert env.action_masks()[rb] == 0
    obs, r, te, tr, info = env.step(rb)
    assert info.get("invalid_action") is True
    assert r == pytest.approx(-env.reward_cfg.invalid_action_penalty)
    assert env.episode_metrics()["n_actions"] == 0


def test_one_action_at_a_time_and_mask_follows_state():
    env = quiet_env(episode_steps=360)
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask[action_index(env, "rollback")] == 1
    env.step(action_index(env, "retrain"))  # 1200 s in flight
    mask = env.action_masks()
    assert mask.sum() == 2 and mask[0] == 1 and mask[action_index(env, "escalate")] == 1
    for _ in range(121):
        env.step(0)
    assert env.action_masks()[action_index(env, "restart_serve")] == 1
    # replicas bound: scale_down to the minimum masks further scale_down
    sd = action_index(env, "scale_down_train")
    env.step(sd)
    for _ in range(4):
        env.step(0)
    assert env.replicas[env.stages.index("train")] == 1
    assert env.action_masks()[sd] == 0


def test_cost_budget_masks_unaffordable_actions():
    env = quiet_env(reward={"cost_budget": 10.0})
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask[action_index(env, "escalate")] == 0  # costs 100
    assert mask[action_index(env, "retrain")] == 0  # costs 50
    assert mask[action_index(env, "restart_serve")] == 1  # costs 1


def test_render_ansi_dashboard():
    env = gym.make(healgym.ENV_ID, render_mode="ansi",
                   scenario={"faults": [{"at": 10, "fault": "process_crash", "stage": "serve"}]})
    env.reset(seed=0)
    env.step(0)
    text = env.render()
    assert "serve" in text and "p95 ms" in text
    assert "process_crash@serve" in text
    assert "downtime" in text


def test_observation_is_what_an_operator_sees_not_the_fault():
    # (label_lag_s=0: labels at once; their lag is tested in tests/envs/test_ambiguity.py)
    env = quiet_env(scenario={"faults": [{"at": 10, "fault": "bad_model_deploy"}]},
                    label_lag_s=0)
    res = run_actions(env, 0, steps=3)
    obs, _, info = res[-1]
    assert info["faults"] == [("bad_model_deploy", "serve")]  # ground truth in info only
    acc_index = 7 * env.n_stages
    assert obs[acc_index] == pytest.approx(0.92 - 0.18, abs=0.02)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ConfigError, match="render_mode"):
        quiet_env(render_mode="human")
    with pytest.raises(ConfigError, match="step_seconds"):
        quiet_env(step_seconds=0)
    with pytest.raises(ConfigError, match='Did you mean "slo_violation_per_s"'):
        quiet_env(reward={"slo_violation_per_sec": 5})
    with pytest.raises(ConfigError, match="entities"):
        quiet_env(stages=["ingest", "nope"])


def test_reset_options_scenario_overrides_per_episode():
    env = quiet_env()
    env.reset(seed=0, options={"scenario": {"faults": [{"at": 0, "fault": "null_surge"}]}})
    _, _, _, _, info = env.step(0)
    assert ("null_surge", "ingest") in info["faults"]
    env.reset(seed=0)
    _, _, _, _, info = env.step(0)
    assert info["faults"] == []


def test_scalar_env_seeded_twice_equals_itself():
    env = quiet_env(chaos=True)
    assert episode_equal(run_actions(env, 3), run_actions(env, 3))


def test_env_on_a_saved_and_loaded_dataset_equals_in_memory(tmp_path):
    from healgym.telemetry import generate_synthetic

    ds = generate_synthetic(seed=9, days=1)
    ds.save(tmp_path / "d")
    a = run_actions(quiet_env(dataset=ds, chaos=True), 2)
    b = run_actions(quiet_env(dataset=str(tmp_path / "d"), chaos=True), 2)
    assert episode_equal(a, b)
    env = quiet_env(dataset=str(tmp_path / "d"))
    assert env.replay.report["rows"] == 1440


def test_block_resampling_when_an_episode_outlasts_the_data():
    from healgym.telemetry import generate_synthetic

    short = generate_synthetic(seed=1, days=1 / 24)  # one hour of data, 60 rows
    env = quiet_env(dataset=short, episode_steps=1080)  # a three-hour episode
    res = run_actions(env, 0)
    assert len(res) == 1080
    assert all(np.isfinite(o).all() for o, _, _ in res)


def test_time_range_keeps_episodes_in_their_part_of_the_telemetry():
    from healgym.errors import ConfigError

    held_out = quiet_env(time_range=(0.7, 1.0), episode_steps=60)
    n = len(held_out.replay.times)
    for seed in range(20):
        rows = held_out.replay.draw_rows(seed, 60, held_out.dt)
        assert rows.min() >= int(0.7 * n)
    train = quiet_env(time_range=(0.0, 0.7), episode_steps=60)
    rows = train.replay.draw_rows(0, 60, train.dt)
    assert rows.max() < int(0.7 * n)
    np.testing.assert_array_equal(held_out.replay.median, train.replay.median)
    with pytest.raises(ConfigError, match="time_range"):
        quiet_env(time_range=(0.8, 0.2))


def test_state_views_follow_the_episode():
    """The scalar env's read-only views of its state (what the dashboard shows) follow the
    episode: the clock, actions in flight and their effect, faults, downtime and reward."""
    env = quiet_env(scenario={"faults": [{"at": 10, "fault": "process_crash", "stage": "serve"}]})
    env.reset(seed=0)
    train = env.stages.index("train")
    assert (env.time_s, env.downtime_s, env.total_reward) == (0.0, 0.0, 0.0)
    assert env.replicas.tolist() == [2] * env.n_stages and env.in_flight is None
    assert env.model_version == 2 and not env.light_model and env.faults == []
    su = action_index(env, "scale_up_train")
    _, total, _, _, info = env.step(su)
    violated = [info["slo_violated"]]
    assert env.in_flight == "scale_up_train" and env.last_action == su
    assert env.replicas[train] == 2  # scale_up takes 60 s
    for _ in range(6):
        _, r, _, _, info = env.step(0)
        total += r
        violated.append(info["slo_violated"])
    assert env.in_flight is None and env.replicas[train] == 3 and env.time_s == 70.0
    assert env.faults == info["faults"] == [("process_crash", "serve")]
    assert any(violated) and env.downtime_s == 10.0 * sum(violated)
    assert env.total_reward == pytest.approx(total)
    sl = action_index(env, "switch_light")
    env.step(sl)
    for _ in range(3):
        env.step(0)
    assert env.light_model and env.in_flight is None
    raw = env.raw_metrics
    assert set(raw) == set(env.stages) and all(len(v) == 6 for v in raw.values())
    assert 0.0 <= env.ml_health["accuracy"] <= 1.0
