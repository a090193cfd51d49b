"""Scenario files inject at the stated times; bad files get clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from healgym.errors import ConfigError
from healgym.sim.chaos import load_scenario
from tests.helpers import episode_equal, quiet_env, run_actions

ROOT = Path(__file__).resolve().parents[1]


def first_seen(env, fault, steps=200):
    env.reset(seed=0)
    for _ in range(steps):
        _, _, _, _, info = env.step(0)
        if any(f == fault for f, _ in info["faults"]):
            return info["time_s"]
    return None


def test_scenario_file_injects_at_stated_times(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(
        "name: two\nfaults:\n"
        "  - {at: 120, fault: bad_model_deploy, stage: serve}\n"
        "  - {at: 300, fault: request_surge, stage: ingest, severity: 0.5}\n"
        "  - {at: 255, fault: null_surge}\n")
    env = quiet_env(scenario=str(path), episode_steps=60)
    assert first_seen(env, "bad_model_deploy") == 120.0
    assert first_seen(env, "request_surge") == 300.0
    assert first_seen(env, "null_surge") == 260.0  # the first step boundary at or after 255 s
    m = run_actions(env, 0)[-1][2]["episode_metrics"]
    assert [i["onset_s"] for i in m["incidents"]] == [120.0, 260.0, 300.0]
    assert {i["stage"] for i in m["incidents"]} == {"serve", "ingest"}


def test_shipped_scenarios_load_and_run():
    files = sorted((ROOT / "configs" / "scenarios").glob("*.yaml"))
    assert files
    for f in files:
        sc = load_scenario(f)
        env = quiet_env(scenario=str(f), episode_steps=360)
        res = run_actions(env, 0)
        assert res[-1][2]["episode_metrics"]["n_incidents"] >= len(sc.faults)


def test_same_seed_same_episode_with_scenario_and_random_chaos():
    scen = {"random_chaos": True, "faults": [{"at": 50, "fault": "memory_leak"}]}
    env = quiet_env(scenario=scen, chaos={"rate_scale": 4.0}, episode_steps=200)
    a, b = run_actions(env, 9), run_actions(env, 9)
    assert episode_equal(a, b)
    assert a[-1][2]["episode_metrics"]["n_incidents"] > 1


@pytest.mark.parametrize(("text", "match"), [
    ("faults:\n  - {at: 10, fault: memleak}\n", 'faults\\[0\\].fault .*Did you mean "memory_leak"'),
    ("faults:\n  - {fault: null_surge}\n", "faults\\[0\\] is missing required key 'at'"),
    ("faults:\n  - {at: soon, fault: null_surge}\n", "faults\\[0\\].at = 'soon' is not a number"),
    ("faults:\n  - {at: 10, fault: null_surge, stage: servee}\n", 'Did you mean "serve"'),
    ("faults:\n  - {at: 10, fault: null_surge, sevrity: 2}\n", 'Did you mean "severity"'),
    ("faults: []\n", "non-empty list"),
    ("fautls:\n  - {at: 1, fault: null_surge}\n", 'Did you mean "faults"'),
    ("faults: [\n", "not valid YAML"),
])
def test_bad_scenario_files_are_refused_with_where_and_fix(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        quiet_env(scenario=str(path))
    assert str(path) in str(err.value)


def test_missing_scenario_file():
    with pytest.raises(ConfigError, match="not found"):
        load_scenario("/nonexistent/scenario.yaml")
