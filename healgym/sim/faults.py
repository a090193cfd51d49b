"""The fault library: what each fault does to the metrics, how it starts, how it ends, where it
spreads.

Every fault is data (a frozen :class:`FaultSpec`), compiled once into arrays for the
compiled dynamics (:func:`accumulate`, :func:`effects_at`); ``docs/environment.md``
renders the same table.

Signature semantics, at severity 1 and full intensity, for the stage the fault is on:
``metric = baseline * (1 + mult[metric]) + add[metric]``; ML signals move by ``ml[signal]``.
Downstream stages feel ``propagate`` (a fraction of the stage's own mult/add) after
``hop_lag_s`` seconds per hop, attenuated by ``attenuation`` per hop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from healgym.sim.jit import compiled
from healgym.telemetry.schema import CANONICAL_METRICS

METRICS = CANONICAL_METRICS
M = {name: i for i, name in enumerate(METRICS)}
LAT, ERR, CPU, MEM, THR, QUE = (M[m] for m in METRICS)

#: Pipeline-level ML health signals, in the order the simulator keeps them.
ML_SIGNALS: tuple[str, ...] = (
    "accuracy",  # absolute change of model accuracy
    "covariate_shift",  # mean shift of the input features, in reference standard deviations
    "null_rate",  # fraction of null feature values
    "schema_error_rate",  # fraction of records rejected by schema validation
    "staleness_s",  # age of the newest features/model inputs, seconds
    "cost_factor",  # relative change of the pipeline's running cost
    "pred_shift",  # PSI of the served model's prediction distribution against its reference
)
K = {name: i for i, name in enumerate(ML_SIGNALS)}
ACC, SHIFT, NULL, SCHEMA, STALE, COST, PRED = (K[s] for s in ML_SIGNALS)

INF = float("inf")
MAX_HOPS = 64


@dataclass(frozen=True)
class FaultSpec:
    """One fault type. See the module docstring for the signature semantics."""

    name: str
    category: str  # "infra", "ml" or "data"
    description: str
    stages: tuple[str, ...]  # preferred stages; any stage when none of them is in the pipeline
    mult: dict[str, float] = field(default_factory=dict)
    add: dict[str, float] = field(default_factory=dict)
    ml: dict[str, float] = field(default_factory=dict)
    ramp_s: float = 0.0  # 0: sudden onset; else the time to reach full intensity (gradual)
    duration_s: float = INF  # natural course: INF persists until healed; else fades after this
    fade_s: float = 60.0
    propagate: float = 0.0  # fraction of the signature felt one hop downstream
    propagate_metrics: tuple[str, ...] = ()
    #: what a stage downstream feels where it is not the fault's own signature (per hop, with
    #: ``propagate``'s attenuation): callers of a slow dependency time out and fail
    downstream_mult: dict[str, float] = field(default_factory=dict)
    downstream_add: dict[str, float] = field(default_factory=dict)
    hop_lag_s: float = 30.0
    cascade: tuple[str, float] | None = None  # (child fault, seconds after onset if unhealed)
    rate_per_h: float = 0.1  # default random-arrival rate
    # What makes healing it ambiguous or state-dependent (docs/environment.md, section 5):
    #: action kinds that only relieve it: the symptom goes away, the fault stays and its
    #: symptom returns ``relapse_s`` after the action completes (ramping again from zero)
    relieved_by: tuple[str, ...] = ()
    relapse_s: float = 0.0
    #: action kinds that heal it only once its ramp is over (a retrain on drifting data)
    heals_after_ramp: tuple[str, ...] = ()
    #: action kinds that heal nothing on its stage while it is active (a restart under a surge)
    blocks: tuple[str, ...] = ()

    @property
    def onset(self) -> str:
        return "sudden" if self.ramp_s == 0 else f"gradual ({self.ramp_s:g} s)"

    @property
    def course(self) -> str:
        if self.duration_s == INF:
            return "persists until healed"
        return f"fades after {self.duration_s:g} s (over {self.fade_s:g} s)"


_ALL = ("ingest", "features", "train", "serve", "deliver")

LIBRARY: tuple[FaultSpec, ...] = (
    FaultSpec(
        "process_crash", "infra", "A stage's process dies: no throughput, every request fails.",
        _ALL, mult={"throughput_rps": -1.0, "cpu_pct": -0.9, "memory_pct": -0.8,
                    "queue_depth": -1.0}, add={"error_rate": 1.0},
        ml={"staleness_s": 900.0}, propagate=0.9, propagate_metrics=("throughput_rps",),
        rate_per_h=0.12,
    ),
    FaultSpec(
        "crash_loop", "infra",
        "A bad dependency upgrade: the process crashes exactly like a plain crash; a restart "
        "brings it back for a minute, then it crashes again. A rollback fixes it.",
        _ALL, mult={"throughput_rps": -1.0, "cpu_pct": -0.9, "memory_pct": -0.8,
                    "queue_depth": -1.0}, add={"error_rate": 1.0},
        ml={"staleness_s": 900.0}, propagate=0.9, propagate_metrics=("throughput_rps",),
        rate_per_h=0.08, relieved_by=("restart",), relapse_s=60.0,
    ),
    FaultSpec(
        "memory_leak", "infra",
        "Memory grows steadily; latency rises with GC pressure; unhealed, the process crashes.",
        ("features", "serve", "train"), mult={"latency_p95_ms": 0.8},
        add={"memory_pct": 55.0}, ramp_s=1200.0, cascade=("process_crash", 1500.0),
        rate_per_h=0.1,
    ),
    FaultSpec(
        "cpu_contention", "infra",
        "A noisy neighbour takes the CPU: CPU saturates, latency rises (Nezha: 1-25 % to 80+ %).",
        _ALL, mult={"latency_p95_ms": 1.5, "throughput_rps": -0.15},
        add={"cpu_pct": 55.0}, duration_s=900.0, propagate=0.4,
        propagate_metrics=("latency_p95_ms",), rate_per_h=0.15,
    ),
    FaultSpec(
        "network_delay", "infra",
        "Packets are delayed on the stage's links: latency jumps (Nezha edge p50: 3 ms to 750 ms).",
        _ALL, mult={"latency_p95_ms": 8.0, "throughput_rps": -0.3, "queue_depth": 6.0},
        propagate=0.5, propagate_metrics=("latency_p95_ms",), rate_per_h=0.12,
    ),
    FaultSpec(
        "error_spike", "infra", "A bad code path returns errors (Nezha 'return'/'exception').",
        _ALL, mult={"latency_p95_ms": 0.2}, add={"error_rate": 0.35}, rate_per_h=0.12,
    ),
    FaultSpec(
        "request_surge", "infra",
        "Traffic surges past capacity: throughput, CPU, latency and queues rise.",
        ("ingest", "serve"), mult={"throughput_rps": 1.5, "latency_p95_ms": 2.0,
                                   "queue_depth": 5.0}, add={"cpu_pct": 40.0},
        duration_s=1200.0, fade_s=120.0, propagate=0.6,
        propagate_metrics=("throughput_rps", "cpu_pct"), rate_per_h=0.1, blocks=("restart",),
    ),
    FaultSpec(
        "gpu_oom", "infra", "The GPU runs out of memory: batches fail, throughput collapses.",
        ("train", "serve"), mult={"throughput_rps": -0.7, "latency_p95_ms": 1.0},
        add={"memory_pct": 45.0, "error_rate": 0.6}, rate_per_h=0.06,
    ),
    FaultSpec(
        "bad_model_deploy", "ml", "A worse model is deployed: accuracy drops, nothing else moves.",
        ("serve",), add={"error_rate": 0.01}, ml={"accuracy": -0.18, "pred_shift": 0.6},
        rate_per_h=0.08,
    ),
    FaultSpec(
        "covariate_drift", "data", "Input features drift: KS/PSI rise, accuracy erodes slowly.",
        ("ingest",), ml={"covariate_shift": 1.5, "accuracy": -0.06, "pred_shift": 0.5},
        ramp_s=1800.0,
        rate_per_h=0.06, heals_after_ramp=("retrain",),
    ),
    FaultSpec(
        "concept_drift", "data",
        "The label relation changes: accuracy falls while input drift tests stay quiet.",
        ("serve",), ml={"accuracy": -0.15}, ramp_s=1800.0, rate_per_h=0.05,
        heals_after_ramp=("retrain",),
    ),
    FaultSpec(
        "schema_mismatch", "data",
        "An upstream schema change: records are rejected, nulls appear, accuracy falls.",
        ("features", "ingest"), add={"error_rate": 0.45},
        ml={"schema_error_rate": 0.6, "null_rate": 0.25, "accuracy": -0.08, "pred_shift": 0.3},
        propagate=0.3, propagate_metrics=("throughput_rps",), mult={"throughput_rps": -0.45},
        rate_per_h=0.06,
    ),
    FaultSpec(
        "upstream_outage", "data",
        "The upstream source is down: no data arrives, features go stale.",
        ("ingest",), mult={"throughput_rps": -0.95, "cpu_pct": -0.6, "queue_depth": -0.9},
        ml={"staleness_s": 1800.0}, duration_s=1200.0, propagate=0.95,
        propagate_metrics=("throughput_rps",), hop_lag_s=60.0, rate_per_h=0.08,
    ),
    FaultSpec(
        "null_surge", "data", "A surge of null values in the input: accuracy falls.",
        ("ingest",), ml={"null_rate": 0.35, "accuracy": -0.07, "pred_shift": 0.3},
        rate_per_h=0.08,
    ),
    FaultSpec(
        "stale_feature_store", "data", "The feature store stops refreshing: features age.",
        ("features",), ml={"staleness_s": 3600.0, "accuracy": -0.04}, ramp_s=1800.0,
        rate_per_h=0.06,
    ),
    FaultSpec(
        "sink_write_failure", "infra",
        "Writes to the sink fail: errors, and the dead-letter queue builds up.",
        ("deliver",), mult={"queue_depth": 30.0}, add={"error_rate": 0.6}, ramp_s=120.0,
        rate_per_h=0.08,
    ),
    FaultSpec(
        "cost_overrun", "infra", "Runaway autoscaling or a leaked job: the running cost climbs.",
        _ALL, add={"cpu_pct": 10.0}, ml={"cost_factor": 2.0}, ramp_s=900.0, rate_per_h=0.05,
    ),
    FaultSpec(
        "leaky_release", "infra",
        "A new release leaks memory: it looks like any leak, but a restart only resets it (the "
        "memory grows back over 20 minutes); a rollback fixes it.",
        ("features", "serve", "train"), mult={"latency_p95_ms": 0.8},
        add={"memory_pct": 55.0}, ramp_s=1200.0, cascade=("process_crash", 1500.0),
        rate_per_h=0.05, relieved_by=("restart",), relapse_s=0.0,
    ),
    FaultSpec(
        "slow_dependency", "infra",
        "A dependency slows down (a degraded feature-store node): its own latency rises, but "
        "the loudest symptom is downstream, where its callers time out and fail; restarting "
        "the callers heals nothing.",
        ("features",), mult={"latency_p95_ms": 4.0, "queue_depth": 3.0},
        add={"error_rate": 0.01}, propagate=0.9, hop_lag_s=10.0,
        downstream_mult={"latency_p95_ms": 1.0, "throughput_rps": -0.3},
        downstream_add={"error_rate": 0.3}, rate_per_h=0.06,
    ),
)

#: Effects that the simulator's own actions cause; not injected by chaos, not incidents.
SIDE_EFFECTS: tuple[FaultSpec, ...] = (
    FaultSpec("_restarting", "action", "The stage is down while it restarts.", _ALL,
              mult={"throughput_rps": -1.0, "cpu_pct": -0.8, "queue_depth": -1.0},
              add={"error_rate": 1.0}, propagate=0.9, propagate_metrics=("throughput_rps",),
              rate_per_h=0.0),
    FaultSpec("_shedding", "action",
              "The circuit breaker turns 30 % of traffic away (not errors: fewer requests); "
              "downstream stages see the lower throughput.", _ALL,
              mult={"throughput_rps": -0.3, "latency_p95_ms": -0.3, "cpu_pct": -0.3,
                    "queue_depth": -0.5}, propagate=1.0, propagate_metrics=("throughput_rps",),
              hop_lag_s=0.0, rate_per_h=0.0),
    FaultSpec("_light_model", "action", "The lighter model: faster and smaller, a little worse.",
              _ALL, mult={"latency_p95_ms": -0.4, "cpu_pct": -0.3, "memory_pct": -0.3},
              ml={"accuracy": -0.03, "pred_shift": 0.15}, rate_per_h=0.0),
    FaultSpec("_old_model", "action", "A rollback with nothing to roll back: an older model.",
              _ALL, ml={"accuracy": -0.02, "pred_shift": 0.05}, rate_per_h=0.0),
)

FAULT_NAMES: tuple[str, ...] = tuple(f.name for f in LIBRARY)
ALL_SPECS: tuple[FaultSpec, ...] = LIBRARY + SIDE_EFFECTS
SPEC_INDEX: dict[str, int] = {f.name: i for i, f in enumerate(ALL_SPECS)}
BY_NAME: dict[str, FaultSpec] = {f.name: f for f in ALL_SPECS}


@dataclass(frozen=True)
class CompiledFaults:
    """The fault table as arrays, indexed by fault index (library, then side effects)."""

    mult: np.ndarray  # (F, M)
    add: np.ndarray  # (F, M)
    prop_mult: np.ndarray  # (F, M): the downstream share of mult
    prop_add: np.ndarray  # (F, M)
    ml: np.ndarray  # (F, K)
    ramp_s: np.ndarray  # (F,)
    duration_s: np.ndarray  # (F,)
    fade_s: np.ndarray  # (F,)
    hop_lag_s: np.ndarray  # (F,)
    attenuation: np.ndarray  # (F,)
    atten_pow: np.ndarray  # (F, MAX_HOPS + 1): attenuation ** hops, tabulated once


def compile_faults(specs: tuple[FaultSpec, ...] = ALL_SPECS,
                   metrics: tuple[str, ...] = METRICS) -> CompiledFaults:
    """The fault table for a model's ``metrics`` (the canonical six first: a fault's effects
    name canonical metrics; a model's extra metrics get no fault effect)."""
    n = len(specs)
    if tuple(metrics[:len(METRICS)]) != tuple(METRICS):
        raise ValueError(f"metrics {metrics} must start with the canonical {METRICS}")
    mult, add = np.zeros((n, len(metrics))), np.zeros((n, len(metrics)))
    pmult, padd = np.zeros_like(mult), np.zeros_like(add)
    ml = np.zeros((n, len(ML_SIGNALS)))
    for i, f in enumerate(specs):
        for k, v in f.mult.items():
            mult[i, M[k]] = v
        for k, v in f.add.items():
            add[i, M[k]] = v
        for k, v in f.ml.items():
            ml[i, K[k]] = v
        for k in f.propagate_metrics:
            pmult[i, M[k]] = f.mult.get(k, 0.0)
            padd[i, M[k]] = f.add.get(k, 0.0)
        for k, v in f.downstream_mult.items():
            pmult[i, M[k]] = v
        for k, v in f.downstream_add.items():
            padd[i, M[k]] = v
    return CompiledFaults(
        mult=mult, add=add, prop_mult=pmult, prop_add=padd, ml=ml,
        ramp_s=np.array([f.ramp_s for f in specs]),
        duration_s=np.array([f.duration_s for f in specs]),
        fade_s=np.array([f.fade_s for f in specs]),
        hop_lag_s=np.array([f.hop_lag_s for f in specs]),
        attenuation=np.array([f.propagate for f in specs]),
        atten_pow=np.array([[f.propagate ** h for h in range(MAX_HOPS + 1)] for f in specs]),
    )


