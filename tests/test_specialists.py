"""Router + specialists (issue 18): the portable forest predicts as scikit-learn does, the
router hands control over when the diagnosis changes and acts on low confidence as
configured, and the composite saves, loads, refuses another pipeline, plays lockstep episodes
identical to one-by-one play, trains through Hydra and serves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import healgym
from agents.diagnosis import HEALTHY, ForestDiagnoser, TreeDiagnoser, TreeEnsemble, build_dataset
from agents.policy import Decision
from agents.specialists import (
    RoutedPolicy,
    RouterConf,
    check_families,
    default_families,
    family_chaos,
    load,
)
from healgym.errors import ConfigError, HealgymError
from healgym.sim.faults import LIBRARY
from tests.serving.common import stand_in  # noqa: F401 (the local HTTP stand-in fixture)

ROOT = Path(__file__).resolve().parents[1]


def make_env(**kw):
    return gym.make(healgym.ENV_ID, **{"episode_steps": 60, **kw})


# --------------------------------------------------------------------------- the forest
@pytest.mark.parametrize("kind", ["forest", "tree"])
def test_the_portable_forest_predicts_as_scikit_learn_does_and_loads_without_pickle(kind,
                                                                                   tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 7))
    y = np.where(X[:, 0] > 0.5, "a@x", np.where(X[:, 3] < -0.2, "b@y", "healthy"))
    d = ForestDiagnoser(trees=12, seed=1) if kind == "forest" else TreeDiagnoser(max_depth=6)
    d.est.fit(X, y)
    ens = TreeEnsemble.from_sklearn(d.est)
    ens.save(tmp_path / "d.npz")
    back = TreeEnsemble.load(tmp_path / "d.npz")  # np.load(allow_pickle=False) inside
    Xt = rng.normal(size=(300, 7))
    np.testing.assert_allclose(back.predict_proba(Xt), d.est.predict_proba(Xt), atol=1e-6)
    assert back.classes == list(d.est.classes_)
    with pytest.raises(ValueError, match="reads 7 values"):
        back.predict_proba(Xt[:, :5])


def test_a_diagnoser_file_holding_objects_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", classes=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        TreeEnsemble.load(tmp_path / "d.npz")


# --------------------------------------------------------------------------- families
def test_families_cover_the_library_once_and_bad_ones_are_refused():
    fams = default_families()
    assert set(fams) == {"infra", "model", "data"}
    assert sorted(f for v in fams.values() for f in v) == sorted(f.name for f in LIBRARY)
    assert fams["model"] == ["bad_model_deploy"] and "covariate_drift" in fams["data"]
    everything = [f.name for f in LIBRARY]
    assert check_families({"a": everything[:3], "b": everything[3:]})["a"] == everything[:3]
    with pytest.raises(ConfigError, match="unknown fault 'proces_crash'.*process_crash"):
        check_families({"a": ["proces_crash", *everything[1:]]})
    with pytest.raises(ConfigError, match="'crash_loop' is in both 'a' and 'b'"):
        check_families({"a": everything, "b": ["crash_loop"]})
    with pytest.raises(ConfigError, match=r"faults \['gpu_oom'\] are in no family"):
        check_families({"a": [f for f in everything if f != "gpu_oom"]})
    with pytest.raises(ConfigError, match="no-incident label"):
        check_families({HEALTHY: everything})


def test_family_chaos_keeps_only_the_familys_faults_at_the_same_incident_rate():
    from healgym.sim.chaos import ChaosConfig

    faults = default_families()["data"]
    chaos = ChaosConfig.from_value(family_chaos({"rate_scale": 2.0}, faults))
    rates = {f.name: chaos.rate(f.name) for f in LIBRARY}
    assert all(rates[f.name] == 0.0 for f in LIBRARY if f.name not in faults)
    full = ChaosConfig.from_value({"rate_scale": 2.0})
    assert sum(rates.values()) == pytest.approx(sum(full.rate(f.name) for f in LIBRARY))


# --------------------------------------------------------------------------- routing
class Scripted:
    """A diagnoser whose answer is the observation's first value: class index."""

    def __init__(self, classes, n_features, confidence=0.9):
        self.classes, self.n_features, self.confidence = classes, n_features, confidence

    def predict_proba(self, X):
        X = np.atleast_2d(X)
        last = X[:, -self.width]  # the window's newest observation, first value
        out = np.full((len(X), len(self.classes)), (1 - self.confidence) /
                      (len(self.classes) - 1))
        out[np.arange(len(X)), last.astype(int)] = self.confidence
        return out


