"""Diagnosis as a task: the dataset's labels are the env's ground truth, each diagnoser beats
the majority class on a case with a known answer, and the metrics are right on hand-made
cases."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import healgym
from agents.diagnosis import (
    BoostedDiagnoser,
    DiagnosisData,
    MajorityDiagnoser,
    SignatureDiagnoser,
    TreeDiagnoser,
    build_dataset,
    score,
    time_to_diagnose,
)


def scenario(fault: str, stage: str, at: float = 100.0) -> dict:
    return {"scenario": {"name": f"{fault}-{stage}", "faults": [
        {"at": at, "fault": fault, "stage": stage}]}}


def make_env():
    return gym.make(healgym.ENV_ID, chaos=False, episode_steps=60)


def concat(*parts: DiagnosisData) -> DiagnosisData:
    return DiagnosisData(*(np.concatenate([getattr(p, k) for p in parts]) for k in (
        "X", "windows", "fault", "stage", "family", "incident", "t")))


def test_the_labels_are_the_envs_ground_truth():
    data = build_dataset(make_env, range(3), window=4, options=scenario("memory_leak", "train"))
    assert len(data) > 0 and set(data.fault) == {"memory_leak"} and set(data.stage) == {"train"}
    assert set(data.family) == {"infra"} and len(set(data.incident)) == 3
    for inc in set(data.incident):
        t = np.sort(data.t[data.incident == inc])
        assert t[0] == 0.0 and np.all(np.diff(t) == 10.0)  # from the onset, every step
    assert data.windows.shape[1:] == (4, make_env().observation_space.shape[0])
    assert np.array_equal(data.X, data.windows.reshape(len(data), -1))
    # the window ends at the step it is labelled at: its last row is that step's observation
    env = make_env()
    obs, info = env.reset(seed=0, options=scenario("memory_leak", "train"))
    seen = [obs]
    while not info["faults"]:
        obs, *_, info = env.step(0)
        seen.append(obs)
    first = np.flatnonzero(data.incident == data.incident[0])[0]
    np.testing.assert_array_equal(data.windows[first][-1], seen[-1])


@pytest.mark.parametrize("diagnoser", ["tree", "boosted", "signature"])
def test_each_diagnoser_beats_the_majority_class_on_a_known_answer(diagnoser):
    """Three faults with distinct signatures on three stages, held-out seeds: the answer is
    in the observation, so a diagnoser must beat always answering the commonest class."""
    cases = [("process_crash", "serve"), ("memory_leak", "features"),
             ("cpu_contention", "ingest")]

    def data(seeds: range) -> DiagnosisData:
        return concat(*[build_dataset(make_env, seeds, window=3, options=scenario(f, s))
                        for f, s in cases])

    train, test = data(range(0, 8)), data(range(100, 104))
    majority = score(MajorityDiagnoser().fit(train), test)
    d = {"tree": lambda: TreeDiagnoser().fit(train),
         "boosted": lambda: BoostedDiagnoser(max_iter=40).fit(train),
         "signature": lambda: SignatureDiagnoser(make_env().unwrapped.model)}[diagnoser]()
    got = score(d, test)
    assert got["top1"]["value"] > majority["top1"]["value"] + 0.3
    assert got["stage"]["value"] > majority["stage"]["value"] + 0.3
    assert 0.0 <= got["top1"]["ci_low"] <= got["top1"]["value"] <= got["top1"]["ci_high"] <= 1


def test_time_to_diagnose_is_when_the_right_answer_settles():
    inc = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    t = np.array([0, 10, 20, 30, 40, 0, 10, 20, 0, 10], dtype=float)
    right = np.array([True, False, True, True, True,   # a: settles at 20 s
                      False, False, False,             # b: never
                      True, True])                     # c: at once
    assert time_to_diagnose(inc, t, right) == {"a": 20.0, "b": None, "c": 0.0}
    # unordered rows give the same answer
    order = np.array([4, 0, 3, 1, 2, 7, 5, 6, 9, 8])
    assert time_to_diagnose(inc[order], t[order], right[order]) == {"a": 20.0, "b": None,
                                                                      "c": 0.0}


def test_localisation_top3_and_family_on_hand_made_answers():
    class Fixed:
        name = "fixed"

        def __init__(self, answers):
            self.answers = answers

        def diagnose(self, history):
            return self.answers[int(history[0, 0])]

    n = 4
    data = DiagnosisData(
        X=np.zeros((n, 2)), windows=np.arange(n, dtype=float).reshape(n, 1, 1) * np.ones(
            (n, 1, 2)), fault=np.array(["process_crash", "crash_loop", "memory_leak",
                                        "covariate_drift"]),
        stage=np.array(["serve", "serve", "train", "ingest"]),
        family=np.array(["infra", "infra", "infra", "data"]),
        incident=np.array(["i0", "i1", "i2", "i3"]), t=np.zeros(n))
    answers = [
        [("process_crash", "serve", 0.9)],  # right fault, right stage
        [("process_crash", "serve", 0.8), ("crash_loop", "serve", 0.1)],  # look-alike, top-3
        [("memory_leak", "serve", 0.7)],  # right fault, wrong stage
        [("process_crash", "ingest", 0.5)],  # wrong fault and family, right stage
    ]
    r = score(Fixed(answers), data)
    assert r["top1"]["value"] == 0.5 and r["top3"]["value"] == 0.75
    assert r["stage"]["value"] == 0.75 and r["family"]["value"] == 0.75
    assert r["confusion"]["crash_loop"] == {"process_crash": 1}


def test_the_diagnosis_study_writes_a_table_per_distribution(tmp_path):
    import json

    from experiments.diagnose import main

    assert main(["--train-episodes", "6", "--episodes", "3", "--scenario",
                 "configs/scenarios/leak_cascade.yaml", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "diagnosis.json").read_text())
    assert list(out) == ["random chaos", "leak_cascade"]
    for res in out.values():
        assert list(res) == ["majority", "tree", "boosted", "forest", "signature"]
        for r in res.values():
            assert 0.0 <= r["top1"]["value"] <= r["top3"]["value"] <= 1.0
    assert "| forest |" in (tmp_path / "diagnosis.md").read_text()


@pytest.mark.realdata
def test_the_diagnosers_are_scored_on_real_labelled_incidents(shared_data, tmp_path):
    """--real: trained on simulated faults over the real telemetry, scored on Nezha's labelled
    incidents replayed one per episode (their labels are the ground truth rows carry)."""
    import json

    from experiments.diagnose import main

    root = Path(__file__).resolve().parents[1]
    assert main(["--train-episodes", "6", "--episodes", "4", "--real", "nezha",
                 str(shared_data / "nezha/rca_data/2022-08-22"), "--stages",
                 str(root / "configs/telemetry/nezha_ob.yaml"), "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "diagnosis.json").read_text())
    real = out["real labelled incidents (nezha)"]
    assert real["majority"]["incidents"] >= 3 and real["forest"]["rows"] > 0