COMPILED = compile_faults()


@functools.lru_cache(maxsize=8)
def fault_table(metrics: tuple[str, ...] = METRICS) -> CompiledFaults:
    """The library's compiled table for a model's metrics (cached)."""
    return COMPILED if tuple(metrics) == tuple(METRICS) else compile_faults(ALL_SPECS, metrics)


def model_fault_table(specs: tuple[FaultSpec, ...], metrics: tuple[str, ...]) -> CompiledFaults:
    """The compiled table of a model's fault specs (the library's, cached, unless calibrated)."""
    return fault_table(tuple(metrics)) if specs is ALL_SPECS else compile_faults(specs, metrics)


def calibrated_specs(fitted: dict[str, object]) -> tuple[FaultSpec, ...]:
    """The library with the signatures of a ``healgym calibrate`` file in place of the built-in
    ones for the fault types it covers: ``mult``, ``add``, the onset ramp and the spread to
    neighbours are the fitted ones; the ML effects, course, cascades and healing rules stay
    the library's (the labelled windows do not show them). Types it does not cover keep
    their built-in signature."""
    import dataclasses

    fits = fitted.get("faults") or {}
    out = []
    for spec in ALL_SPECS:
        fit = fits.get(spec.name) if isinstance(fits, dict) else None
        if fit is None:
            out.append(spec)
            continue
        prop = float(fit.get("propagate", 0.0))
        out.append(dataclasses.replace(
            spec, mult={k: float(v) for k, v in (fit.get("mult") or {}).items()},
            add={k: float(v) for k, v in (fit.get("add") or {}).items()},
            ramp_s=float(fit.get("ramp_s", spec.ramp_s)), propagate=prop,
            propagate_metrics=tuple(fit.get("propagate_metrics") or ()) if prop > 0 else (),
            downstream_mult={}, downstream_add={}))
    return tuple(out)


