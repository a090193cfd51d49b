"""The oracle is an upper bound in distribution: on paired held-out episodes, no baseline's
uptime CI minus the oracle's lies above zero, nor its censored-MTTR CI below zero. (The oracle
sees the true faults, weighs every active one and charges shedding its side effect.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.oracle import OracleAgent
from agents.paired import compare
from agents.random_agent import NoOpAgent, RandomAgent
from agents.runbook import RunbookAgent
from agents.study import play
from healgym.envs.pipeline_heal import PipelineHealEnv
from tests.helpers import quiet_env

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(20_000, 20_080)


@pytest.mark.parametrize("scenario", [None, "bad_deploy_then_surge", "leak_cascade"])
def test_no_baseline_beats_the_oracle_in_distribution(scenario):
    def make():
        return PipelineHealEnv(time_range=(0.7, 1.0))

    options = None if scenario is None else {
        "scenario": str(ROOT / "configs/scenarios" / f"{scenario}.yaml")}
    env = make()
    policies = {"expert": RunbookAgent(env, ROOT / "configs/runbooks/expert.yaml"),
                "classic": RunbookAgent(env, ROOT / "configs/runbooks/classic.yaml"),
                "random": RandomAgent(env.action_space.n, seed=0), "noop": NoOpAgent()}
    seeds = SEEDS if scenario is None else SEEDS[:20]
    oracle = play(make, [OracleAgent(env)], seeds, options)[0]
    for name, policy in policies.items():
        eps = play(make, [policy], seeds, options)[0]
        up = compare(eps, oracle, "uptime_pct")["difference"]
        assert up["ci_low"] <= 0.0, (name, up)
        mttr = compare(eps, oracle, "mttr_censored_s", horizon_s=3600.0)["difference"]
        assert mttr["ci_high"] >= 0.0, (name, mttr)


def test_the_oracle_weighs_every_active_fault_and_avoids_needless_shedding():
    env = quiet_env(episode_steps=30, scenario={"faults": [
        {"at": 50, "fault": "request_surge", "stage": "serve"}]})
    oracle = OracleAgent(env)
    obs, info = env.reset(seed=0)
    for _ in range(5):
        obs, *_, info = env.step(0)
    assert info["faults"] == [("request_surge", "serve")]
    # shedding heals a surge more often and faster, but costs 180 s of SLO: scale up instead
    assert env.action_names[oracle.decide(obs, info).action] == "scale_up_serve"
    # two faults a rollback heals at once beat one a restart heals
    two = {**info, "faults": [("error_spike", "serve"), ("crash_loop", "train")]}
    assert env.action_names[oracle.decide(obs, two).action] == "rollback"