class Fixed:
    """A specialist that always proposes one action."""

    def __init__(self, action):
        self.action, self.name = action, f"fixed{action}"

    def reset(self):
        pass

    def act(self, obs, mask):
        return np.full(len(np.atleast_2d(obs)), self.action)

    def decide(self, obs, info):
        return Decision(self.action, {"from": self.name})


@pytest.fixture()
def routed():
    """Two families (crash -> restart specialist; crash loop -> rollback specialist) and a
    diagnoser that answers what the observation says."""
    env = make_env()
    model = env.unwrapped.model
    names = model.action_names
    everything = [f.name for f in LIBRARY]
    families = {"restarts": ["process_crash"],
                "releases": [f for f in everything if f != "process_crash"]}
    classes = ["process_crash@serve", "crash_loop@serve", HEALTHY]
    window = 3
    diag = Scripted(classes, window * model.n_obs)
    diag.width = model.n_obs
    specs = {"restarts": Fixed(names.index("restart_serve")),
             "releases": Fixed(names.index("rollback"))}

    def build(**router):
        return RoutedPolicy(model, diag, specs, families, RouterConf(window=window, **router))

    return build, model, names, diag


def obs_saying(model, k):
    o = np.zeros(model.n_obs, dtype=np.float32)
    o[0] = k
    return o


def test_control_passes_to_the_other_specialist_when_the_diagnosis_changes(routed):
    build, model, names, _ = routed
    policy = build(switch_after=2)
    policy.reset()
    mask = np.ones(len(names), dtype=np.int8)
    # healthy, then a crash, then it turns out to be a crash loop
    story = [2, 0, 0, 0, 1, 1, 1, 2, 2]
    got = [policy.decide(obs_saying(model, k), {"action_mask": mask}) for k in story]
    acts = [names[d.action] for d in got]
    assert acts == ["noop", "restart_serve", "restart_serve", "restart_serve",
                    "restart_serve",  # one step of the new answer is not enough (switch_after)
                    "rollback", "rollback", "noop", "noop"]
    specialists = [d.explanation["specialist"] for d in got]
    assert specialists == [None, "restarts", "restarts", "restarts", "restarts", "releases",
                           "releases", None, None]
    # a hand-over is control passing between specialists; into and out of healthy is at once
    assert [d.explanation["handover"] for d in got] == [False, False, False, False, False,
                                                         True, False, False, False]
    d = got[5]
    assert d.explanation["diagnosis"] == {"fault": "crash_loop", "stage": "serve",
                                          "score": 0.9}
    assert d.explanation["family"] == "releases" and d.explanation["family_score"] == 0.9
    assert d.explanation["specialist_explanation"] == {"from": "fixed16"}
    assert got[-1].explanation["handovers"] == 1
    # switch_after=1: the hand-over is at once
    policy = build(switch_after=1)
    policy.reset()
    acts = [names[policy.decide(obs_saying(model, k), {"action_mask": mask}).action]
            for k in story]
    assert acts[4] == "rollback"


@pytest.mark.parametrize("mode, masked, expected", [
    ("escalate", False, "escalate"), ("escalate", True, "noop"),
    ("safe_default", False, "noop"), ("specialist", False, "restart_serve")])
def test_a_low_confidence_diagnosis_escalates_or_takes_the_safe_default(routed, mode, masked,
                                                                        expected):
    build, model, names, diag = routed
    diag.confidence = 0.4  # the leading family's score: below min_confidence
    policy = build(min_confidence=0.5, low_confidence=mode)
    policy.reset()
    mask = np.ones(len(names), dtype=np.int8)
    if masked:  # an escalation already in flight
        mask[names.index("escalate")] = 0
    d = policy.decide(obs_saying(model, 0), {"action_mask": mask})
    assert names[d.action] == expected
    assert d.explanation["confidence"] == pytest.approx(0.4, abs=1e-3)
    if mode != "specialist":
        assert d.explanation["low_confidence"] == mode and d.explanation["specialist"] is None
    # the batch path agrees
    policy.begin_batch(2)
    assert names[int(policy.act(np.stack([obs_saying(model, 0)] * 2),
                                np.stack([mask] * 2))[1])] == expected


def test_while_healthy_the_router_waits_or_lets_the_likeliest_specialist_act(routed):
    build, model, names, diag = routed
    mask = np.ones(len(names), dtype=np.int8)
    for healthy, expected in (("noop", "noop"), ("specialist", "restart_serve")):
        policy = build(healthy=healthy)
        policy.reset()
        # healthy leads; of the families, restarts' class (index 0) holds the rest
        d = policy.decide(obs_saying(model, 2), {"action_mask": mask})
        assert d.explanation["family"] == HEALTHY and names[d.action] == expected