# --------------------------------------------------------------------------- the dynamics
# Compiled once, used by everything that needs a fault's effect: the env's step kernel
# (:mod:`healgym.envs._kernel`, every env of a batch; the scalar env is a batch of one) and the
# analysis tools' signatures (:func:`effects_at`). There is no second implementation.
@compiled(inline="always")
def accumulate(kinds, stages, sevs, onsets, n, now, hops, t_mult, t_add, t_pmult, t_padd,
               t_ml, t_ramp, t_dur, t_fade, t_lag, atten_pow, mult, add, ml):
    """The combined effect at time ``now`` of fault instances ``0..n-1`` (kind, stage, severity,
    onset) into ``mult``, ``add`` (flat (S*M,), stage-major) and ``ml`` (K,), all zeroed here.
    Instances are accumulated in their order. Returns the time until which the effects stay
    exactly the same (``now`` while any is mid-ramp or mid-fade; else the next onset, ramp end,
    fade start or end).

    Signature semantics: the fault's own stage gets ``intensity * mult``; a stage ``h`` hops
    downstream gets ``propagate``'s share, ``hop_lag_s * h`` later, attenuated ``** h``.
    """
    S = hops.shape[0]
    M = t_mult.shape[1]
    K = t_ml.shape[1]
    for j in range(S * M):
        mult[j] = 0.0
        add[j] = 0.0
    for q in range(K):
        ml[q] = 0.0
    until = INF
    for f in range(n):
        sev = sevs[f]
        if sev == 0.0:
            continue
        kd = kinds[f]
        st_ = stages[f]
        ramp, dur, fade = t_ramp[kd], t_dur[kd], t_fade[kd]
        for d in range(S):
            h = hops[st_, d]
            if h < 0 or (h > 0 and atten_pow[kd, min(h, MAX_HOPS)] == 0.0):
                continue  # not reached: its contribution is exactly zero
            start = onsets[f] + t_lag[kd] * h
            atten = atten_pow[kd, min(h, MAX_HOPS)] if h > 0 else 1.0
            scale = sev * atten
            age = now - start
            if age >= 0 and (age < ramp or (age >= dur and age < dur + fade)):
                until = now  # mid-ramp or mid-fade: moves every step
            else:
                for b in (start, start + ramp, start + dur, start + dur + fade):
                    if b > now and b < until:
                        until = b
            if ramp > 0:
                rp = min(max(age / max(ramp, 1e-9), 0.0), 1.0)
            else:
                rp = 1.0
            fd = min(max(1.0 - (age - dur) / max(fade, 1e-9), 0.0), 1.0)
            inten = scale * rp * fd if age >= 0 else 0.0
            if h == 0:
                for m in range(M):
                    mult[d * M + m] += inten * t_mult[kd, m]
                    add[d * M + m] += inten * t_add[kd, m]
                for q in range(K):
                    ml[q] += inten * t_ml[kd, q]
            else:
                for m in range(M):
                    mult[d * M + m] += inten * t_pmult[kd, m]
                    add[d * M + m] += inten * t_padd[kd, m]
    return until


