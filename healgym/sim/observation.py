"""The observation, as one set of functions shared by the simulator and the serving adapter.

The env's compiled step (:mod:`healgym.envs._kernel`) writes observations in this layout; the
serving adapter builds the same observation from real metrics with :func:`encode`
(:func:`clip_z`, :func:`pack_tail`), with the per-stage baseline (median, scale) the policy was
trained against. A test decodes the env's own observations to raw signals and encodes them
again, and requires the same vector: training and serving cannot drift apart.

Layout: :class:`healgym.sim.layout.ObsLayout` (``model.layout``): per-stage metric z-scores
(stage-major), replicas / MAX_REPLICAS, the ML and context signals, the last action one-hot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from healgym.sim.faults import METRICS
from healgym.sim.layout import CONTEXT, CONTEXT_HIGH, CONTEXT_INDEX, ObsLayout
from healgym.sim.model import MAX_REPLICAS, PipelineModel

__all__ = ["CONTEXT", "CONTEXT_INDEX", "Signals", "clip_z", "encode", "metric_z",
           "obs_violates_slo", "pack_tail", "slo_violated"]


def clip_z(model: PipelineModel, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """z-scores clipped to what the metric's physical range allows (and +-Z_CLIP)."""
    out = np.maximum(z, model.z_lo, out=out)
    return np.minimum(out, model.z_hi, out=out)


def metric_z(model: PipelineModel, raw: np.ndarray) -> np.ndarray:
    """Raw per-stage metrics (S, M) in dashboard units -> clipped robust z-scores (S, M)."""
    return clip_z(model, (np.asarray(raw, dtype=float) - model.median) * model.inv_scale)


def pack_tail(obs: np.ndarray, layout: ObsLayout, replica_frac: np.ndarray,
              context: tuple[float, ...] | np.ndarray, last_action: int) -> None:
    """Write replicas, the context signals and the last action into ``obs`` (in place)."""
    obs[layout.replicas.slice] = replica_frac
    obs[layout.context.slice] = context
    obs[layout.last.slice] = 0.0
    obs[layout.last.start + last_action] = 1.0


@dataclass
class Signals:
    """What the serving adapter measured, in dashboard units."""

    raw: np.ndarray  # (S, M) per stage, in METRICS order
    replicas: np.ndarray  # (S,) worker/replica count per stage
    accuracy: float = 0.95
    drift_ks: float = 0.0
    drift_psi: float = 0.0
    null_rate: float = 0.0
    schema_error_rate: float = 0.0
    staleness_s: float = 0.0
    cost_factor: float = 1.0
    since_last_action_s: float = 3600.0
    action_in_flight: bool = False
    light_model: bool = False
    can_rollback: bool = False
    last_action: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def context(self) -> tuple[float, ...]:
        values = (self.accuracy, self.drift_ks, min(self.drift_psi, 10.0), self.null_rate,
                  self.schema_error_rate, min(self.staleness_s / 3600.0, 24.0),
                  min(self.cost_factor, 10.0), min(self.since_last_action_s / 3600.0, 1.0),
                  float(self.action_in_flight), float(self.light_model),
                  float(self.can_rollback))
        return tuple(float(np.clip(v, 0.0, hi)) for v, hi in zip(values, CONTEXT_HIGH,
                                                                   strict=True))


def encode(model: PipelineModel, s: Signals) -> np.ndarray:
    """The observation a policy trained on ``model`` expects, from measured signals."""
    S, M = model.n_stages, len(METRICS)
    raw = np.asarray(s.raw, dtype=float)
    if raw.shape != (S, M):
        raise ValueError(f"raw metrics have shape {raw.shape}, this pipeline needs ({S}, {M}) "
                         f"(stages {model.stages}, metrics {list(METRICS)})")
    obs = np.zeros(model.n_obs, dtype=np.float32)
    obs[model.layout.z.slice] = metric_z(model, raw).ravel()
    replica_frac = np.clip(np.asarray(s.replicas, dtype=float) / MAX_REPLICAS, 0.0, 1.0)
    pack_tail(obs, model.layout, replica_frac, s.context(), int(s.last_action))
    return obs


def slo_violated(model: PipelineModel, s: Signals) -> bool:
    """The env's SLO test on measured signals: latency at the model stage, delivered
    throughput, any stage's error rate, and the ML and data SLOs."""
    from healgym.sim.faults import ERR, LAT, THR

    z = metric_z(model, s.raw)
    slo = model.slo
    return bool(z[model.model_stage, LAT] > model.lat_limit_z or z[-1, THR] < model.thr_limit_z
                or (z[:, ERR] > model.err_limit_z).any() or s.accuracy < slo.accuracy_min
                or s.staleness_s > slo.staleness_max_s or s.null_rate > slo.null_rate_max
                or s.schema_error_rate > slo.schema_error_max
                or s.cost_factor > slo.cost_factor_max)


def obs_violates_slo(model: PipelineModel, obs: np.ndarray) -> np.ndarray:
    """:func:`slo_violated` on encoded observations (N, n_obs): what an operator, or a log
    analysis, can tell from the observation alone (the env itself also knows the true,
    noise-free accuracy)."""
    from healgym.sim.faults import ERR, LAT, THR

    obs = np.atleast_2d(np.asarray(obs, dtype=float))
    z = model.layout.z_block(obs)
    ctx = obs[:, model.layout.context.slice]
    slo = model.slo
    c = {k: ctx[:, i] for k, i in CONTEXT_INDEX.items()}
    return ((z[:, model.model_stage, LAT] > model.lat_limit_z) | (z[:, -1, THR] < model.thr_limit_z)
            | (z[:, :, ERR] > model.err_limit_z).any(axis=1) | (c["accuracy"] < slo.accuracy_min)
            | (c["staleness_h"] * 3600.0 > slo.staleness_max_s)
            | (c["null_rate"] > slo.null_rate_max)
            | (c["schema_error_rate"] > slo.schema_error_max)
            | (c["cost_factor"] > slo.cost_factor_max))