def test_router_settings_are_checked():
    with pytest.raises(ConfigError, match="low_confidence = 'page'"):
        RouterConf(low_confidence="page")
    with pytest.raises(ConfigError, match="min_confidence"):
        RouterConf(min_confidence=1.5)
    with pytest.raises(ConfigError, match="router.healthy = 'wait'"):
        RouterConf(healthy="wait")


def test_the_batch_path_routes_each_row_as_decide_does(routed):
    build, model, names, _ = routed
    stories = np.array([[2, 0, 0, 1, 1, 1], [0, 1, 1, 2, 2, 0], [1, 1, 0, 0, 0, 0]])
    mask = np.ones(len(names), dtype=np.int8)
    one = []
    for row in stories:
        p = build()
        p.reset()
        one.append([p.decide(obs_saying(model, k), {"action_mask": mask}).action for k in row])
    p = build()
    p.begin_batch(len(stories))
    batch = np.array([p.act(np.stack([obs_saying(model, k) for k in stories[:, t]]),
                            np.stack([mask] * len(stories)))
                      for t in range(stories.shape[1])]).T
    assert batch.tolist() == one


# --------------------------------------------------------------------------- a trained one
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from agents.config import QLearningConf, SpecialistsConf
    from agents.training import SpecialistsTrainer

    conf = OmegaConf.structured(SpecialistsConf(
        qlearning=QLearningConf(steps=600, num_envs=32), diagnoser_episodes=12,
        diagnoser_trees=8))
    trainer = SpecialistsTrainer(**OmegaConf.to_container(conf))
    cfg = OmegaConf.create({"seed": 0, "runbook": {"expert": "configs/runbooks/expert.yaml"}})
    kw = {"episode_steps": 60}
    policy = trainer.fit(cfg, kw)
    out = tmp_path_factory.mktemp("routed") / "policy"
    policy.save(out, extra={"timings": trainer.timings})
    return out, policy


def test_the_composite_saves_as_one_folder_and_loads_to_the_same_decisions(trained):
    out, policy = trained
    meta = json.loads((out / "policy.json").read_text())
    assert meta["format"] == "healgym-routed" and set(meta["specialists"]) == {
        "infra", "model", "data"}
    assert sorted(p.name for p in out.iterdir()) == ["diagnoser.npz", "policy.json",
                                                     "specialists"]
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.pt"))
    from healgym.policy import load_saved_policy

    env = make_env()
    back = load_saved_policy(out, env.unwrapped.model)  # found by its format
    assert isinstance(back, RoutedPolicy) and back.router == policy.router
    for p in (policy, back):
        p.reset()
    obs, info = env.reset(seed=5)
    for _ in range(40):
        a, b = policy.decide(obs, info), back.decide(obs, info)
        assert a.action == b.action and a.explanation == b.explanation
        assert info["action_mask"][a.action]
        obs, *_, info = env.step(a.action)
    assert {"diagnosis", "family", "family_score", "specialist"} <= set(a.explanation)


def test_the_composite_refuses_another_pipeline(trained, tmp_path):
    out, _ = trained
    other = make_env(stages=["ingest", "serve"]).unwrapped.model
    with pytest.raises(HealgymError, match="trained for actions"):
        load(out, other)
    history = make_env(history=True).unwrapped.model  # same actions, longer observation
    with pytest.raises(HealgymError, match="observation"):
        load(out, history)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "diagnoser.npz").write_bytes(b"not an npz")
    with pytest.raises(HealgymError, match="diagnoser cannot be read"):
        load(broken, make_env().unwrapped.model)


def test_lockstep_episodes_are_the_one_by_one_episodes(trained):
    from agents.study import play

    _, policy = trained

    def make():
        return make_env()

    def make_vec(n):
        return gym.make_vec(healgym.ENV_ID, num_envs=n, episode_steps=60)

    seeds = range(10_000, 10_006)
    one = play(make, [policy], seeds, None)[0]
    lock = play(make, [policy], seeds, None, make_vec=make_vec)[0]
    assert [e["total_reward"] for e in lock] == [e["total_reward"] for e in one]
    assert [e["actions_taken"] for e in lock] == [e["actions_taken"] for e in one]


