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
    "scalar_chaos": "7ccc5c17bc02b2eaa2cd94ed8b9162b25534540591730e9247db5ee3564354e1",
    "vector_budget": "d1278c9fdb7c7517291e40c268f505e5b75eb099876da4673840ad1bf798b014",
    "vector_chaos": "a2d5c23aa66a2cd6318faa81195b0777cd69c2109caa296755315539cfad85b2",
    "vector_no_limit": "addc35200d77b02a26a8cff7a2ef5a5b8b8c9fc4f41191b51843eaaac49ad4c1",
}
SCENARIO_DIGESTS = {
    "bad_deploy_then_surge": "ae201f40686bfdef4d5b8649ec10d00f2970c68a3ed7b67b12b0e39d19d1b6f5",
    "data_incidents": "0269e86c2a20b01a1f163a142ccd685ef63e94e6db49934318870fdfd8a3156e",
    "leak_cascade": "b1b5cfb16fe032624990647b2903c7eb1300dba6fde034ddee22b78757b13b3f",
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


REAL_DIGEST = "b1176fbacab05e7f1e5a28e95d14145b36a0a452734621be6e4749f0e9136951"
REAL_SCALAR_DIGEST = "945ca02d38ffef3925ddeed69b60d80a0042c90c5988495d123962e93a1f883c"


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
