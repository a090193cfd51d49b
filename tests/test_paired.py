"""Paired statistics: known answers on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from agents.paired import censored_mttr, compare, iqm, per_fault_mttr


def ep(uptime, mttr=None, onset=100.0, reward=0.0, harmful=0, fault="process_crash"):
    incidents = [] if mttr is False else [{"mttr_s": mttr, "onset_s": onset, "fault": fault}]
    return {"uptime_pct": uptime, "incidents": incidents, "elapsed_s": 3600.0,
            "total_reward": reward, "ineffective_actions": harmful, "n_actions": harmful}


def test_identical_policies_differ_by_exactly_nothing():
    eps = [ep(u) for u in np.linspace(40, 100, 30)]
    c = compare(eps, eps, "uptime_pct")
    assert c["difference"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert c["prob_improvement"]["value"] == 0.5


def test_a_constant_paired_gain_is_found_exactly_despite_episode_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(20, 90, 60)  # episode-to-episode spread far above the gain
    c = compare([ep(u + 3) for u in base], [ep(u) for u in base], "uptime_pct")
    assert c["difference"]["value"] == pytest.approx(3.0)
    assert c["difference"]["ci_low"] == pytest.approx(3.0)  # pairing removes the spread
    assert c["prob_improvement"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}


def test_intervals_stay_in_the_feasible_range():
    a = [ep(100.0) for _ in range(3)] + [ep(0.0)]
    b = [ep(0.0) for _ in range(3)] + [ep(100.0)]
    c = compare(a, b, "uptime_pct")
    assert -100.0 <= c["difference"]["ci_low"] <= c["difference"]["ci_high"] <= 100.0
    assert 0.0 <= c["iqm"]["ci_low"] and c["iqm"]["ci_high"] <= 100.0
    m = compare([ep(50, mttr=None, onset=0.0)] * 2 + [ep(50, mttr=10.0)],
                [ep(50, mttr=3000.0), ep(50, mttr=5.0), ep(50, mttr=20.0)], "mttr_censored_s",
                horizon_s=3600.0)
    assert -3600.0 <= m["difference"]["ci_low"] and m["difference"]["ci_high"] <= 3600.0


def test_lower_is_better_for_mttr_and_episodes_without_incidents_are_left_out():
    a = [ep(90, mttr=60.0), ep(90, mttr=120.0), ep(90, mttr=False)]
    b = [ep(90, mttr=300.0), ep(90, mttr=300.0), ep(90, mttr=False)]
    c = compare(a, b, "mttr_censored_s")
    assert c["episodes"] == 2 and c["difference"]["value"] == pytest.approx(-210.0)
    assert c["prob_improvement"]["value"] == 1.0 and not c["higher_is_better"]


def test_censored_mttr_counts_open_incidents_to_the_end():
    assert censored_mttr(ep(50, mttr=None, onset=600.0)) == 3000.0
    assert np.isnan(censored_mttr(ep(100, mttr=False)))


def test_the_bootstrap_is_seeded_and_stratified_by_training_seed():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, 40)
    a, b = [ep(u + rng.normal(2, 5)) for u in base], [ep(u) for u in base]
    one = compare(a, b, "uptime_pct", seed=3)
    assert one == compare(a, b, "uptime_pct", seed=3)
    # two training seeds, one much better: stratifying keeps each seed's share of episodes
    groups = [0] * 20 + [1] * 20
    strat = compare(a, b, "uptime_pct", groups=groups)
    assert strat["difference"]["value"] == one["difference"]["value"]


def test_iqm_ignores_the_extreme_quarters():
    assert iqm(np.array([-1000.0, 1, 2, 3, 4, 5, 6, 1000.0])) == pytest.approx(3.5)


def test_per_fault_mttr_breakdown():
    eps = [ep(90, mttr=60.0), ep(90, mttr=None, onset=3000.0), ep(90, mttr=30.0, fault="gpu_oom")]
    t = per_fault_mttr(eps)
    assert t["process_crash"] == {"incidents": 2, "mttr_mean_s": 330.0, "mttr_median_s": 330.0,
                                  "resolved_share": 0.5}
    assert t["gpu_oom"]["incidents"] == 1


def test_the_per_fault_table_has_a_column_per_policy():
    from agents.study import PolicyRuns, paired_summary, per_fault_markdown

    a = PolicyRuns("a", [[ep(90, mttr=60.0), ep(90, mttr=30.0, fault="gpu_oom")]])
    b = PolicyRuns("b", [[ep(80, mttr=600.0), ep(80, mttr=None, onset=600.0, fault="gpu_oom")]])
    table = per_fault_markdown(paired_summary({"a": a, "b": b}, "a", 3600.0, reps=50), "chaos")
    lines = table.splitlines()
    assert lines[2] == "| fault | a | b |"
    assert "| gpu_oom | 30 (1) | 3000 (1) |" in lines
    assert "| process_crash | 60 (1) | 600 (1) |" in lines
