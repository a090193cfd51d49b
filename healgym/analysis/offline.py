"""From the decision log to transitions and offline RL datasets.

A decision log is off-policy experience: every logged decision has the observation the policy
saw, and the next decision has the observation that followed. :func:`transitions_from_log`
turns consecutive decisions into ``(obs, action, reward, next_obs)`` transitions where the
action is what really happened (the override's action when an operator overrode, noop after a
rejection, a failed actuator or a guardrail block) and the reward is recomputed from the
observations with the env's own reward terms (:func:`log_reward`). Human verdicts are
*demonstrations*: an override or a rejection says "in this state, do this instead"; an approval
confirms the proposal. (Learning from them: :func:`agents.offline.finetune_qtable`.)

:func:`export_offline_dataset` writes the transitions as a versioned Parquet folder that RLlib's
offline API reads (``BCConfig().offline_data(input_=[folder/data])``): the columns of RLlib's
single-agent schema, plus ``provenance.parquet`` (decision ids, who chose the action, masks) and
``metadata.json`` (format version, spaces, the observation layout, the source log); ``data_masked``
holds the same rows with each observation's action mask appended, for healgym's masking modules.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healgym.errors import HealgymError
from healgym.policy import read_versioned_json
from healgym.sim import actions as act
from healgym.sim.jit import compiled
from healgym.sim.model import MAX_REPLICAS, PipelineModel
from healgym.sim.observation import obs_violates_slo
from healgym.sim.reward import action_reward, recovery_bonus, state_reward
from healgym.sim.signals import observation_names

DATASET_FORMAT = "healgym-offline"
DATASET_VERSION = 1


def mask_from_obs(model: PipelineModel, obs: np.ndarray) -> np.ndarray:
    """The env's action-mask rules on observations (N, n_obs) -> (N, n_actions) int8: scale
    limits from the replica fractions, rollback only when possible, light model switches, and
    only noop / escalate while an action is in flight: the env's compiled mask
    (:func:`healgym.sim.actions.action_mask`), with load shedding and a paged human as the
    observation shows them. The cost budget is not observed: not applied."""
    obs = np.atleast_2d(np.asarray(obs, dtype=float))
    lay = model.layout
    return act.action_mask(
        model.actions, in_flight=obs[:, lay.ctx("action_in_flight")] > 0.5,
        replicas=np.rint(obs[:, lay.replicas.slice] * MAX_REPLICAS),
        can_rollback=obs[:, lay.ctx("can_rollback")] > 0.5,
        light=obs[:, lay.ctx("light_model")] > 0.5,
        paged=obs[:, lay.ctx("escalation_in_flight")] > 0.5,
        shedding=obs[:, lay.ctx("shedding")] > 0.5, kinds=model.kinds)


@dataclass
class Transitions:
    """Logged experience, one row per transition (arrays of equal length)."""

    obs: np.ndarray  # (N, n_obs) float32
    actions: np.ndarray  # (N,) int64: what really happened
    rewards: np.ndarray  # (N,)
    next_obs: np.ndarray
    terminated: np.ndarray  # (N,) bool: always False (a pipeline never ends)
    truncated: np.ndarray  # (N,) bool: the last transition of a segment of the log
    episode: np.ndarray  # (N,) int64: segment of consecutive decisions
    t: np.ndarray  # (N,) int64: step within its segment
    time: np.ndarray  # (N,) unix seconds of the decision
    decision_id: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)  # policy | override | reject | approve | ...
    operator: list[str | None] = field(default_factory=list)
    demo: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # trusted human
    incident_resolved: list[bool | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)


def log_reward(model: PipelineModel, obs: np.ndarray, actions: np.ndarray,
               next_obs: np.ndarray, dt_s: np.ndarray, recovery_s: np.ndarray
               ) -> np.ndarray:
    """The env's own reward terms (the compiled :func:`healgym.sim.reward.action_reward`,
    :func:`~healgym.sim.reward.state_reward` and :func:`~healgym.sim.reward.recovery_bonus`)
    from logged observations: action cost, SLO seconds (violation read off the next observation
    with the env's SLO test; the shed share while the observation shows load shed), running cost
    above baseline (read off the next observation's cost factor), and the recovery bonus where
    a violation clears (``recovery_s``: seconds from the violation's start to the end of the
    transition there, NaN elsewhere)."""
    r = model.reward
    cost = np.array([model.kinds[model.actions[a].kind].cost if a else 0.0 for a in actions],
                    dtype=np.float64)
    nxt = obs_violates_slo(model, next_obs)
    now = obs_violates_slo(model, obs)
    cf = np.asarray(next_obs, dtype=float)[:, model.layout.ctx("cost_factor")]
    rec = np.asarray(recovery_s, dtype=float) * np.ones(len(cost))
    rec = np.where(now & ~nxt, rec, np.nan)  # NaN: no violation cleared, no bonus
    shed = np.where(np.asarray(next_obs, dtype=float)[:, model.layout.ctx("shedding")] > 0.5,
                    act.SHED_SHARE, 0.0)
    out = np.zeros(len(cost))
    _log_rewards(out, cost, rec, nxt, shed, np.asarray(dt_s, dtype=np.float64).reshape(-1)
                 * np.ones(len(cost)), cf * model.base_cost, float(model.base_cost),
                 float(r.invalid_action_penalty), float(r.action_cost_weight),
                 float(r.slo_violation_per_s), float(r.infra_cost_weight),
                 float(r.recovery_bonus), float(r.recovery_horizon_s))
    return out


@compiled()
def _log_rewards(out, cost, recovery_s, violated, shed, dt, running_cost, base_cost,
                 invalid_penalty, cost_weight, slo_per_s, infra_weight, bonus, horizon_s):
    """The env's own reward terms (:mod:`healgym.sim.reward`), transition by transition."""
    for i in range(out.size):
        r = action_reward(False, cost[i], invalid_penalty, cost_weight)
        if not np.isnan(recovery_s[i]):
            r += recovery_bonus(recovery_s[i], bonus, horizon_s)
        out[i] = state_reward(r, violated[i], shed[i], dt[i], running_cost[i], base_cost,
                              slo_per_s, infra_weight)


def transitions_from_log(frames: Any, model: PipelineModel, trust: str = "resolved",
                         gap_factor: float = 3.0) -> Transitions:
    """Transitions from a loaded log (:func:`healgym.analysis.load_log`). Consecutive decisions
    further apart than ``gap_factor`` x the median interval (or with a skipped decision between
    them) are different segments. ``trust``: which human verdicts are demonstrations:
    ``resolved`` (those whose incident recovered, or outside any incident), ``all``, ``none``."""
    if trust not in ("resolved", "all", "none"):
        raise HealgymError(f"trust={trust!r}: use 'resolved', 'all' or 'none'")
    d = frames.decisions.sort_values(["created_at", "id"]).reset_index(drop=True)
    names = model.action_names
    resolved = dict(zip(frames.incidents["incident_id"], frames.incidents["resolved"],
                        strict=True)) if len(frames.incidents) else {}
    rows: list[dict[str, Any] | None] = []
    for _, x in d.iterrows():
        obs = x["observation"]
        if x["policy"] == "adapter":  # the adapter's own escalations: not a policy step
            continue
        if not isinstance(obs, list) or len(obs) != model.n_obs:
            rows.append(None)  # skipped / paused-without-observation: breaks the segment
            if isinstance(obs, list):
                raise HealgymError(
                    f"decision {x['id']}: observation has {len(obs)} values, this pipeline's "
                    f"has {model.n_obs} (stages {model.stages}); fine-tune with the stages and "
                    "dataset the log was served with")
            continue
        verdict = x["human_verdict"] if pd.notna(x["human_verdict"]) else None
        executed = x["executed_action"] if pd.notna(x["executed_action"]) else None
        if verdict == "override":
            a, source = x["human_action"], "override"
        elif verdict == "reject":
            a, source = "noop", "reject"
        elif executed and x["actuator_ok"] is True:
            a, source = executed, ("approve" if verdict == "approve" else "policy")
        else:
            a = "noop"
            source = "blocked" if x["blocked"] else ("failed" if executed else "policy")
        if a not in names:
            raise HealgymError(f"decision {x['id']}: action {a!r} is not one of this "
                               f"pipeline's actions; fine-tune with the stages the log was "
                               "served with")
        inc = x["incident_id"]
        res = resolved.get(inc) if isinstance(inc, str) else None
        trusted = source in ("override", "reject", "approve") and (
            trust == "all" or (trust == "resolved" and res is not False))
        rows.append({"obs": obs, "a": names.index(a), "t": float(x["created_at"]),
                     "id": x["id"], "source": source, "operator": x["operator"],
                     "demo": trusted, "resolved": res})
    gaps = np.diff([r["t"] for r in rows if r is not None])
    median_gap = float(np.median(gaps)) if len(gaps) else model.dt
    out: dict[str, list[Any]] = {k: [] for k in ("obs", "a", "next", "dt", "ep", "t", "time",
                                                 "id", "source", "operator", "demo",
                                                 "resolved", "trunc")}
    ep, step = 0, 0
    cur: dict[str, Any] | None
    for cur, nxt in zip(rows, rows[1:], strict=False):
        if cur is None or nxt is None or nxt["t"] - cur["t"] > gap_factor * median_gap:
            if out["trunc"]:
                out["trunc"][-1] = True
            ep, step = ep + 1, 0
            continue
        out["obs"].append(cur["obs"])
        out["a"].append(cur["a"])
        out["next"].append(nxt["obs"])
        out["dt"].append(nxt["t"] - cur["t"])
        out["ep"].append(ep)
        out["t"].append(step)
        out["time"].append(cur["t"])
        for k, v in (("id", "id"), ("source", "source"), ("operator", "operator"),
                     ("demo", "demo"), ("resolved", "resolved")):
            out[k].append(cur[v])
        out["trunc"].append(False)
        step += 1
    if out["trunc"]:
        out["trunc"][-1] = True
    n_obs = model.n_obs
    obs = np.asarray(out["obs"], dtype=np.float32).reshape(-1, n_obs)
    nxt_obs = np.asarray(out["next"], dtype=np.float32).reshape(-1, n_obs)
    a = np.asarray(out["a"], dtype=np.int64)
    dts = np.asarray(out["dt"], dtype=float)
    # when did the violation a transition ends start? (for the recovery bonus)
    viol = obs_violates_slo(model, obs) if len(obs) else np.zeros(0, dtype=bool)
    start = np.full(len(a), np.nan)
    run_start = np.nan
    for i in range(len(a)):
        if i == 0 or out["ep"][i] != out["ep"][i - 1] or not viol[i - 1]:
            run_start = out["time"][i] if viol[i] else np.nan
        start[i] = run_start
    recovery = np.asarray(out["time"], dtype=float) + dts - start
    rewards = log_reward(model, obs, a, nxt_obs, dts, recovery) \
        if len(a) else np.zeros(0)
    return Transitions(
        obs=obs, actions=a, rewards=rewards.astype(float), next_obs=nxt_obs,
        terminated=np.zeros(len(a), dtype=bool), truncated=np.asarray(out["trunc"], dtype=bool),
        episode=np.asarray(out["ep"], dtype=np.int64), t=np.asarray(out["t"], dtype=np.int64),
        time=np.asarray(out["time"], dtype=float), decision_id=out["id"],
        source=out["source"], operator=out["operator"],
        demo=np.asarray(out["demo"], dtype=bool), incident_resolved=out["resolved"])


def export_offline_dataset(tr: Transitions, model: PipelineModel, out: str | Path,
                           source: str = "", filters: str = "none") -> Path:
    """Write ``tr`` as a versioned offline RL dataset folder (see the module docstring)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise HealgymError(f"{out}: exists and is not empty; offline datasets are written "
                           "once (choose a new folder, e.g. with a version suffix)")
    (out / "data").mkdir(parents=True, exist_ok=True)
    eps = [f"log-{e:05d}" for e in tr.episode]
    pd.DataFrame({
        "eps_id": eps, "t": tr.t, "obs": list(tr.obs), "actions": tr.actions,
        "rewards": tr.rewards, "new_obs": list(tr.next_obs), "terminateds": tr.terminated,
        "truncateds": tr.truncated,
    }).to_parquet(out / "data" / "part-00000.parquet", index=False)
    # the same rows with each observation's action mask appended: the flat layout healgym's
    # masking RLModules read, so a policy trained on them is served like any PPO policy
    m_obs = mask_from_obs(model, tr.obs).astype(np.float32) if len(tr) else \
        np.zeros((0, len(model.actions)), np.float32)
    m_next = mask_from_obs(model, tr.next_obs).astype(np.float32) if len(tr) else m_obs
    (out / "data_masked").mkdir()
    pd.DataFrame({
        "eps_id": eps, "t": tr.t, "obs": list(np.concatenate([tr.obs, m_obs], axis=1)),
        "actions": tr.actions, "rewards": tr.rewards,
        "new_obs": list(np.concatenate([tr.next_obs, m_next], axis=1)),
        "terminateds": tr.terminated, "truncateds": tr.truncated,
    }).to_parquet(out / "data_masked" / "part-00000.parquet", index=False)
    pd.DataFrame({
        "eps_id": eps, "t": tr.t, "decision_id": tr.decision_id, "time": tr.time,
        "source": tr.source, "operator": tr.operator, "demonstration": tr.demo,
        "action_name": [model.action_names[a] for a in tr.actions],
        "action_mask": list(mask_from_obs(model, tr.obs)) if len(tr) else [],
    }).to_parquet(out / "provenance.parquet", index=False)
    meta = {
        "format": DATASET_FORMAT, "format_version": DATASET_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": {"decision_log": source, "filters": filters},
        "env": "healgym/PipelineHeal-v1", "stages": list(model.stages),
        "observation_space": {"type": "Box", "shape": [model.n_obs], "dtype": "float32",
                              "names": observation_names(model)},
        "action_space": {"type": "Discrete", "n": len(model.actions),
                         "names": model.action_names},
        "reward": "recomputed from the logged observations with the env's reward terms "
                  "(healgym/analysis/offline.py: log_reward)",
        "counts": {"transitions": len(tr), "segments": int(len(set(tr.episode.tolist()))),
                   "demonstrations": int(tr.demo.sum()), "sources": dict(Counter(tr.source))},
        "rllib": {"input_": "data", "input_read_method": "read_parquet",
                  "schema": "RLlib's default single-agent columns: eps_id, t, obs, actions, "
                            "rewards, new_obs, terminateds, truncateds",
                  "masked": "data_masked: the same rows, each observation followed by its "
                            "action mask (agents/rllib/offline.py, masked=True)"},
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_offline_metadata(path: str | Path) -> dict[str, Any]:
    """The dataset's metadata, refusing a folder that is not one or of another version."""
    return read_versioned_json(Path(path), "metadata.json", DATASET_FORMAT, DATASET_VERSION,
                               "a healgym offline dataset",
                               "export it again with `healgym export-offline`")
