"""Replay a decision log's incidents in the simulator: "what would this policy have done here?"

A decision log records what the pipeline looked like (every decision's observation), not which
fault caused it. :func:`diagnose` infers the fault from the observation with the simulator's own
fault model: for every fault in the library and every stage it computes, with the same compiled
functions the simulator steps with (:func:`~healgym.sim.faults.effects_at`,
:func:`~healgym.sim.faults.effect_factor`), the signature the fault leaves in the observation
at full intensity, and ranks them by cosine similarity with what was observed at the incident's
worst moment. Several faults leave the same signature (a crash and a
crash loop; a bad deploy and concept drift); the action that resolved the recorded incident breaks
such ties (the healing matrix says which faults it heals). Every diagnosis keeps its score and
runners-up: a replay is a hypothesis, to be read with them.

:func:`replay_incidents` turns each recorded incident into a scenario (the diagnosed fault at
``lead_s`` into an episode, no random chaos); :func:`what_if` runs a policy on each and puts the
simulated outcome beside the recorded one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from healgym.analysis.log import LogFrames, iso
from healgym.sim.faults import (
    COST,
    LIBRARY,
    ML_SIGNALS,
    PRED,
    SHIFT,
    effect_factor,
    effects_at,
    model_fault_table,
)
from healgym.sim.layout import CONTEXT_INDEX as CTX
from healgym.sim.model import RELEASE_FAULTS, PipelineModel, ml_signals
from healgym.sim.observation import clip_z

FAULT_INDEX = {f.name: i for i, f in enumerate(LIBRARY)}
NOISE_Z = 3.0  # |z| below this is healthy noise
#: healthy accuracy, null rate, schema errors, staleness
BASE = ml_signals(np.zeros(len(ML_SIGNALS)))


def _squash(z: np.ndarray) -> np.ndarray:
    return np.sign(z) * np.log1p(np.abs(z))


def _ml_features(acc: float, psi: float, null: float, schema: float, stale_s: float,
                 cost: float, pred: float) -> np.ndarray:
    return np.array([(acc - float(BASE[0])) * 20.0, math.log1p(max(psi, 0.0)),
                     (null - float(BASE[1])) * 10.0, (schema - float(BASE[2])) * 10.0,
                     math.log1p(max(stale_s, 0.0) / 3600.0) - math.log1p(float(BASE[3]) / 3600.0),
                     (cost - 1.0) * 2.0, 2.0 * math.log1p(max(pred, 0.0))])


def observed_features(model: PipelineModel, obs: np.ndarray) -> np.ndarray:
    """The deviation from healthy an observation shows, in the space signatures live in."""
    obs = np.asarray(obs, dtype=float)
    z = obs[model.layout.z.slice].copy()
    z[np.abs(z) < NOISE_Z] = 0.0
    c = obs[model.layout.context.slice]
    acc = float(c[CTX["accuracy"]])
    if abs(acc - float(BASE[0])) < 0.03:  # the accuracy estimate's own noise
        acc = float(BASE[0])
    psi = float(c[CTX["drift_psi"]])
    pred = float(c[CTX["pred_shift"]])  # its healthy floor is sampling noise (<= 0.04)
    ml = _ml_features(acc, psi if psi > 0.2 else 0.0, float(c[CTX["null_rate"]]),
                      float(c[CTX["schema_error_rate"]]), float(c[CTX["staleness_h"]]) * 3600.0,
                      float(c[CTX["cost_factor"]]), pred if pred > 0.1 else 0.0)
    return np.concatenate([_squash(z), ml])


def signature(model: PipelineModel, fault: str, stage: int) -> np.ndarray:
    """What ``fault`` on ``stage`` at severity 1 and full intensity does to the observation,
    computed with the simulator's own fault functions (healthy baseline: the medians)."""
    k = FAULT_INDEX[fault]
    table = model_fault_table(model.fault_specs, model.metrics)
    t = float(table.ramp_s[k] + table.hop_lag_s[k] * model.n_stages + 1.0)
    if np.isfinite(table.duration_s[k]):
        t = min(t, float(table.duration_s[k]) - 1.0)
    mult, add, ml, _ = effects_at(np.array([k]), np.array([stage]), np.array([1.0]),
                                  np.array([0.0]), model.hops, t, table)
    factor = effect_factor(mult, np.full(model.n_stages, 2.0))
    z = clip_z(model, (model.median * (factor - 1.0) + add) * model.inv_scale)
    acc, null, schema, stale = ml_signals(ml)
    feats = _ml_features(float(acc), float(ml[SHIFT]), float(null), float(schema), float(stale),
                         1.0 + float(ml[COST]), float(ml[PRED]))
    zz = z.ravel().copy()
    zz[np.abs(zz) < NOISE_Z] = 0.0
    return np.concatenate([_squash(zz), feats])