@compiled(inline="always")
def capacity(default_replicas, replicas):
    """Relative capacity shortfall of a stage: ``default / replicas - 1``."""
    return default_replicas / replicas - 1.0


@compiled(inline="always")
def factor(mult, m, cap):
    """Multiplicative factor on metric ``m``'s baseline: the faults' ``mult`` plus capacity
    (CPU and, a third as much, latency scale with ``cap``), floored at 0."""
    if m == CPU:
        mult += cap
    elif m == LAT:
        mult += 0.3 * cap
    return max(1.0 + mult, 0.0)


@compiled()
def _effects_at(kinds, stages, sevs, onsets, now, hops, t_mult, t_add, t_pmult, t_padd, t_ml,
                t_ramp, t_dur, t_fade, t_lag, atten_pow, mult, add, ml):
    return accumulate(kinds, stages, sevs, onsets, kinds.size, now, hops, t_mult, t_add,
                      t_pmult, t_padd, t_ml, t_ramp, t_dur, t_fade, t_lag, atten_pow, mult, add,
                      ml)


@compiled()
def _effect_factor(mult, replicas, default_replicas, out):
    S, M = mult.shape
    for d in range(S):
        cap = capacity(default_replicas, replicas[d])
        for m in range(M):
            out[d, m] = factor(mult[d, m], m, cap)


