"""The static part of a simulated pipeline, shared by the scalar env and the vector env.

:func:`build_model` resolves the user's arguments (dataset, stages, chaos, scenario, reward, SLO,
healing matrix) into one immutable :class:`PipelineModel`: the replay source, the downstream hop
matrix, the action table, the healing matrix, the SLO limits in z-space, and the observation
layout. Building both envs from it is what keeps them one model.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from healgym.errors import ConfigError, did_you_mean
from healgym.sim import actions as act
from healgym.sim.chaos import ChaosConfig, Scenario, load_scenario
from healgym.sim.drift import DriftPool
from healgym.sim.faults import (
    ACC,
    ALL_SPECS,
    COST,
    ERR,
    FAULT_NAMES,
    LAT,
    NULL,
    PRED,
    SCHEMA,
    SHIFT,
    SPEC_INDEX,
    STALE,
    THR,
    calibrated_specs,
)
from healgym.sim.jit import compiled
from healgym.sim.layout import ObsLayout
from healgym.sim.replay import ReplaySource, bounds
from healgym.sim.reward import RewardConfig, SLOConfig
from healgym.telemetry.calibrate import load as load_signatures
from healgym.telemetry.dataset import TelemetryDataset, load_dataset
from healgym.telemetry.schema import MetricSpec, metric_specs
from healgym.telemetry.synthetic import generate_synthetic

Z_CLIP = 50.0
BASE_ACCURACY = 0.92
#: labels arrive late (PipelineConfig.label_lag_s): the accuracy estimate's lag, s
LABEL_LAG_S = 600.0
#: scrape gaps (PipelineConfig.scrape_gap_p): a stage's scrape fails at a step with this
#: probability
SCRAPE_GAP_P = 0.02
#: delayed metrics (PipelineConfig.metric_lag_s): the per-stage metrics an observation shows are
#: this old (a scrape interval, a recording rule's evaluation and a rate window's lag), s
METRIC_LAG_S = 20.0
MAX_METRIC_LAG_STEPS = 60
BASE_NULL_RATE = 0.005
BASE_STALENESS_S = 120.0
ACC_NOISE_SD = 0.004
REPLICA_COST_PER_H = 5.0
DEFAULT_REPLICAS, MIN_REPLICAS, MAX_REPLICAS = 2, 1, 8
DETECT_Z = 6.0
F_MAX = 16  # fault and side-effect slots per env; beyond it a new fault is dropped (counted)
I_MAX = 32  # incidents tracked per episode; beyond it a new incident is dropped (counted)
HEAL_STREAM, ESCALATE_STREAM = 16, 64  # counter-RNG streams of heal draws (+ target index)
RELEASE_FAULTS = ("bad_model_deploy", "error_spike", "crash_loop", "schema_mismatch",
                  "leaky_release")
SIDE_KINDS = {name: SPEC_INDEX[name] for name in ("_restarting", "_shedding", "_light_model",
                                                   "_old_model")}
CARRIER_KIND = SPEC_INDEX["_old_model"]  # effect-free on metrics when severity is 0


@functools.lru_cache(maxsize=4)
def default_dataset(seed: int = 0) -> TelemetryDataset:
    """The embedded default: 3 days of seeded synthetic telemetry (marked synthetic)."""
    return generate_synthetic(seed=seed, days=3.0)


@functools.lru_cache(maxsize=2)
def default_drift_pool() -> DriftPool:
    return DriftPool.build()


def hops_from_edges(names: list[str], edges: list[tuple[str, str]] | None) -> np.ndarray:
    """hops[s, d]: shortest downstream distance from stage s to d (-1: not downstream)."""
    n = len(names)
    if not edges:
        edges = list(zip(names[:-1], names[1:], strict=True))
    idx = {nm: i for i, nm in enumerate(names)}
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        if a in idx and b in idx and a != b:
            adj[idx[a]].append(idx[b])
    hops = -np.ones((n, n), dtype=np.int64)
    for s in range(n):
        hops[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if hops[s, v] < 0:
                    hops[s, v] = hops[s, u] + 1
                    queue.append(v)
    return hops


def chain_from_call_graph(edges: list[tuple[str, str]], max_stages: int = 5) -> list[str]:
    """The longest simple call chain (at most ``max_stages`` long) in a call graph, from a root."""
    adj: dict[str, list[str]] = {}
    targets = set()
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        targets.add(b)
    roots = sorted(n for n in adj if n not in targets) or sorted(adj)
    best: list[str] = []

    def walk(path: list[str]) -> None:
        nonlocal best
        if len(path) > len(best):
            best = list(path)
        if len(path) >= max_stages:
            return
        for nxt in sorted(adj.get(path[-1], [])):
            if nxt not in path:
                walk([*path, nxt])

    for r in roots:
        walk([r])
    return best


@dataclass(frozen=True)
class PipelineModel:
    """Everything about a simulated pipeline that does not change during episodes."""

    dataset_name: str
    replay: ReplaySource
    stages: list[str]
    hops: np.ndarray
    dt: float
    episode_steps: int  # the time limit (with time_limit) and the planning chunk
    time_limit: bool
    drift_every: int
    chaos: ChaosConfig
    scenario: Scenario | None
    replay_incidents: bool
    reward: RewardConfig
    slo: SLOConfig
    healing: np.ndarray  # (kinds, faults + unknown)
    actions: list[act.Action]
    model_stage: int
    drift: DriftPool
    median: np.ndarray
    inv_scale: np.ndarray
    lat_limit_z: float
    thr_limit_z: float
    err_limit_z: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    base_cost: float
    fault_cols: dict[str, int]
    layout: ObsLayout
    kinds: tuple[act.ActionKind, ...]  # rows of the healing matrix; Action.kind indexes them
    observation_space: spaces.Box
    action_space: spaces.Discrete
    metric_specs: tuple[MetricSpec, ...]  # the canonical six, then the pipeline's extra ones
    #: labels arrive late: the time constant, s, of the accuracy estimate's lag (0: none)
    label_lag_s: float = LABEL_LAG_S
    scrape_gap_p: float = SCRAPE_GAP_P
    #: delayed metrics: the per-stage metrics shown are this many steps old (0: current)
    metric_lag_steps: int = 2
    #: the fault specs the dynamics compile (the library's, or with calibrated signatures)
    fault_specs: tuple[Any, ...] = ALL_SPECS
    faults_file: str | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The per-stage metric names, in the order of every (S, M) array of the model."""
        return tuple(m.name for m in self.metric_specs)

    @property
    def n_metrics(self) -> int:
        return len(self.metric_specs)

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    @property
    def action_names(self) -> list[str]:
        return [a.name for a in self.actions]

    @property
    def n_obs(self) -> int:
        return int(self.observation_space.shape[0])

    def action_index(self, kind: str, target: str) -> int:
        """The action of ``kind`` on ``target`` (a stage, or "pipeline"); typed, so stage names
        may contain ``_``."""
        for a in self.actions:
            if self.kinds[a.kind].name == kind and (
                    self.stages[a.stage] if a.stage >= 0 else "pipeline") == target:
                return a.index
        raise ConfigError(f"this pipeline has no action {kind!r} on {target!r} (stages "
                          f"{self.stages}, kinds {[k.name for k in self.kinds]})")

    def scenario_for(self, options: dict[str, Any] | None) -> Scenario | None:
        if options and "scenario" in options:
            return None if options["scenario"] is None else load_scenario(options["scenario"])
        return self.scenario


