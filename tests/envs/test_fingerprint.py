"""The dynamics do not change under a refactor: a hash of every observation, reward, mask, info
flag and episode metric over a fixed set of seeded runs (issue 14).

The expected digests were taken from the code before the named-state redesign. A change of the
model's semantics is allowed only with a new env version (``-vN``, noted in the env's docstring)
and new digests here, said in the commit.
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
    "scalar_chaos": "67600ad4bddb079de570393fef7c513fe536bf6b01294f623b3fa928bbb320e8",
    "vector_budget": "446cab48d478ed7ca64dc36077456b0d125a27f11e5a0581e1deb6f50b56db8f",
    "vector_chaos": "f45a153b6d4856c2eb1fe039ca1e6494ad5dd79cd9df895c86715325804cd587",
    "vector_no_limit": "960063f76f504ef6a0b8c2201d2747d5327770eb8be43db39e2d03cd27f4a8d1",
}
SCENARIO_DIGESTS = {
    "bad_deploy_then_surge": "d0cd59c94b1257ce36e85e9bd7f0ca4c130c44204d266530c08150e29b9fb728",
    "data_incidents": "e087cc1fd7216c9e9f6e24f1df4e3095c6873425dd195bbf6f17ddf104b05a4d",
    "leak_cascade": "f73793c1a75335879faaca4f2f679d99d3071405002f47eb3c10595312422bf4",
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


REAL_DIGEST = "0393ff8aa7b03e2acfebe17ac957dd72674bea86a5e1f93e7393306bd522e195"
REAL_SCALAR_DIGEST = "f34ed09f4e2c7ec7562e4047d2553e2714c71561ecdefc92491a09b8f730eabc"


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