def effects_at(kinds: np.ndarray, stages: np.ndarray, severity: np.ndarray,
               onset_s: np.ndarray, hops: np.ndarray, t: float, table: CompiledFaults = COMPILED
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Combined effect at time ``t`` of fault instances (arrays of shape (n,)):
    ``(mult, add, ml, stable_until)`` of shapes (S, M), (S, M), (K,), and the time until which
    they stay the same. ``hops[s, d]``: hops from stage s downstream to stage d (0 on the
    diagonal, -1 if d is not downstream of s). The env's own function (:func:`accumulate`)."""
    S = hops.shape[0]
    mult, add = np.zeros((S, table.mult.shape[1])), np.zeros((S, table.mult.shape[1]))
    ml = np.zeros(len(ML_SIGNALS))
    until = _effects_at(
        np.asarray(kinds, np.int64), np.asarray(stages, np.int64),
        np.asarray(severity, np.float64), np.asarray(onset_s, np.float64), float(t),
        np.ascontiguousarray(hops, dtype=np.int64), table.mult, table.add, table.prop_mult,
        table.prop_add, table.ml, table.ramp_s, table.duration_s, table.fade_s,
        table.hop_lag_s, table.atten_pow, mult.reshape(-1), add.reshape(-1), ml)
    return mult, add, ml, float(until)


def effect_factor(mult: np.ndarray, replicas: np.ndarray, default_replicas: int = 2
                  ) -> np.ndarray:
    """Multiplicative factor on the baseline (S, M): the env's own :func:`factor`."""
    mult = np.ascontiguousarray(mult, dtype=np.float64)
    out = np.empty_like(mult)
    _effect_factor(mult, np.ascontiguousarray(replicas, dtype=np.int64), int(default_replicas),
                   out)
    return out
