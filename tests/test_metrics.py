"""Episode metrics (MTTR, downtime, uptime, reward) on hand-computed cases."""

from __future__ import annotations

import pytest

from tests.helpers import action_index, quiet_env

CRASH = {"faults": [{"at": 100, "fault": "process_crash", "stage": "deliver"}]}
ALWAYS = {"process_crash": {"restart": 1.0}}


def play(restart_at_step: int | None, steps: int = 120):
    """Crash the last stage at t=100 s; restart it by the action issued at step call k."""
    env = quiet_env(episode_steps=steps, scenario=CRASH, healing_matrix=ALWAYS)
    env.reset(seed=0)
    a = action_index(env, "restart_deliver")
    total = 0.0
    for k in range(steps):
        _, r, _, trunc, info = env.step(a if k == restart_at_step else 0)
        total += r
    assert trunc
    return info["episode_metrics"], total


def test_fast_fix_mttr_downtime_bonus_and_reward():
    # Step call k (0-based) advances t from 10k to 10(k+1). The crash lands at t=100 (call 9).
    # Call 10 issues the restart at t=100; it takes 30 s, so the crash is healed at t=130.
    # The SLO is violated at t=100, 110, 120: 30 s of downtime. MTTR = 30 s: the recovery
    # bonus is 100 x (1 - 30 / 600) = 95.
    m, total = play(restart_at_step=10)
    inc = m["incidents"][0]
    assert inc["onset_s"] == 100.0
    assert inc["detected_s"] == 100.0
    assert inc["resolved_s"] == 130.0 and inc["mttr_s"] == 30.0
    assert inc["resolved_by"] == "restart_deliver"
    assert m["downtime_s"] == 30.0
    assert m["uptime_pct"] == pytest.approx(100.0 * (1 - 30 / 1200))
    assert m["actions_taken"] == {"restart_deliver": 1} and m["action_cost"] == 1.0
    # -10/s x 30 s, -1 for the restart, +95 for the recovery
    assert total == pytest.approx(-300.0 - 1.0 + 95.0)
    assert m["total_reward"] == pytest.approx(total)


def test_a_slower_fix_earns_a_smaller_recovery_bonus_and_none_past_the_horizon():
    # Restart issued at t=200 (call 20), healed at 230: MTTR 130 s, downtime 100..220 = 130 s.
    m, total = play(restart_at_step=20)
    inc = m["incidents"][0]
    assert inc["mttr_s"] == 130.0
    assert m["downtime_s"] == 130.0
    assert total == pytest.approx(-1300.0 - 1.0 + 100.0 * (1 - 130 / 600))
    assert m["mean_mttr_s"] == 130.0
    # issued at t=800: MTTR 730 s, past the 600 s horizon: no bonus
    m, total = play(restart_at_step=80)
    assert m["incidents"][0]["mttr_s"] == 730.0
    assert total == pytest.approx(-7300.0 - 1.0)


def test_unresolved_incident_counts_down_to_the_end():
    m, total = play(restart_at_step=None)
    # violated at t = 100 .. 1200 inclusive: 111 steps of 10 s
    assert m["downtime_s"] == 1110.0
    assert m["unresolved_incidents"] == 1 and m["resolved_incidents"] == 0
    assert m["incidents"][0]["mttr_s"] is None and m["mean_mttr_s"] is None
    assert m["uptime_pct"] == pytest.approx(100.0 * (1 - 1110 / 1200))
    assert total == pytest.approx(-11100.0)


def test_healthy_episode_is_all_uptime():
    env = quiet_env(episode_steps=60)
    env.reset(seed=0)
    for _ in range(60):
        _, r, _, _, info = env.step(0)
        assert r == 0.0
    m = info["episode_metrics"]
    assert m["downtime_s"] == 0.0 and m["uptime_pct"] == 100.0 and m["n_incidents"] == 0


def test_reward_weights_are_configurable():
    env = quiet_env(episode_steps=120, scenario=CRASH, healing_matrix=ALWAYS,
                    reward={"slo_violation_per_s": 1.0, "recovery_bonus": 0.0,
                            "action_cost_weight": 0.0})
    env.reset(seed=0)
    a = action_index(env, "restart_deliver")
    total = sum(env.step(a if k == 10 else 0)[1] for k in range(120))
    assert total == pytest.approx(-30.0)