_SIGNATURES: dict[int, tuple[PipelineModel, dict[tuple[str, int], np.ndarray]]] = {}


def _signatures(model: PipelineModel) -> dict[tuple[str, int], np.ndarray]:
    """Every (fault, stage) signature of ``model``, computed once per model."""
    hit = _SIGNATURES.get(id(model))
    if hit is None or hit[0] is not model:
        if len(_SIGNATURES) > 8:
            _SIGNATURES.clear()
        hit = (model, {(f.name, i): signature(model, f.name, i) for f in LIBRARY
                       for i in range(model.n_stages)})
        _SIGNATURES[id(model)] = hit
    return hit[1]


@dataclass
class Diagnosis:
    fault: str
    stage: str
    score: float  # cosine similarity of the signature with the observation, in [-1, 1]
    alternatives: list[tuple[str, str, float]] = field(default_factory=list)


def diagnose(model: PipelineModel, obs: np.ndarray, resolved_by: str | None = None,
             gradual: bool | None = None, self_healed: bool = False, top: int = 3,
             recent_deploy: bool | None = None) -> Diagnosis:
    """The library fault (and stage) whose signature best matches ``obs``. Among near-ties
    (cosine within 0.05 of the best) the preference goes to a fault the resolving action heals
    (``self_healed``: one that fades by itself), then one that is a release exactly when a
    deploy came shortly before (``recent_deploy``: late labels make a bad release's accuracy
    slide look gradual, like drift; the deploy log tells them apart), then one whose onset
    matches (``gradual``: the deviation was building up before the incident), then one of the
    fault's usual stages, then the closer match."""
    x = observed_features(model, obs)
    nx = float(np.linalg.norm(x))
    action = next((a for a in model.actions if a.name == resolved_by), None)
    sigs = _signatures(model)
    scores = []
    for f in LIBRARY:
        for i, stage in enumerate(model.stages):
            sig = sigs[(f.name, i)]
            ns = float(np.linalg.norm(sig))
            cos = float(x @ sig / (nx * ns)) if nx > 0 and ns > 0 else 0.0
            heals = float(np.isfinite(f.duration_s)) if self_healed else 0.0
            if action is not None and (action.stage < 0 or action.stage == i):
                heals = float(model.healing[action.kind, model.fault_cols.get(
                    f.name, model.fault_cols["unknown"])])
            onset = 0.0 if gradual is None else float((f.ramp_s > 0) == gradual)
            release = 0.0 if recent_deploy is None else float(
                (f.name in RELEASE_FAULTS) == recent_deploy)
            usual = float(stage in f.stages)
            scores.append((cos, heals, onset, usual, f.name, stage, release))
    best_cos = max(s[0] for s in scores)
    near = [s for s in scores if s[0] >= best_cos - 0.05]
    pick = max(near, key=lambda s: (s[1], s[6], s[2], s[3], s[0]))
    ranked = sorted(scores, key=lambda s: -s[0])
    alts, seen = [], {pick[4]}
    for s in ranked:  # the runners-up: other faults, each at its best stage
        if s[4] not in seen:
            seen.add(s[4])
            alts.append((s[4], s[5], round(s[0], 3)))
    return Diagnosis(pick[4], pick[5], round(pick[0], 3), alts[:top])


@dataclass
class ReplayedIncident:
    incident_id: str
    start: float
    recorded_resolved: bool
    recorded_ttr_s: float | None
    recorded_actions: str
    diagnosis: Diagnosis
    scenario: dict[str, Any]
    episode_steps: int  # long enough to see the recorded incident twice over


