"""The real-incident test's scoring: reaction delay and localisation on hand-made episodes, and
the end-to-end table on a dataset with labelled incidents."""

from __future__ import annotations

import numpy as np
import pytest

from agents.real_incidents import markdown, score_incidents, summary, wilson

STAGES = ["ingest", "features", "serve"]
# action index -> targeted stage: 0 noop, 1 restart_ingest, 2 restart_features, 3 restart_serve,
# 4 rollback (pipeline-wide)
STAGE_OF = [-1, 0, 1, 2, -1]


def episode(*incidents, elapsed=3600.0):
    return {"elapsed_s": elapsed, "incidents": list(incidents)}


def incident(stage, onset, resolved=None, source="replay", fault="cpu_contention"):
    return {"fault": fault, "stage": stage, "source": source, "onset_s": onset,
            "resolved_s": resolved, "mttr_s": None if resolved is None else resolved - onset}


def test_the_first_action_after_the_labels_start_is_the_one_scored():
    m = episode(incident("features", 300.0, 420.0))
    trace = [(100.0, 3), (330.0, 2), (360.0, 3)]  # before onset (ignored), then on the stage
    (r,) = score_incidents(m, trace, STAGE_OF, STAGES)
    assert r["reaction_delay_s"] == 30.0 and r["first_action_target"] == "features"
    assert r["localised"] and r["resolved"] and r["mttr_censored_s"] == 120.0


def test_a_wrong_stage_or_a_pipeline_wide_action_does_not_localise():
    m = episode(incident("serve", 300.0, 500.0))
    (r,) = score_incidents(m, [(310.0, 1), (320.0, 3)], STAGE_OF, STAGES)
    assert not r["localised"] and r["first_action_target"] == "ingest"
    (r,) = score_incidents(m, [(310.0, 4)], STAGE_OF, STAGES)
    assert not r["localised"] and r["first_action_target"] == "pipeline"


def test_no_action_before_the_incident_ends_and_open_incidents_are_censored():
    m = episode(incident("serve", 3000.0), elapsed=3600.0)
    (r,) = score_incidents(m, [(100.0, 3)], STAGE_OF, STAGES)
    assert r["reaction_delay_s"] is None and not r["localised"] and not r["resolved"]
    assert r["mttr_censored_s"] == 600.0
    # an action after the incident resolved is not a reaction to it
    m = episode(incident("serve", 300.0, 400.0))
    (r,) = score_incidents(m, [(400.0, 3)], STAGE_OF, STAGES)
    assert r["reaction_delay_s"] is None


def test_only_the_labelled_incidents_are_scored():
    m = episode(incident("serve", 300.0, 400.0, source="chaos"),
                incident("ingest", 500.0, 600.0))
    rows = score_incidents(m, [(500.0, 1)], STAGE_OF, STAGES)
    assert [r["stage"] for r in rows] == ["ingest"] and rows[0]["localised"]


def test_summary_and_intervals_stay_in_the_feasible_range():
    rows = [{"fault": "x", "stage": "serve", "onset_s": 0.0, "resolved": True,
             "mttr_censored_s": v, "reaction_delay_s": d, "first_action_target": t,
             "localised": t == "serve"}
            for v, d, t in [(100.0, 0.0, "serve"), (3600.0, None, None), (50.0, 10.0, "ingest"),
                            (80.0, 20.0, "serve")]]
    s = summary(rows, horizon_s=3600.0)
    assert s["incidents"] == 4 and s["acted_share"] == 0.75
    assert s["localisation"]["value"] == 0.5
    assert 0.0 <= s["localisation"]["ci_low"] < 0.5 < s["localisation"]["ci_high"] <= 1.0
    assert s["mttr_censored_s"]["ci_high"] <= 3600.0 and s["mttr_censored_s"]["ci_low"] >= 0.0
    assert s["reaction_delay_s"]["value"] == pytest.approx(10.0)
    assert "| p | 4 | 4 |" in markdown({"p": s}, "t")


def test_wilson_interval():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161, abs=0.002)
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.839, abs=0.002)
    assert np.isnan(wilson(0, 0)[0])


@pytest.mark.realdata
def test_the_oracle_localises_every_real_incident_and_noop_none(shared_data):
    """On Nezha's labelled faults (chaos off, one per episode) the oracle, which sees the
    ground truth, acts at the label's start on the labelled stage; no-op never acts."""
    import gymnasium as gym

    import healgym
    from agents import real_incidents
    from agents.oracle import OracleAgent
    from agents.random_agent import NoOpAgent
    from healgym.telemetry.importers import import_source

    ds = import_source("nezha", shared_data / "nezha/rca_data/2022-08-22")
    stages = {"ingest": "cartservice", "features": "productcatalogservice",
              "train": "recommendationservice", "serve": "frontend",
              "deliver": "checkoutservice"}

    def make_env():
        return gym.make(healgym.ENV_ID, dataset=ds, stages=stages, replay_incidents=True,
                        chaos=False)

    env = make_env()
    oracle, noop = real_incidents.run(make_env, [OracleAgent(env), NoOpAgent()], range(8))
    assert len(oracle) == len(noop) == 8  # one labelled incident an episode
    assert [r["stage"] for r in oracle] == [r["stage"] for r in noop]  # the same incidents
    assert all(r["localised"] and r["reaction_delay_s"] == 0.0 for r in oracle)
    assert not any(r["localised"] or r["reaction_delay_s"] is not None for r in noop)
    assert np.mean([r["mttr_censored_s"] for r in oracle]) < np.mean(
        [r["mttr_censored_s"] for r in noop])


@pytest.mark.realdata
def test_a_replayed_incident_does_not_announce_itself_before_its_onset(shared_data):
    """A labelled incident is registered at the episode's start; a release-type label (Nezha's
    'return' and 'exception' injections are error spikes) once set the deploy clock to its
    future onset, so ``since_deploy_h`` went negative (outside the observation space) and told
    the policy what was coming. Every observation stays in the space, and the deploy clock
    does not move at a replayed incident."""
    import gymnasium as gym

    import healgym
    from healgym.telemetry.importers import import_source

    ds = import_source("nezha", shared_data / "nezha/rca_data/2022-08-22")
    env = gym.make(healgym.ENV_ID, dataset=ds, stages={"serve": "frontend",
                                                       "deliver": "checkoutservice"},
                   replay_incidents=True, chaos=False)
    space, m = env.observation_space, env.unwrapped.model
    ix = m.layout.ctx("since_deploy_h")
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        seen = [obs]
        for _ in range(60):
            obs, *_ = env.step(0)
            seen.append(obs)
        a = np.array(seen)
        assert ((a >= space.low) & (a <= space.high)).all(), f"seed {seed}"
        assert (a[:, ix] == a[0, ix]).all()  # no deploy happened