def test_agent_specialists_trains_through_hydra(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "experiments/train.py", "agent=specialists",
         "agent.qlearning.steps=300", "agent.qlearning.num_envs=16",
         "agent.diagnoser_episodes=6", "agent.diagnoser_trees=4", "env.episode_steps=40",
         "agent.low_confidence=safe_default", f"output_dir={tmp_path}/out",
         f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = next((tmp_path / "out").glob("specialists__seed0__*"))
    policy = load(folder, make_env().unwrapped.model)
    assert policy.router.low_confidence == "safe_default"
    bad = subprocess.run(
        [sys.executable, "experiments/train.py", "agent=specialists",
         "agent.low_confidence=page", f"output_dir={tmp_path}/out2",
         f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"], cwd=ROOT, capture_output=True,
        text=True, timeout=120)
    assert bad.returncode != 0 and "low_confidence = 'page'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_dataset_can_label_healthy_windows():
    data = build_dataset(lambda: make_env(chaos=False), range(2), window=3, healthy_every=4)
    assert len(data) == 2 * (60 // 4) and set(data.fault) == {HEALTHY}
    assert set(data.family) == {HEALTHY}


# --------------------------------------------------------------------------- serving
def test_healgym_serve_runs_the_composite_and_logs_its_diagnosis(stand_in, tmp_path,  # noqa: F811
                                                                 capsys):
    """`healgym serve --policy <composite folder>` on scraped metrics: each decision's
    explanation names the diagnosis, its score and the specialist (or why none acted)."""
    from healgym.cli import main
    from healgym.serving.decision_log import DecisionLog
    from healgym.sim.faults import METRICS

    handler, url = stand_in
    m = make_env().unwrapped.model
    body = "\n".join(f'{metric}{{stage="{stage}"}} {m.median[i, j]}'
                     for i, stage in enumerate(m.stages) for j, metric in enumerate(METRICS))
    handler.routes[("GET", "/metrics")] = (200, body + "\naccuracy 0.95\n")
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"source: {{kind: scrape, targets: ['{url}/metrics']}}\ninterval_s: 0.1\n"
                   f"decision_log: sqlite:///{tmp_path / 'd.db'}\n")
    assert main(["serve", "--policy", str(ROOT / "zoo/specialists/seed0"), "--config",
                 str(cfg), "--steps", "3"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(out) == 3 and all(o["status"] == "proposed" for o in out)
    recs = DecisionLog(f"sqlite:///{tmp_path / 'd.db'}").records()
    assert {r["policy"] for r in recs} == {"specialists"}
    for r in recs:
        ex = r["explanation"]
        assert {"diagnosis", "family", "family_score", "specialist", "confidence"} <= set(ex)
        assert set(ex["diagnosis"]) == {"fault", "stage", "score"}
    # a healthy pipeline at its medians: the router sees no incident and waits
    assert recs[-1]["proposed_action"] == "noop"


def test_the_report_says_what_the_router_thought_and_whether_the_fix_matched(tmp_path):
    from collections import Counter

    import pandas as pd

    from healgym.analysis.report import write_report
    from healgym.serving.decision_log import DecisionLog
    from healgym.serving.sim import simulate_serving

    env = make_env(episode_steps=120)
    policy = load(ROOT / "zoo/specialists/seed0", env.unwrapped.model)
    log = DecisionLog(f"sqlite:///{tmp_path / 'd.db'}")
    for i, sc in enumerate(["leak_cascade.yaml", "bad_deploy_then_surge.yaml"]):
        simulate_serving(env, policy, log, seed=i, start=1.79e9 + i * 3600, options={
            "scenario": str(ROOT / "configs/scenarios" / sc)})
    r = write_report(str(tmp_path / "d.db"), tmp_path / "report.html")
    html = r.html.read_text()
    assert "Diagnoses: what the router thought" in html
    table = pd.read_csv(r.data_dir / "diagnoses.csv")
    recs = log.records()
    said = Counter(f"{x['explanation']['diagnosis']['fault']}@"
                   f"{x['explanation']['diagnosis']['stage']}"
                   if x["explanation"]["diagnosis"]["stage"] else
                   x["explanation"]["diagnosis"]["fault"]
                   for x in recs if x.get("explanation", {}).get("diagnosis"))
    assert dict(zip(table["diagnosis"], table["decisions"], strict=True)) == dict(said)
    executed = [x for x in recs if x["executed_action"] not in (None, "noop")]
    assert int(table["executed"].sum()) == len(executed) > 0
    assert 0 <= int(table["fix_matches"].sum()) <= len(executed)
    handovers = sum(bool(x["explanation"].get("handover")) for x in recs)
    assert int(table["handovers"].sum()) == handovers
