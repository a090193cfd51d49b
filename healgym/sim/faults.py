"""The fault library: what each fault does to the metrics, how it starts, how it ends, where it
spreads.

Every fault is data (a frozen :class:`FaultSpec`), compiled once into arrays so the dynamics are a
few array operations (:func:`fault_geometry`, :func:`effects_at`); ``docs/environment.md``
renders the same table.

Signature semantics, at severity 1 and full intensity, for the stage the fault is on:
``metric = baseline * (1 + mult[metric]) + add[metric]``; ML signals move by ``ml[signal]``.
Downstream stages feel ``propagate`` (a fraction of the stage's own mult/add) after
``hop_lag_s`` seconds per hop, attenuated by ``attenuation`` per hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
)
K = {name: i for i, name in enumerate(ML_SIGNALS)}
ACC, SHIFT, NULL, SCHEMA, STALE, COST = (K[s] for s in ML_SIGNALS)

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
    hop_lag_s: float = 30.0
    cascade: tuple[str, float] | None = None  # (child fault, seconds after onset if unhealed)
    rate_per_h: float = 0.1  # default random-arrival rate

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
        "A bad dependency upgrade: the stage restarts in a loop; restarting again does not help.",
        _ALL, mult={"throughput_rps": -0.85, "queue_depth": -0.8},
        add={"error_rate": 0.8, "cpu_pct": 25.0}, propagate=0.8,
        propagate_metrics=("throughput_rps",), rate_per_h=0.08,
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
        propagate_metrics=("throughput_rps", "cpu_pct"), rate_per_h=0.1,
    ),
    FaultSpec(
        "gpu_oom", "infra", "The GPU runs out of memory: batches fail, throughput collapses.",
        ("train", "serve"), mult={"throughput_rps": -0.7, "latency_p95_ms": 1.0},
        add={"memory_pct": 45.0, "error_rate": 0.6}, rate_per_h=0.06,
    ),
    FaultSpec(
        "bad_model_deploy", "ml", "A worse model is deployed: accuracy drops, nothing else moves.",
        ("serve",), add={"error_rate": 0.01}, ml={"accuracy": -0.18}, rate_per_h=0.08,
    ),
    FaultSpec(
        "covariate_drift", "data", "Input features drift: KS/PSI rise, accuracy erodes slowly.",
        ("ingest",), ml={"covariate_shift": 1.5, "accuracy": -0.06}, ramp_s=1800.0,
        rate_per_h=0.06,
    ),
    FaultSpec(
        "concept_drift", "data",
        "The label relation changes: accuracy falls while input drift tests stay quiet.",
        ("serve",), ml={"accuracy": -0.15}, ramp_s=1800.0, rate_per_h=0.05,
    ),
    FaultSpec(
        "schema_mismatch", "data",
        "An upstream schema change: records are rejected, nulls appear, accuracy falls.",
        ("features", "ingest"), add={"error_rate": 0.45},
        ml={"schema_error_rate": 0.6, "null_rate": 0.25, "accuracy": -0.08},
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
        ("ingest",), ml={"null_rate": 0.35, "accuracy": -0.07}, rate_per_h=0.08,
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
)

#: Effects that the simulator's own actions cause; not injected by chaos, not incidents.
SIDE_EFFECTS: tuple[FaultSpec, ...] = (
    FaultSpec("_restarting", "action", "The stage is down while it restarts.", _ALL,
              mult={"throughput_rps": -1.0, "cpu_pct": -0.8, "queue_depth": -1.0},
              add={"error_rate": 1.0}, propagate=0.9, propagate_metrics=("throughput_rps",),
              rate_per_h=0.0),
    FaultSpec("_shedding", "action", "The circuit breaker sheds 30 % of traffic.", _ALL,
              mult={"throughput_rps": -0.3, "latency_p95_ms": -0.3, "cpu_pct": -0.3,
                    "queue_depth": -0.5}, add={"error_rate": 0.3}, rate_per_h=0.0),
    FaultSpec("_light_model", "action", "The lighter model: faster and smaller, a little worse.",
              _ALL, mult={"latency_p95_ms": -0.4, "cpu_pct": -0.3, "memory_pct": -0.3},
              ml={"accuracy": -0.03}, rate_per_h=0.0),
    FaultSpec("_old_model", "action", "A rollback with nothing to roll back: an older model.",
              _ALL, ml={"accuracy": -0.02}, rate_per_h=0.0),
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


def compile_faults(specs: tuple[FaultSpec, ...] = ALL_SPECS) -> CompiledFaults:
    n = len(specs)
    mult, add = np.zeros((n, len(METRICS))), np.zeros((n, len(METRICS)))
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


@dataclass(frozen=True)
class FaultGeometry:
    """Where and when a set of active fault instances acts: everything about them that does not
    change with time, precomputed once per change of the fault set."""

    start: np.ndarray  # (n, S) onset + hop lag at each stage
    reach: np.ndarray  # (n, S) the stage is the fault's own or downstream of it
    own: np.ndarray  # (n, S) the stage is the fault's own
    scale: np.ndarray  # (n, S) severity x attenuation ** hops (0 where not reached)
    ramp: np.ndarray  # (n, 1)
    dur: np.ndarray  # (n, 1)
    fade: np.ndarray  # (n, 1)
    mult: np.ndarray  # (n, M) own-stage signatures
    add: np.ndarray
    prop_mult: np.ndarray  # (n, M) downstream signatures
    prop_add: np.ndarray
    ml: np.ndarray  # (n, K)
    breaks: np.ndarray  # sorted times at which the effects change slope


def fault_geometry(
    kinds: np.ndarray, stages: np.ndarray, severity: np.ndarray, onset_s: np.ndarray,
    hops: np.ndarray, table: CompiledFaults = COMPILED,
) -> FaultGeometry:
    """Precompute :class:`FaultGeometry` for active instances (arrays of shape (n,)).

    ``hops[s, d]``: hops from stage s downstream to stage d (0 on the diagonal, -1 if d is not
    downstream of s).
    """
    h = hops[stages]  # (n, S)
    reach = h >= 0
    hh = np.maximum(h, 0)
    start = onset_s[:, None] + table.hop_lag_s[kinds][:, None] * hh
    atten = np.where(h > 0, table.atten_pow[kinds[:, None], np.minimum(hh, MAX_HOPS)], 1.0)
    scale = np.where(reach, severity[:, None] * atten, 0.0)
    ramp, dur, fade = (table.ramp_s[kinds][:, None], table.duration_s[kinds][:, None],
                       table.fade_s[kinds][:, None])
    pts = np.concatenate([start, start + ramp, start + dur, start + dur + fade], axis=1)
    breaks = np.unique(pts[np.concatenate([reach] * 4, axis=1)])
    return FaultGeometry(start=start, reach=reach, own=h == 0, scale=scale, ramp=ramp, dur=dur,
                         fade=fade, mult=table.mult[kinds], add=table.add[kinds],
                         prop_mult=table.prop_mult[kinds], prop_add=table.prop_add[kinds],
                         ml=table.ml[kinds], breaks=breaks[np.isfinite(breaks)])


def intensities(g: FaultGeometry, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(own, downstream) intensity of each instance at each stage at time ``t``.

    Works on any leading shape: (n, S) for one env, (N, F, S) for a batch (``t`` then (N, 1, 1)).
    """
    age = t - g.start
    ramp = np.where(g.ramp > 0, np.minimum(np.maximum(age / np.maximum(g.ramp, 1e-9), 0.0), 1.0),
                    1.0)
    fade = np.minimum(np.maximum(1.0 - (age - g.dur) / np.maximum(g.fade, 1e-9), 0.0), 1.0)
    inten = np.where(age >= 0, g.scale * ramp * fade, 0.0)
    own = np.where(g.own, inten, 0.0)
    return own, inten - own


