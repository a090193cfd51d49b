"""The committed policy zoo loads (never retrains) and replays the episodes its card recorded:
if the env's dynamics or a policy's features changed, the zoo must be rebuilt (`make zoo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import healgym

ROOT = Path(__file__).resolve().parents[1]
ENTRIES = ("qlearning", "ppo", "ppo_history", "specialists")
WEIGHTS = {"qlearning": "q.npz", "ppo": "weights.npz", "ppo_history": "weights.npz",
           "specialists": "diagnoser.npz"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The sample telemetry the zoo was trained on, generated afresh (it is seeded)."""
    from experiments.random_chaos import sample_dataset

    return sample_dataset(tmp_path_factory.mktemp("sample"))


@pytest.mark.parametrize("entry", ENTRIES)
def test_the_card_says_how_each_policy_was_made(entry):
    where = ROOT / "zoo" / entry
    card = json.loads((where / "card.json").read_text())
    assert card["env"] == healgym.ENV_ID and card["policy"] == entry
    assert card["command"].startswith(f"python experiments/zoo.py --entries {entry}")
    assert len(card["seeds"]) >= 3
    for name, s in card["seeds"].items():
        assert (where / name / WEIGHTS[entry]).is_file() and s["train_wall_s"] > 0
        assert not (where / name / "rl_module").exists()  # nothing pickled is committed
        d = s["uptime_diff_pp"]
        assert d["ci_low"] <= d["value"] <= d["ci_high"]


def load(entry: str, seed: str, model) -> object:
    if entry == "qlearning":
        from agents.qlearning import QLearningAgent

        return QLearningAgent.load(ROOT / "zoo" / entry / seed, model)
    if entry == "specialists":
        from agents.specialists import load as load_routed

        return load_routed(ROOT / "zoo" / entry / seed, model)
    from agents.rllib.policy import RLlibPolicy

    return RLlibPolicy.load(ROOT / "zoo" / entry / seed, model)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("seed", ["seed0", "seed1", "seed2"])
def test_each_zoo_policy_loads_and_replays_its_check_episodes(entry, seed, dataset):
    """The same episodes, exactly: Q-learning's table lookups are exact; PPO's greedy action
    is the argmax of torch's CPU forward pass, which is deterministic on one machine type (a
    near-tie could flip on another CPU; then this test says so, and `make zoo` re-records)."""
    import gymnasium as gym

    from experiments.zoo import PPO_ENTRIES, check_episodes, env_kwargs

    history = PPO_ENTRIES.get(entry, False)
    card = json.loads((ROOT / "zoo" / entry / "card.json").read_text())
    model = gym.make(healgym.ENV_ID, **env_kwargs(dataset, "eval", history)).unwrapped.model
    agent = load(entry, seed, model)
    got, want = check_episodes(dataset, agent, history), card["seeds"][seed]["check"]
    assert [g["seed"] for g in got] == [w["seed"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["uptime_pct"] == pytest.approx(w["uptime_pct"], abs=1e-9)
        assert g["total_reward"] == pytest.approx(w["total_reward"], rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("entry", ENTRIES)
def test_lockstep_evaluation_plays_the_episodes_one_by_one_play_does(entry):
    """``play`` with a vector env runs batch-acting policies in lockstep (one forward pass per
    step for a chunk of episodes): the episode metrics equal the one-by-one run's, in order,
    on random chaos and on a scenario file, across a chunk boundary."""
    import gymnasium as gym

    from agents.study import batched, play, play_batched
    from experiments.zoo import PPO_ENTRIES

    kw = {"history": PPO_ENTRIES.get(entry, False)}
    probe = gym.make(healgym.ENV_ID, **kw).unwrapped.model
    policy = load(entry, "seed0", probe)
    assert batched(policy)
    seeds = range(20_000, 20_007)
    for options in (None, {"scenario": str(ROOT / "configs/scenarios/leak_cascade.yaml")}):
        one = play(lambda: gym.make(healgym.ENV_ID, **kw), [policy], seeds, options)[0]
        ticks: list[int] = []
        tick = ticks.append
        lock = play_batched(lambda n: gym.make_vec(healgym.ENV_ID, num_envs=n, **kw), policy,
                            seeds, None if options is None else options["scenario"],
                            lambda tick=tick: tick(1), chunk=3)
        assert lock == one and len(ticks) == len(seeds)
        if options is None:  # distinct episodes, not one repeated
            assert len({e["uptime_pct"] for e in one}) > 1


def test_rule_policies_are_not_batched():
    """Runbooks, the oracle and the random policy keep state across steps (rules' timers, a
    generator): they play one episode at a time."""
    import gymnasium as gym

    from agents.oracle import OracleAgent
    from agents.random_agent import RandomAgent
    from agents.runbook import RunbookAgent
    from agents.study import batched

    env = gym.make(healgym.ENV_ID)
    assert not batched(RunbookAgent(env, ROOT / "configs/runbooks/expert.yaml"))
    assert not batched(OracleAgent(env)) and not batched(RandomAgent(4, 0))
