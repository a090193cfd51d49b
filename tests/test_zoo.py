"""The committed policy zoo loads (never retrains) and replays the episodes its card recorded:
if the env's dynamics or a policy's features changed, the zoo must be rebuilt (`make zoo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import healgym
from agents.qlearning import QLearningAgent

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "zoo" / "qlearning"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The sample telemetry the zoo was trained on, generated afresh (it is seeded)."""
    from experiments.random_chaos import sample_dataset

    return sample_dataset(tmp_path_factory.mktemp("sample"))


def test_the_card_says_how_each_policy_was_made():
    card = json.loads((ENTRY / "card.json").read_text())
    assert card["env"] == healgym.ENV_ID
    assert card["command"].startswith("python experiments/zoo.py")
    assert len(card["seeds"]) >= 3
    for name, s in card["seeds"].items():
        assert (ENTRY / name / "q.npz").is_file() and s["train_wall_s"] > 0
        d = s["uptime_diff_pp"]
        assert d["ci_low"] <= d["value"] <= d["ci_high"]


@pytest.mark.parametrize("seed", ["seed0", "seed1", "seed2"])
def test_each_zoo_policy_loads_and_replays_its_check_episodes(seed, dataset):
    from experiments.zoo import check_episodes, env_kwargs

    card = json.loads((ENTRY / "card.json").read_text())
    import gymnasium as gym

    model = gym.make(healgym.ENV_ID, **env_kwargs(dataset, "eval")).unwrapped.model
    agent = QLearningAgent.load(ENTRY / seed, model)
    got, want = check_episodes(dataset, agent), card["seeds"][seed]["check"]
    assert [g["seed"] for g in got] == [w["seed"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["uptime_pct"] == pytest.approx(w["uptime_pct"], abs=1e-9)
        assert g["total_reward"] == pytest.approx(w["total_reward"], rel=1e-9, abs=1e-6)
