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
    "scalar_chaos": "04b4aff140fa5c8f11180a1e45dda2befcddb45e86e3605adab911db386b618a",
    "vector_budget": "7343b359c800968be2bc963f7c7ce6b3e1d9b89bc896673fbb6f3e7f8e9f37ed",
    "vector_chaos": "7b4bfe144c6f9b20c389043077c9bee1be0a826f7d49624750b8c08ff8e5ccef",
    "vector_no_limit": "36ccf43ab98134d1e0a1c6ed3cb15b731ba6570c0d538a948dd06b14dc7758d3",
}
SCENARIO_DIGESTS = {
    "bad_deploy_then_surge": "b010af2725566a4a3a2590eaad31fe67658d15d9ab4ef34bb1394150b379d434",
    "data_incidents": "aaa63679ebf832b2c1597936003de39b8e4fc0b142529d6306510ebb5d4347d4",
    "leak_cascade": "bc5a8de9cbfa4b96938f831d75c36d1618a0aa0c4358449a77d7521960527f6a",
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


REAL_DIGEST = "30dfb18d1fa4e0e82ac8eb06e4a321931a591b6565df31285c32b7bcd08954d7"
REAL_SCALAR_DIGEST = "bcca61f02e09e4df0b3e2319218aaed944ccc944be0a297c92084a9636e737fd"


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
