"""Q-learning learns a case with a known optimum; its saved policy round-trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.evaluation import run_episode
from agents.qlearning import FORMAT_VERSION, QConfig, QLearningAgent
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.envs.vector import PipelineHealVectorEnv
from healgym.errors import HealgymError

# Every episode: the serve stage crashes at 60 s; restarting it always works. The optimum is to
# do nothing until the crash and restart serve the moment it shows: 30 s MTTR, reward -206
# (3 steps of violation at -100, the restart's cost 1, the recovery bonus 100 x (1 - 30/600)).
CRASH = dict(chaos=False, healing_matrix={"process_crash": {"restart": 1.0}},
             scenario={"faults": [{"at": 60, "fault": "process_crash", "stage": "serve"}]})


@pytest.fixture(scope="module")
def trained():
    venv = PipelineHealVectorEnv(num_envs=64, episode_steps=30, **CRASH)
    agent = QLearningAgent(venv.model, config=QConfig(epsilon_start=1.0, epsilon=0.05,
                                                      decay_steps=3000, seed=3))
    log = agent.train(venv, 6000)
    return agent, log


def test_learns_the_known_optimum(trained):
    agent, log = trained
    env = PipelineHealEnv(episode_steps=30, **CRASH)
    mttr = []
    for seed in (11, 12, 13):
        m = run_episode(env, agent, seed)
        inc = m["incidents"][0]
        assert inc["resolved_by"] == "restart_serve"  # the one action that heals it
        mttr.append(inc["mttr_s"])
        assert m["total_reward"] > -800  # the optimum is -206, doing nothing about -2600
    assert np.mean(mttr) <= 90.0  # within a few steps of the optimum's 30 s
    from agents.random_agent import NoOpAgent

    noop_reward = run_episode(env, NoOpAgent(), 11)["total_reward"]
    assert noop_reward < -2000
    # the log shows exploration decaying and the reward improving
    assert log.explore_share[0] > 0.8 and log.explore_share[-1] < 0.1
    assert np.mean(log.mean_reward[-10:]) > np.mean(log.mean_reward[:10]) + 30


def test_saved_policy_round_trips_and_refuses_other_pipelines(trained, tmp_path):
    agent, _ = trained
    path = agent.save(tmp_path / "q", extra={"trained_steps": 6000})
    meta = json.loads((path / "policy.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["trained_steps"] == 6000
    back = QLearningAgent.load(path, agent.model)
    np.testing.assert_array_equal(back.q, agent.q)
    env = PipelineHealEnv(episode_steps=30, **CRASH)
    obs, info = env.reset(seed=5)
    assert back.decide(obs, info).action == agent.decide(obs, info).action
    other = PipelineHealEnv(stages=["ingest", "serve"], **CRASH).model
    with pytest.raises(HealgymError, match="actions"):
        QLearningAgent.load(path, other)
    meta["format_version"] = 99
    (path / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(HealgymError, match="retrain"):
        QLearningAgent.load(path, agent.model)


def test_a_pessimistic_table_does_not_make_untried_actions_look_best():
    env = PipelineHealEnv(episode_steps=30, **CRASH)
    agent = QLearningAgent(env.model, config=QConfig(gamma=0.95, pessimistic=True))
    assert agent.q.max() == agent.q.min() == pytest.approx(-10.0 * 10.0 / 0.05)  # forever
    obs, info = env.reset(seed=0)
    s = int(agent.disc.states(env.model, obs[None])[0])
    agent.q[s, 0] = -50.0  # noop was tried here and is fine
    assert agent.decide(obs, info).action == 0
    optimistic = QLearningAgent(env.model, config=QConfig())  # the default: from 0
    optimistic.q[s, 0] = -50.0
    assert optimistic.decide(obs, info).action != 0  # v0's flailing: any untried action


def test_history_features_need_the_history_block():
    from agents.qlearning import DEFAULT_FEATURES, HISTORY_FEATURES
    from healgym.errors import ConfigError

    plain = PipelineHealEnv(episode_steps=30, **CRASH)
    agent = QLearningAgent(plain.model, features=DEFAULT_FEATURES + HISTORY_FEATURES)
    obs, info = plain.reset(seed=0)
    with pytest.raises(ConfigError, match="history=True"):
        agent.decide(obs, info)
    hist = PipelineHealEnv(episode_steps=30, history=True, **CRASH)
    agent = QLearningAgent(hist.model, features=DEFAULT_FEATURES + HISTORY_FEATURES)
    obs, info = hist.reset(seed=0)
    assert agent.decide(obs, info).action == 0
    assert agent.q.shape[0] == 4 * QLearningAgent(plain.model).q.shape[0]


def test_one_observations_state_is_the_batch_state():
    """decide reads one observation with a precomputed plan; it must give the state the batch
    discretiser gives (which training uses), for every feature kind."""
    from agents.qlearning import DEFAULT_FEATURES, HISTORY_FEATURES, Discretiser

    env = PipelineHealEnv(history=True, episode_steps=200, chaos={"rate_scale": 4.0})
    m = env.model
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    rows = []
    for _ in range(200):
        rows.append(obs)
        a = int(rng.choice(np.flatnonzero(info["action_mask"]))) if rng.random() < 0.3 else 0
        obs, *_, info = env.step(a)
    batch = np.array(rows)
    disc = Discretiser((*DEFAULT_FEATURES, *HISTORY_FEATURES), m.n_stages, len(m.actions))
    plan = disc.plan(m)
    one = [disc.state(m, plan, o) for o in batch]
    np.testing.assert_array_equal(one, disc.states(m, batch))
    assert len(set(one)) > 10  # the episode visits many states
