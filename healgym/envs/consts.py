"""The compiled kernels' constants: one namedtuple (:class:`KernelConsts`) built from a
:class:`~healgym.sim.model.PipelineModel` by :func:`kernel_consts`, and the fault and side-effect
codes the kernels and the env share."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from healgym.errors import ConfigError
from healgym.sim import actions as act
from healgym.sim.episode import (
    SOURCES,
)
from healgym.sim.faults import (
    ALL_SPECS,
    FAULT_NAMES,
    INF,
    LAT,
    SPEC_INDEX,
    fault_table,  # noqa: F401  (re-exported)
)
from healgym.sim.model import (
    ACC_NOISE_SD,
    BASE_ACCURACY,
    CARRIER_KIND,
    DEFAULT_REPLICAS,
    DETECT_Z,
    ESCALATE_STREAM,
    HEAL_STREAM,
    MAX_REPLICAS,
    MIN_REPLICAS,
    RELEASE_FAULTS,
    REPLICA_COST_PER_H,
    SIDE_KINDS,
    PipelineModel,
)
from healgym.sim.rng import SCRAPE_GAP

FAULT_CODE = {name: i for i, name in enumerate((*FAULT_NAMES, "unknown"))}
FAULT_LABEL = (*FAULT_NAMES, "unknown")
SPEC_FAULT_COL = np.array([FAULT_CODE.get(s.name, -1) for s in ALL_SPECS])
CASCADE_AFTER = np.array([s.cascade[1] if s.cascade else INF for s in ALL_SPECS])
CASCADE_CHILD = np.array([SPEC_INDEX[s.cascade[0]] if s.cascade else -1 for s in ALL_SPECS])
END_AFTER = np.array([s.duration_s + s.fade_s for s in ALL_SPECS])
RESTART, SHED, LIGHT, OLD = (SIDE_KINDS[k] for k in ("_restarting", "_shedding", "_light_model",
                                                     "_old_model"))

#: The kernels' constants, in order. A module-level namedtuple, so numba's on-disk cache
#: recognises its type in every process (a class made per call recompiles every kernel).
KERNEL_CONST_FIELDS = (
    "a_kind", "a_stage", "a_cost", "a_dur", "a_rule", "a_effect", "escalate", "o_replicas",
    "o_context", "o_last", "has_history", "o_dz", "o_hist", "o_done", "side_restart",
    "side_old", "side_light", "side_shed", "model_stage", "shed_s", "max_replicas", "min_replicas",
    "default_replicas", "healing", "release", "horizon_s", "recovery_bonus", "shed_share",
    "invalid_penalty",
    "cost_weight", "slo_per_s", "infra_weight", "has_budget", "budget", "dt", "step_seconds",
    "heal_stream", "escalate_stream", "cascade_child", "spec_fault_col", "src_cascade",
    "end_after", "cascade_after", "median", "inv", "t_mult", "t_add", "t_pmult", "t_padd", "t_ml",
    "t_ramp", "t_dur", "t_fade", "t_lag", "atten_pow", "hops", "lat", "thr", "err", "n_stages",
    "n_metrics", "episode_steps", "carrier_kind", "src_replay", "base_accuracy", "acc_noise_sd",
    "drift_every", "inv_drift_every", "pool_size", "healthy_ks", "healthy_psi", "pool_windows",
    "ref_sorted", "ref_edges", "ref_frac", "lat_limit_z", "thr_limit_z",
    "err_limit_z", "z_lo", "z_hi", "replica_cost", "base_cost", "slo_acc", "slo_stale", "slo_null",
    "slo_schema", "slo_cost", "detect_z", "relieve", "relapse_s", "after_ramp", "blocks",
    "label_alpha", "gap_p", "gap_stream", "metric_lag",
)
KernelConsts = namedtuple("KernelConsts", KERNEL_CONST_FIELDS)  # type: ignore[misc]


def escalate_index(m: PipelineModel) -> int:
    """The paging action's index: it runs beside the action in flight, in its own slot."""
    pages = [a.index for a in m.actions if m.kinds[a.kind].effect == act.PAGE]
    if len(pages) != 1:
        raise ConfigError(f"the action table needs exactly one paging action, has {len(pages)}")
    return pages[0]