@dataclass(frozen=True)
class PipelineConfig:
    """What defines one pipeline model: the keyword arguments of ``gymnasium.make``, of both env
    classes and of :func:`build_model`, written once (see the scalar env's Arguments)."""

    dataset: str | Path | TelemetryDataset | None = None
    stages: list[str] | dict[str, str] | str | None = None
    step_seconds: float = 10.0
    chaos: bool | dict[str, Any] | ChaosConfig | None = True
    scenario: str | Path | dict[str, Any] | Scenario | None = None
    replay_incidents: bool = False
    reward: dict[str, Any] | RewardConfig | None = None
    slo: dict[str, Any] | SLOConfig | None = None
    healing_matrix: dict[str, dict[str, float]] | None = None
    #: the episode length, in steps: the one time limit (gymnasium's ``max_episode_steps`` is not
    #: used; with ``time_limit=False`` the episode never ends and replay and chaos are planned
    #: ``episode_steps`` at a time)
    episode_steps: int = 360
    time_limit: bool = True
    drift_period_s: float = 60.0
    time_range: tuple[float, float] | list[float] = (0.0, 1.0)
    action_kinds: tuple[act.ActionKind, ...] | None = None
    #: per-stage metrics beyond the canonical six (MetricSpec or mappings of its fields), each
    #: replayed from the dataset column of its name (absent: its neutral value)
    extra_metrics: tuple[MetricSpec | dict[str, Any], ...] = ()
    #: add the history block to the observation (z deltas, time since the first open alarm and
    #: since the last deploy, the last completed action and whether it healed something)
    history: bool = False
    #: labels arrive late: the observed accuracy estimate follows the true accuracy with a
    #: first-order lag of this time constant, s (0: no lag); the SLO counts the true accuracy
    label_lag_s: float = LABEL_LAG_S
    #: scrape gaps: the probability that a stage's scrape fails at a step, so the observation
    #: repeats that stage's previous metrics (Prometheus' lookback); the SLO counts the truth
    scrape_gap_p: float = SCRAPE_GAP_P
    #: delayed metrics: the per-stage metrics an observation shows are this old, s (rounded to
    #: whole steps; 0: current); the SLO, the reward and the downtime count the current truth
    metric_lag_s: float = METRIC_LAG_S
    #: fault signatures fitted from real incidents (``healgym calibrate DATASET --out F``), in
    #: place of the built-in ones for the fault types the file covers; None: the library's
    faults: str | Path | None = None

    @classmethod
    def make(cls, config: PipelineConfig | None = None, where: str = "env",
             **kwargs: Any) -> PipelineConfig:
        """``config`` (default: the defaults) with ``kwargs`` replaced; an unknown keyword is a
        ConfigError naming the closest field."""
        import dataclasses

        known = [f.name for f in dataclasses.fields(cls)]
        if "max_episode_steps" in kwargs:
            raise ConfigError(
                f"{where}: max_episode_steps={kwargs['max_episode_steps']!r}: healgym has one time "
                "limit, episode_steps=N (time_limit=False for episodes that never end)")
        for key in kwargs:
            if key not in known:
                raise ConfigError(f"{where}: unknown argument {key!r}.{did_you_mean(key, known)}"
                                  f" Known: {known}")
        base = config if config is not None else cls()
        return dataclasses.replace(base, **kwargs) if kwargs else base


