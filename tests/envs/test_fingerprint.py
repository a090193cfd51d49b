"""The dynamics do not change under a refactor: a hash of every observation, reward, mask, info
flag and episode metric over a fixed set of seeded runs (issue 14).

The digests were taken from the code before the named-state redesign (v0), and held through
it; they were renewed once, for PipelineHeal-v1 (issue 15's trap fixes). A change of the model's
semantics is allowed only with a new env version (``-vN``, noted in the env's docstring) and new
digests here, said in the commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.envs.vector import PipelineHealVectorEnv

SCENARIOS = Path(__file__).resolve().parents[2] / "configs" / "scenarios"


def _metrics(m: Any) -> str:
    return json.dumps(dict(m), sort_keys=True, default=repr)


def _policy_actions(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Mostly noop, with bursts of every valid action (so actions start, complete and heal)."""
    out = np.zeros(len(mask), dtype=np.int64)
    for i, row in enumerate(mask):
        if rng.random() < 0.35:
            out[i] = rng.choice(np.flatnonzero(row))
    return out


def vector_digest(n: int, steps: int, seed: int, **kw: Any) -> str:
    env = PipelineHealVectorEnv(num_envs=n, **kw)
    h = hashlib.sha256()
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    h.update(obs.tobytes())
    h.update(info["action_mask"].tobytes())
    for _ in range(steps):
        a = _policy_actions(rng, info["action_mask"])
        obs, r, te, tr, info = env.step(a)
        for x in (obs, r, te, tr, info["action_mask"], info["time_s"], info["slo_violated"],
                  info["invalid_action"], info["n_faults"]):
            h.update(np.ascontiguousarray(x).tobytes())
        if "episode_metrics" in info:
            for i in np.flatnonzero(info["_episode_metrics"]):
                h.update(f"{i}:{_metrics(info['episode_metrics'][i])}".encode())
    return h.hexdigest()


def scalar_digest(episodes: int, seed: int, **kw: Any) -> str:
    env = PipelineHealEnv(**kw)
    h = hashlib.sha256()
    rng = np.random.default_rng(seed)
    for e in range(episodes):
        obs, info = env.reset(seed=seed + e)
        h.update(obs.tobytes())
        done = False
        while not done:
            a = int(_policy_actions(rng, info["action_mask"][None])[0])
            obs, r, te, tr, info = env.step(a)
            h.update(obs.tobytes())
            h.update(np.float64(r).tobytes())
            h.update(np.asarray(info["action_mask"]).tobytes())
            h.update(f"{te}{tr}{info['faults']}{info['slo_violated']}{info['time_s']!r}".encode())
            done = te or tr
        h.update(_metrics(info["episode_metrics"]).encode())
    return h.hexdigest()


DIGESTS = {
    "scalar_chaos": "9ca37d2519e749240c97d08b8a802f82244cef9a4d74cbb6ebf027ded57f1ba3",
    "vector_budget": "e6e0c08eda604957d691539473ddceb8433d4d547b3b0ae61c7b1b0cf3fd7a88",
    "vector_chaos": "18112c7fbd55748cccc0cc05703f103f5a9684e96b0f4837db30e1b543e265d6",
    "vector_no_limit": "3aae5c63702ca2ddc43b7f29af5c595d3cb239b4edb8ae503dd808af01c14ea1",
}
SCENARIO_DIGESTS = {
    "bad_deploy_then_surge": "be7ba57f621ace3e909484eba06bc5f50eb99147012eb1dfd7c4e689c471ba04",
    "data_incidents": "387565e8f999097c86beafc15a65f43baf0f64eedeebcbde555f9413b3021a5f",
    "leak_cascade": "cae8cb14cdfd371b286dd1f5180c530f2be57db8d4d6a0e242fec69caa32fe85",
}

CASES: dict[str, tuple[str, dict[str, Any], str]] = {
    # name: (kind, arguments, digest)
    "vector_chaos": ("vector", dict(n=16, steps=400, seed=3, episode_steps=120,
                                    chaos={"rate_scale": 3.0}), DIGESTS["vector_chaos"]),
    "vector_no_limit": ("vector", dict(n=4, steps=260, seed=9, time_limit=False,
                                       episode_steps=100), DIGESTS["vector_no_limit"]),
    "vector_budget": ("vector", dict(n=8, steps=200, seed=5, episode_steps=90,
                                     reward={"cost_budget": 12.0}), DIGESTS["vector_budget"]),
    "scalar_chaos": ("scalar", dict(episodes=3, seed=7, episode_steps=240),
                     DIGESTS["scalar_chaos"]),
    **{f"scenario_{p.stem}": ("vector", dict(n=4, steps=370, seed=1, episode_steps=360,
                                             scenario=str(p)), SCENARIO_DIGESTS[p.stem])
       for p in sorted(SCENARIOS.glob("*.yaml"))},
}


def digest(kind: str, kw: dict[str, Any]) -> str:
    kw = dict(kw)
    if kind == "vector":
        return vector_digest(kw.pop("n"), kw.pop("steps"), kw.pop("seed"), **kw)
    return scalar_digest(kw.pop("episodes"), kw.pop("seed"), **kw)


@pytest.mark.parametrize("name", sorted(CASES))
def test_dynamics_fingerprint_unchanged(name: str) -> None:
    kind, kw, expected = CASES[name]
    assert digest(kind, kw) == expected


@pytest.mark.realdata
def test_dynamics_fingerprint_on_real_telemetry_with_replayed_incidents(shared_data) -> None:
    from healgym.telemetry.importers import import_source

    ds = import_source("nezha", shared_data / "nezha/rca_data/2022-08-22")
    kw: dict[str, Any] = dict(dataset=ds, stages=["frontend", "checkoutservice", "cartservice"],
                              replay_incidents=True, episode_steps=90)
    assert vector_digest(6, 300, 11, **kw) == REAL_DIGEST
    assert scalar_digest(2, 4, dataset=ds, stages=kw["stages"], replay_incidents=True,
                         chaos=True, episode_steps=120) == REAL_SCALAR_DIGEST


REAL_DIGEST = "63956592465a4301e3d148f92b0ce314ebe893dc07182530c771bd6ca18ae5f0"
REAL_SCALAR_DIGEST = "39ece90144525732329b190879e67ab7d10298b454c680457a263cba79869457"


if __name__ == "__main__":  # print the digests (for a deliberate change of the dynamics)
    import sys

    for name in sorted(CASES):
        print(name, digest(CASES[name][0], CASES[name][1]))
    if len(sys.argv) > 1:
        from healgym.telemetry.importers import import_source

        ds = import_source("nezha", Path(sys.argv[1]) / "nezha/rca_data/2022-08-22")
        st = ["frontend", "checkoutservice", "cartservice"]
        print("real", vector_digest(6, 300, 11, dataset=ds, stages=st, replay_incidents=True,
                                    episode_steps=90))
        print("real_scalar", scalar_digest(2, 4, dataset=ds, stages=st, replay_incidents=True,
                                           chaos=True, episode_steps=120))