def stable_until(g: FaultGeometry, t: float | np.ndarray) -> np.ndarray:
    """Until when the intensities stay exactly as they are at ``t`` (``t`` itself while any is
    mid-ramp or mid-fade; else the next onset, ramp end, fade start or end). Reduces the last
    two axes: (n, S) -> scalar, (N, F, S) -> (N,)."""
    age = t - g.start
    moving = g.reach & (age >= 0) & ((age < g.ramp) | ((age >= g.dur) & (age < g.dur + g.fade)))
    if np.ndim(t) == 0 and moving.any():
        return np.asarray(t)  # one env, mid-ramp or mid-fade: recompute at the next step
    nxt = np.full(age.shape, INF)
    for b in (g.start, g.start + g.ramp, g.start + g.dur, g.start + g.dur + g.fade):
        nxt = np.minimum(nxt, np.where(g.reach & (b > t), b, INF))
    until = nxt.min(axis=(-2, -1))
    return np.where(moving.any(axis=(-2, -1)), t if np.ndim(t) == 0 else
                    np.reshape(t, until.shape), until)


def effects_at(g: FaultGeometry, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Combined effect at time ``t``: ``(mult, add, ml, stable_until)`` of shapes (S, M), (S, M),
    (K,), and the time until which they stay exactly the same (callers may cache them).

    Instances are accumulated one by one in their order, so a batch that accumulates its slots
    in the same order gets bit-identical sums.
    """
    own, down = intensities(g, t)
    n_stages = own.shape[1]
    mult = np.zeros((n_stages, len(METRICS)))
    add = np.zeros((n_stages, len(METRICS)))
    ml = np.zeros(len(ML_SIGNALS))
    for i in range(own.shape[0]):
        o, d = own[i][:, None], down[i][:, None]
        mult += o * g.mult[i] + d * g.prop_mult[i]
        add += o * g.add[i] + d * g.prop_add[i]
        ml += own[i].sum() * g.ml[i]
    return mult, add, ml, float(stable_until(g, t))


def effect_factor(mult: np.ndarray, replicas: np.ndarray, default_replicas: int = 2
                  ) -> np.ndarray:
    """Multiplicative factor on the baseline: fault mult plus capacity (CPU and, a third as much,
    latency scale with ``default_replicas / replicas``), floored at 0."""
    capacity = default_replicas / replicas - 1.0
    total = mult.copy()
    total[..., CPU] += capacity
    total[..., LAT] += 0.3 * capacity
    return np.maximum(1.0 + total, 0.0)