def build_model(config: PipelineConfig | None = None, **kwargs: Any) -> PipelineModel:
    """The pipeline model of ``config`` (or of the keyword arguments of :class:`PipelineConfig`)."""
    cfg = PipelineConfig.make(config, "build_model", **kwargs)
    dataset, stages, step_seconds = cfg.dataset, cfg.stages, cfg.step_seconds
    chaos, scenario, replay_incidents = cfg.chaos, cfg.scenario, cfg.replay_incidents
    reward, slo, healing_matrix = cfg.reward, cfg.slo, cfg.healing_matrix
    episode_steps, drift_period_s, time_range = (cfg.episode_steps, cfg.drift_period_s,
                                                 cfg.time_range)
    action_kinds = cfg.action_kinds
    specs = metric_specs(tuple(cfg.extra_metrics or ()))
    if step_seconds <= 0:
        raise ConfigError(f"step_seconds={step_seconds!r}: must be > 0 seconds")
    if episode_steps < 1:
        raise ConfigError(f"episode_steps={episode_steps!r}: must be >= 1")
    if not 0.0 <= cfg.scrape_gap_p < 1.0:
        raise ConfigError(f"scrape_gap_p={cfg.scrape_gap_p!r}: a probability in [0, 1) (the "
                          "chance a stage's scrape fails at a step; 0: never)")
    lag_steps = round(cfg.metric_lag_s / step_seconds) if cfg.metric_lag_s >= 0 else -1
    if not 0 <= lag_steps <= MAX_METRIC_LAG_STEPS:
        raise ConfigError(f"metric_lag_s={cfg.metric_lag_s!r}: the age of the metrics shown, "
                          f"in [0, {MAX_METRIC_LAG_STEPS} steps x step_seconds={step_seconds:g}] "
                          "seconds (0: current)")
    if not cfg.label_lag_s >= 0:
        raise ConfigError(f"label_lag_s={cfg.label_lag_s!r}: must be >= 0 seconds (0: labels "
                          "arrive at once)")
    if dataset is None:
        ds = default_dataset()
    elif isinstance(dataset, TelemetryDataset):
        ds = dataset
    else:
        ds = load_dataset(dataset)
    if stages == "call_graph":
        if not ds.call_graph:
            raise ConfigError(f"stages='call_graph', but dataset {ds.metadata.get('name')!r} "
                              "has no call graph; list the stages instead")
        measured = set(ds.stages)  # nodes of the graph without telemetry cannot be replayed
        stages = chain_from_call_graph([(a, b) for a, b in ds.call_graph
                                        if a in measured and b in measured])
    elif isinstance(stages, str):
        raise ConfigError(f"stages={stages!r}: give a list of entities, a {{stage: entity}} "
                          "mapping, or 'call_graph'")
    replay = ReplaySource.build(ds, stages, tuple(time_range), specs)  # type: ignore[arg-type]
    names = replay.stages
    edges = ds.call_graph
    ent_to_stage = dict(zip(replay.entities, names, strict=True))
    edges = [(ent_to_stage[a], ent_to_stage[b]) for a, b in edges
             if a in ent_to_stage and b in ent_to_stage]
    hops = hops_from_edges(names, edges or None)
    scen = None if scenario is None else load_scenario(scenario)
    if scen is not None:
        scen.events(names)  # validate stage names now, not mid-episode
    if replay_incidents and replay.fault_windows.empty:
        raise ConfigError(f"replay_incidents=True, but dataset {ds.metadata.get('name')!r} has no "
                          "labelled fault windows for the replayed stages")
    reward_cfg, slo_cfg = RewardConfig.from_value(reward), SLOConfig.from_value(slo)
    kinds = act.KINDS if action_kinds is None else act.validate_kinds(tuple(action_kinds))
    actions = act.action_table(names, kinds)
    S = len(names)
    model_stage = names.index("serve") if "serve" in names else max(S - 2, 0)
    if cfg.scrape_gap_p > 0 and S > 64:
        raise ConfigError(f"scrape_gap_p={cfg.scrape_gap_p!r} needs at most 64 stages (one "
                          f"random stream each), this pipeline has {S}: set scrape_gap_p=0")
    layout = ObsLayout(tuple(names), tuple(m.name for m in specs), tuple(a.name for a in actions),
                       history=bool(cfg.history))
    low, high = layout.bounds(Z_CLIP)
    med, inv = replay.median, 1.0 / replay.scale
    lo_b, hi_b = bounds(specs)
    lat_limit = max(slo_cfg.latency_factor * med[model_stage, LAT], replay.q_hi[model_stage, LAT])
    thr_limit = min(slo_cfg.throughput_min_factor * med[-1, THR], replay.q_lo[-1, THR])
    return PipelineModel(
        dataset_name=str(ds.metadata.get("name", "dataset")), replay=replay, stages=names,
        hops=hops, dt=float(step_seconds), episode_steps=int(episode_steps),
        time_limit=bool(cfg.time_limit),
        drift_every=max(1, int(round(drift_period_s / step_seconds))),
        chaos=ChaosConfig.from_value(chaos), scenario=scen, replay_incidents=bool(replay_incidents),
        reward=reward_cfg, slo=slo_cfg, healing=act.healing_matrix(healing_matrix, kinds),
        kinds=kinds, actions=actions, model_stage=model_stage, drift=default_drift_pool(),
        median=med, inv_scale=inv,
        lat_limit_z=float((lat_limit - med[model_stage, LAT]) * inv[model_stage, LAT]),
        thr_limit_z=float((thr_limit - med[-1, THR]) * inv[-1, THR]),
        err_limit_z=(slo_cfg.error_rate_max - med[:, ERR]) * inv[:, ERR],
        z_lo=np.maximum((lo_b - med) * inv, -Z_CLIP), z_hi=np.minimum((hi_b - med) * inv, Z_CLIP),
        base_cost=S * DEFAULT_REPLICAS * REPLICA_COST_PER_H,
        fault_cols={name: i for i, name in enumerate((*FAULT_NAMES, "unknown"))},
        layout=layout, observation_space=spaces.Box(low, high, dtype=np.float32),
        action_space=spaces.Discrete(len(actions)), metric_specs=specs,
        label_lag_s=float(cfg.label_lag_s), scrape_gap_p=float(cfg.scrape_gap_p),
        metric_lag_steps=int(lag_steps),
        fault_specs=ALL_SPECS if cfg.faults is None else calibrated_specs(
            load_signatures(cfg.faults)),
        faults_file=None if cfg.faults is None else str(cfg.faults),
    )