def kernel_consts(m: PipelineModel) -> Any:
    """The model's constants as a namedtuple the compiled kernels take."""
    from healgym.sim import faults as flt

    release = np.zeros(len(FAULT_CODE), dtype=np.bool_)  # faults a bad release brought
    for name in RELEASE_FAULTS:
        release[FAULT_CODE[name]] = True
    T = flt.model_fault_table(m.fault_specs, m.metrics)
    # ambiguity and state-dependent healing (FaultSpec.relieved_by, heals_after_ramp, blocks):
    # (action kind x healing column) tables, as the healing matrix
    n_cols = len(FAULT_CODE)
    relieve, after_ramp, blocks = (np.zeros((len(m.kinds), n_cols), dtype=np.bool_)
                                   for _ in range(3))
    relapse = np.zeros(n_cols)
    kind_row = {k.name: r for r, k in enumerate(m.kinds)}
    for f in flt.LIBRARY:
        col = FAULT_CODE[f.name]
        relapse[col] = f.relapse_s
        for table, names in ((relieve, f.relieved_by), (after_ramp, f.heals_after_ramp),
                             (blocks, f.blocks)):
            for name in names:
                if name in kind_row:
                    table[kind_row[name], col] = True
    r, slo = m.reward, m.slo
    arrays = act.action_arrays(m.actions, m.kinds)
    fields: dict[str, Any] = {
        "a_kind": arrays["kind"], "a_stage": arrays["stage"], "a_cost": arrays["cost"],
        "a_dur": arrays["duration"], "a_rule": arrays["rule"], "a_effect": arrays["effect"],
        "escalate": escalate_index(m),
        "o_replicas": m.layout.replicas.start, "o_context": m.layout.context.start,
        "o_last": m.layout.last.start, "has_history": bool(m.layout.history),
        "o_dz": m.layout.dz.start, "o_hist": m.layout.hist.start, "o_done": m.layout.done.start,
        "side_restart": RESTART, "side_old": OLD, "side_light": LIGHT, "side_shed": SHED,
        "model_stage": m.model_stage, "shed_s": float(act.SHED_SECONDS),
        "max_replicas": MAX_REPLICAS, "min_replicas": MIN_REPLICAS,
        "default_replicas": DEFAULT_REPLICAS,
        "healing": np.ascontiguousarray(m.healing, dtype=np.float64),
        "release": release,
        "horizon_s": float(r.recovery_horizon_s), "recovery_bonus": float(r.recovery_bonus),
        "shed_share": float(act.SHED_SHARE),
        "invalid_penalty": float(r.invalid_action_penalty),
        "cost_weight": float(r.action_cost_weight), "slo_per_s": float(r.slo_violation_per_s),
        "infra_weight": float(r.infra_cost_weight),
        "has_budget": r.cost_budget is not None,
        "budget": float(r.cost_budget) if r.cost_budget is not None else 0.0,
        "dt": float(m.dt), "step_seconds": float(m.replay.step_seconds),
        "heal_stream": HEAL_STREAM, "escalate_stream": ESCALATE_STREAM,
        "cascade_child": CASCADE_CHILD.astype(np.int64),
        "spec_fault_col": SPEC_FAULT_COL.astype(np.int64),
        "src_cascade": SOURCES.index("cascade"),
        "end_after": END_AFTER.astype(np.float64),
        "cascade_after": CASCADE_AFTER.astype(np.float64),
        "n_stages": m.n_stages, "n_metrics": m.n_metrics, "episode_steps": m.episode_steps,
        "carrier_kind": CARRIER_KIND, "src_replay": SOURCES.index("replay"),
        "median": m.median.ravel().copy(), "inv": m.inv_scale.ravel().copy(),
        "t_mult": T.mult, "t_add": T.add, "t_pmult": T.prop_mult, "t_padd": T.prop_add,
        "t_ml": T.ml, "t_ramp": T.ramp_s, "t_dur": T.duration_s, "t_fade": T.fade_s,
        "t_lag": T.hop_lag_s, "atten_pow": T.atten_pow,
        "hops": np.ascontiguousarray(m.hops, dtype=np.int64),
        "lat": LAT, "thr": flt.THR, "err": flt.ERR,
        "base_accuracy": BASE_ACCURACY, "acc_noise_sd": ACC_NOISE_SD,
        "drift_every": m.drift_every, "inv_drift_every": 1.0 / m.drift_every,
        "pool_size": len(m.drift.windows),
        "healthy_ks": m.drift.healthy_ks, "healthy_psi": m.drift.healthy_psi,
        "pool_windows": m.drift.windows, "ref_sorted": m.drift.reference.sorted_ref,
        "ref_edges": m.drift.reference.edges, "ref_frac": m.drift.reference.ref_frac,
        "lat_limit_z": float(m.lat_limit_z), "thr_limit_z": float(m.thr_limit_z),
        "err_limit_z": np.ascontiguousarray(m.err_limit_z, dtype=np.float64),
        "z_lo": m.z_lo.ravel().copy(), "z_hi": m.z_hi.ravel().copy(),
        "replica_cost": REPLICA_COST_PER_H, "base_cost": float(m.base_cost),
        "slo_acc": float(slo.accuracy_min), "slo_stale": float(slo.staleness_max_s),
        "slo_null": float(slo.null_rate_max), "slo_schema": float(slo.schema_error_max),
        "slo_cost": float(slo.cost_factor_max), "detect_z": DETECT_Z,
        "relieve": relieve, "relapse_s": relapse, "after_ramp": after_ramp, "blocks": blocks,
        # the late labels' lag per step (1: none)
        "label_alpha": 1.0 if m.label_lag_s <= 0 else float(1.0 - np.exp(-m.dt / m.label_lag_s)),
        "gap_p": float(m.scrape_gap_p), "gap_stream": SCRAPE_GAP,
        "metric_lag": int(m.metric_lag_steps),
    }
    return KernelConsts(**fields)

