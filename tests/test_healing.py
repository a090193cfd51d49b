"""Each action fixes exactly the faults the healing matrix says, and wrong actions cost."""

from __future__ import annotations

import numpy as np
import pytest

from healgym.sim.actions import DEFAULT_HEALING, KINDS
from healgym.sim.chaos import stage_choices
from healgym.sim.faults import BY_NAME, FAULT_NAMES
from tests.helpers import action_index, quiet_env

# The default matrix made deterministic: an entry >= 0.5 always heals, the rest never do.
DETERMINISTIC = {f: {k: 1.0 for k, p in row.items() if p >= 0.5}
                 for f, row in DEFAULT_HEALING.items() if f in FAULT_NAMES}
ACTION_KINDS = [k.name for k in KINDS if k.name != "noop"]


def outcome(fault: str, kind: str, matrix: dict | None, seed: int = 0) -> str | None:
    """Inject ``fault`` at 10 s, take ``kind`` (on the fault's stage) at 10 s, wait it out;
    returns who resolved the incident (action name, 'natural') or None if it is still open.
    An action that heals the fault only after its ramp (``FaultSpec.heals_after_ramp``, tested
    in tests/envs/test_ambiguity.py) is taken once the ramp is over."""
    env = quiet_env(episode_steps=400, healing_matrix=matrix,
                    scenario={"faults": [{"at": 10, "fault": fault}]})
    env.reset(seed=seed)
    env.step(0)  # t = 10: the fault is active
    if kind in BY_NAME[fault].heals_after_ramp:
        for _ in range(int(BY_NAME[fault].ramp_s // env.dt)):
            env.step(0)
    stage = env.stages[stage_choices(fault, env.stages)[0]]
    name = f"{kind}_{stage}" if KINDS[[k.name for k in KINDS].index(kind)].per_stage else kind
    a = action_index(env, name)
    if not env.action_masks()[a]:
        return "masked"
    env.step(a)
    duration = KINDS[[k.name for k in KINDS].index(kind)].duration_s
    for _ in range(int(duration // env.dt) + 2):
        env.step(0)
    inc = env.episode_metrics()["incidents"][0]
    return inc["resolved_by"]


@pytest.mark.parametrize("fault", FAULT_NAMES)
def test_each_action_fixes_exactly_what_the_matrix_says(fault):
    stage_actions = {"restart", "scale_up", "scale_down"}
    for kind in ACTION_KINDS:
        who = outcome(fault, kind, DETERMINISTIC)
        heals = DETERMINISTIC[fault].get(kind, 0.0) == 1.0
        if who == "masked":
            assert not heals, f"{kind} heals {fault} by the matrix but is masked"
            continue
        stage_name = f"{kind}_" if kind in stage_actions else kind
        if heals:
            assert who is not None and who.startswith(stage_name), (fault, kind, who)
        else:
            assert who is None or who == "natural", (fault, kind, who)


def test_stage_actions_only_act_on_their_stage():
    env = quiet_env(healing_matrix={"process_crash": {"restart": 1.0}},
                    scenario={"faults": [{"at": 10, "fault": "process_crash", "stage": "serve"}]})
    env.reset(seed=0)
    env.step(0)
    env.step(action_index(env, "restart_ingest"))
    for _ in range(5):
        env.step(0)
    assert env.episode_metrics()["unresolved_incidents"] == 1
    env.step(action_index(env, "restart_serve"))
    for _ in range(5):
        env.step(0)
    assert env.episode_metrics()["incidents"][0]["resolved_by"] == "restart_serve"


@pytest.mark.parametrize(("fault", "kind"), [("process_crash", "restart"),
                                             ("network_delay", "restart"),
                                             ("covariate_drift", "escalate")])
def test_default_matrix_success_rate_matches_its_probability(fault, kind):
    p = DEFAULT_HEALING[fault][kind]
    n = 200
    wins = sum(outcome(fault, kind, None, seed=s) not in (None, "natural") for s in range(n))
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(wins / n - p) < 4 * sigma + 1e-9


def test_an_action_heals_only_faults_present_when_it_was_issued():
    env = quiet_env(healing_matrix={"process_crash": {"restart": 1.0}},
                    scenario={"faults": [{"at": 20, "fault": "process_crash", "stage": "serve"}]})
    env.reset(seed=0)
    env.step(action_index(env, "restart_serve"))  # issued at t=0, before the crash
    for _ in range(5):
        env.step(0)
    assert env.episode_metrics()["unresolved_incidents"] == 1


def test_wrong_action_fixes_nothing_and_drops_traffic():
    """A restart during data drift: the drift stays and the restart itself breaks the SLO."""
    scen = {"faults": [{"at": 10, "fault": "covariate_drift"}]}

    def run(action):
        env = quiet_env(scenario=scen)
        env.reset(seed=1)
        env.step(0)
        if action:
            env.step(action_index(env, action))
        for _ in range(6):
            env.step(0)
        return env.episode_metrics()

    noop, restart = run(None), run("restart_deliver")
    assert restart["unresolved_incidents"] == 1
    assert restart["ineffective_actions"] == 1 and noop["ineffective_actions"] == 0
    assert restart["downtime_s"] > noop["downtime_s"]
    assert restart["total_reward"] < noop["total_reward"] - 1.0


def test_unknown_matrix_entries_are_refused():
    from healgym.errors import ConfigError

    with pytest.raises(ConfigError, match='Did you mean "restart"'):
        quiet_env(healing_matrix={"process_crash": {"restrat": 1.0}})
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        quiet_env(healing_matrix={"process_crash": {"restart": 1.5}})