def affine(model: PipelineModel, factor: np.ndarray, add: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(za, zb)`` so that ``z = base * za + zb`` = (base * factor + add - median) / scale."""
    return factor * model.inv_scale, (add - model.median) * model.inv_scale


#: The columns of the ML health :func:`ml_health` writes (``effects.ml_now`` in the env).
HEALTH = ("accuracy", "null_rate", "schema_error_rate", "staleness_s", "covariate_shift",
          "cost_mult", "pred_shift")
H_ACC, H_NULL, H_SCHEMA, H_STALE, H_SHIFT, H_COST, H_PRED = range(len(HEALTH))


@compiled(inline="always")
def ml_health(ml, out):
    """The true ML health from ML effects ``ml`` (K,) into ``out`` (6,): accuracy, null rate,
    schema error rate, staleness (s), covariate shift, cost multiplier."""
    out[H_ACC] = min(max(BASE_ACCURACY + ml[ACC], 0.0), 1.0)
    out[H_NULL] = min(max(BASE_NULL_RATE + ml[NULL], 0.0), 1.0)
    out[H_SCHEMA] = min(max(ml[SCHEMA], 0.0), 1.0)
    out[H_STALE] = max(BASE_STALENESS_S + ml[STALE], 0.0)
    out[H_SHIFT] = ml[SHIFT]
    out[H_COST] = max(1.0 + ml[COST], 0.0)
    out[H_PRED] = max(ml[PRED], 0.0)


@compiled()
def _ml_health(ml, out):
    ml_health(ml, out)


def ml_signals(ml: np.ndarray) -> tuple[float, float, float, float]:
    """(accuracy, null rate, schema error rate, staleness s) from ML effects (K,): the env's
    own :func:`ml_health`."""
    out = np.empty(len(HEALTH))
    _ml_health(np.ascontiguousarray(ml, dtype=np.float64), out)
    return float(out[H_ACC]), float(out[H_NULL]), float(out[H_SCHEMA]), float(out[H_STALE])