def replay_incidents(frames: LogFrames, model: PipelineModel, lead_s: float = 60.0
                     ) -> list[ReplayedIncident]:
    """One scenario per recorded incident (see the module docstring)."""
    d = frames.decisions.set_index("id")
    out = []
    for _, inc in frames.incidents.iterrows():
        trail = [x for x in inc["trail"] if x in d.index
                 and isinstance(d.loc[x, "observation"], list)
                 and len(d.loc[x, "observation"]) == model.n_obs]
        if not trail:
            continue
        feats = [observed_features(model, np.asarray(d.loc[x, "observation"])) for x in trail]
        worst = trail[int(np.argmax([np.linalg.norm(f) for f in feats]))]
        acted = [a for a in str(inc["actions"]).split(" > ") if a and a != "None"]
        resolved_by = acted[-1] if inc["resolved"] and acted else None
        # gradual onset: the deviation was already building in the 10 minutes before
        before = d[(d["created_at"] < inc["start"]) & (d["created_at"] >= inc["start"] - 600)]
        pre = [float(np.linalg.norm(observed_features(model, np.asarray(o))))
               for o in before["observation"] if isinstance(o, list) and len(o) == model.n_obs]
        peak = float(max(np.linalg.norm(f) for f in feats))
        gradual = bool(np.median(pre[-5:]) > 0.3 * peak) if pre else None
        # a deploy in the 30 minutes before the incident began (the deploy annotation)
        first = np.asarray(d.loc[trail[0], "observation"])
        since = float(first[model.layout.ctx("since_deploy_h")]) * 3600.0 \
            - max(float(d.loc[trail[0], "created_at"]) - float(inc["start"]), 0.0)
        dg = diagnose(model, np.asarray(d.loc[worst, "observation"]), resolved_by, gradual,
                      self_healed=bool(inc["resolved"]) and not acted,
                      recent_deploy=True if since < 1800.0 else None)  # none seen: unknown
        ttr = float(inc["ttr_s"]) if inc["resolved"] and inc["ttr_s"] is not None else None
        span = max(ttr or 0.0, 600.0) * 2 + lead_s
        outcome = f"resolved in {ttr:.0f} s" if ttr else "unresolved"
        scenario = {
            "name": f"replay-{str(inc['incident_id'])[:8]}",
            "description": (f"Incident of {iso(float(inc['start']))} UTC replayed from "
                            f"{frames.source}: diagnosed {dg.fault} on {dg.stage} (signature "
                            f"match {dg.score:.2f}; next: "
                            + ", ".join(f"{f} on {s} {c:.2f}" for f, s, c in dg.alternatives)
                            + f"). Recorded: {outcome}"
                            f" with {', '.join(acted) or 'no action'}."),
            "random_chaos": False,
            "faults": [{"at": float(lead_s), "fault": dg.fault, "stage": dg.stage,
                        "severity": 1.0}],
        }
        out.append(ReplayedIncident(str(inc["incident_id"]), float(inc["start"]),
                                    bool(inc["resolved"]), ttr, " > ".join(acted), dg,
                                    scenario, int(math.ceil(span / model.dt))))
    return out


def write_scenarios(replayed: list[ReplayedIncident], out: str | Path) -> list[Path]:
    """Each replayed incident as a scenario YAML any healgym command takes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in replayed:
        p = out / f"{r.scenario['name']}.yaml"
        p.write_text(f"# replay with episode_steps={r.episode_steps} (covers the recorded "
                     "incident twice over)\n" + yaml.safe_dump(r.scenario, sort_keys=False))
        paths.append(p)
    return paths


def what_if(replayed: list[ReplayedIncident], policy: Any, make_env: Any,
            seeds: range | list[int]) -> pd.DataFrame:
    """Run ``policy`` on every replayed incident (``make_env(episode_steps)`` builds the env);
    the simulated outcome beside the recorded one."""
    from healgym.policy import run_episode

    rows = []
    for r in replayed:
        env = make_env(r.episode_steps)
        sims = []
        for seed in seeds:
            m = run_episode(env, policy, int(seed), {"scenario": r.scenario})
            inc = next((i for i in m["incidents"] if i["fault"] == r.diagnosis.fault), None)
            acts = [k for k, v in m.get("actions_taken", {}).items() if v and k != "noop"]
            sims.append((inc is not None and inc["mttr_s"] is not None,
                         inc["mttr_s"] if inc else None, inc["resolved_by"] if inc else None,
                         ",".join(sorted(acts))))
        env.close()
        ttrs = [float(s[1]) for s in sims if s[0] and s[1] is not None]
        by = pd.Series([s[2] for s in sims if s[2]]).value_counts()
        rows.append({
            "incident_id": r.incident_id, "start": iso(r.start), "fault": r.diagnosis.fault,
            "stage": r.diagnosis.stage, "match": r.diagnosis.score,
            "recorded_resolved": r.recorded_resolved, "recorded_ttr_s": r.recorded_ttr_s,
            "recorded_actions": r.recorded_actions,
            "sim_resolved_share": float(np.mean([s[0] for s in sims])),
            "sim_ttr_median_s": float(np.median(ttrs)) if ttrs else None,
            "sim_resolved_by": by.index[0] if len(by) else None,
            "episodes": len(sims)})
    return pd.DataFrame(rows)


