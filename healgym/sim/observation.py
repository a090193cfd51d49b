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
from typing import Any

import numpy as np

from healgym.sim.jit import compiled
from healgym.sim.layout import CONTEXT, CONTEXT_HIGH, CONTEXT_INDEX, ObsLayout
from healgym.sim.model import MAX_REPLICAS, PipelineModel
from healgym.sim.reward import slo_violated_z

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
    escalation_in_flight: bool = False  # a paged human is working on it
    shedding: bool = False  # the circuit breaker sheds load
    since_deploy_s: float = 3600.0  # since the last deploy (a release, rollback or retrain)
    pred_shift: float = 0.0  # PSI of the prediction distribution against the model's reference
    last_action: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def context(self) -> tuple[float, ...]:
        values = (self.accuracy, self.drift_ks, min(self.drift_psi, 10.0), self.null_rate,
                  self.schema_error_rate, min(self.staleness_s / 3600.0, 24.0),
                  min(self.cost_factor, 10.0), min(self.since_last_action_s / 3600.0, 1.0),
                  float(self.action_in_flight), float(self.light_model),
                  float(self.can_rollback), float(self.escalation_in_flight),
                  float(self.shedding), min(self.since_deploy_s / 3600.0, 1.0),
                  min(self.pred_shift, 10.0))
        return tuple(float(np.clip(v, 0.0, hi)) for v, hi in zip(values, CONTEXT_HIGH,
                                                                   strict=True))


def encode(model: PipelineModel, s: Signals, history: HistoryBuilder | None = None,
           now: float = 0.0) -> np.ndarray:
    """The observation a policy trained on ``model`` expects, from measured signals. A model
    with the history block (``history=True``) needs ``history``, which remembers the readings
    before this one (serving keeps one per adapter)."""
    if model.layout.history and history is None:
        from healgym.errors import ConfigError

        raise ConfigError("this pipeline's observation has the history block (history=True): "
                          "encode it with a HistoryBuilder, which remembers the readings "
                          "before this one (the serving adapter keeps one)")
    S, M = model.n_stages, model.n_metrics
    raw = np.asarray(s.raw, dtype=float)
    if raw.shape != (S, M):
        raise ValueError(f"raw metrics have shape {raw.shape}, this pipeline needs ({S}, {M}) "
                         f"(stages {model.stages}, metrics {list(model.metrics)})")
    obs = np.zeros(model.n_obs, dtype=np.float32)
    obs[model.layout.z.slice] = metric_z(model, raw).ravel()
    replica_frac = np.clip(np.asarray(s.replicas, dtype=float) / MAX_REPLICAS, 0.0, 1.0)
    pack_tail(obs, model.layout, replica_frac, s.context(), int(s.last_action))
    if history is not None and model.layout.history:
        history.fill(model, obs, now)
    return obs


def alarm(model: PipelineModel, obs: np.ndarray) -> bool:
    """Whether the env's monitors would alarm on ``obs``: the SLO (as the observation shows
    it), any metric's |z| above the detection threshold, the input PSI or the prediction shift
    above 0.25, or the accuracy estimate 0.05 below its base (the kernel's detection rule)."""
    from healgym.sim.model import BASE_ACCURACY, DETECT_Z

    lay = model.layout
    return bool(obs_violates_slo(model, obs)[0] or np.abs(obs[lay.z.slice]).max() > DETECT_Z
                or obs[lay.ctx("drift_psi")] > 0.25 or obs[lay.ctx("pred_shift")] > 0.25
                or obs[lay.ctx("accuracy")] < BASE_ACCURACY - 0.05)


@dataclass
class HistoryBuilder:
    """The history block (docs/environment.md, section 2) from successive readings, as serving
    sees them: each z-score's change since the previous reading; the time since the first
    alarm of the alarm still standing (the env counts its open incidents' detections: here an
    alarm that clears ends it); the last completed action and whether its target recovered
    (the env knows whether it healed; here: no alarm on its target at the first reading after
    it completed, so a metric lag delays this by that lag)."""

    z_prev: np.ndarray | None = None
    alarm_since: float | None = None
    last_done: int = 0
    last_done_fixed: bool = False
    _completing: tuple[int, int | None] | None = None  # (action, target stage or None)

    def completed(self, action: int, stage: int | None) -> None:
        """An action finished: the next reading decides whether its target recovered."""
        self._completing = (action, stage)

    def fill(self, model: PipelineModel, obs: np.ndarray, now: float) -> None:
        from healgym.sim.model import DETECT_Z

        lay = model.layout
        z = obs[lay.z.slice].copy()
        obs[lay.dz.slice] = 0.0 if self.z_prev is None else z - self.z_prev
        self.z_prev = z
        alarmed = alarm(model, obs)
        if alarmed and self.alarm_since is None:
            self.alarm_since = now
        elif not alarmed:
            self.alarm_since = None
        if self._completing is not None:
            action, stage = self._completing
            zz = lay.z_block(obs[None])[0]
            self.last_done = action
            self.last_done_fixed = (bool(np.abs(zz[stage]).max() <= DETECT_Z)
                                    if stage is not None else not alarmed)
            self._completing = None
        obs[lay.hst("since_alarm_h")] = 0.0 if self.alarm_since is None else \
            min((now - self.alarm_since) / 3600.0, 1.0)
        obs[lay.hst("last_done_fixed")] = float(self.last_done_fixed)
        obs[lay.done.slice] = 0.0
        obs[lay.done.start + self.last_done] = 1.0


def slo_rows(model: PipelineModel, z: np.ndarray, accuracy: np.ndarray | float,
             staleness_s: np.ndarray | float, null_rate: np.ndarray | float,
             schema_error_rate: np.ndarray | float, cost_factor: np.ndarray | float
             ) -> np.ndarray:
    """The env's own compiled SLO test (:func:`healgym.sim.reward.slo_violated_z`) on N
    pipelines: ``z`` (N, S*M) metric z-scores, the rest (N,)."""
    from healgym.sim.faults import ERR, LAT, THR

    slo = model.slo
    z = np.ascontiguousarray(np.atleast_2d(z), dtype=np.float64)
    n = len(z)

    def col(x: Any) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)))

    out = np.zeros(n, dtype=np.bool_)
    _slo_rows(out, z, model.n_stages, model.n_metrics, model.model_stage, LAT, THR, ERR,
              float(model.lat_limit_z), float(model.thr_limit_z),
              np.ascontiguousarray(model.err_limit_z, dtype=np.float64), col(accuracy),
              col(staleness_s), col(null_rate), col(schema_error_rate), col(cost_factor),
              float(slo.accuracy_min), float(slo.staleness_max_s), float(slo.null_rate_max),
              float(slo.schema_error_max), float(slo.cost_factor_max))
    return out


@compiled()
def _slo_rows(out, z, S, M, model_stage, lat, thr, err, lat_limit, thr_limit, err_limit, acc,
              stale, null, schema, cost, acc_min, stale_max, null_max, schema_max, cost_max):
    for i in range(out.size):
        out[i] = slo_violated_z(z[i], S, M, model_stage, lat, thr, err, lat_limit, thr_limit,
                                err_limit, acc[i], stale[i], null[i], schema[i], cost[i],
                                acc_min, stale_max, null_max, schema_max, cost_max)


def slo_violated(model: PipelineModel, s: Signals) -> bool:
    """The env's SLO test on measured signals (clipped z-scores, as the policy sees them):
    latency at the model stage, delivered throughput, any stage's error rate, and the ML and
    data SLOs."""
    z = metric_z(model, s.raw).ravel()
    return bool(slo_rows(model, z, s.accuracy, s.staleness_s, s.null_rate,
                         s.schema_error_rate, s.cost_factor)[0])


def obs_violates_slo(model: PipelineModel, obs: np.ndarray) -> np.ndarray:
    """:func:`slo_violated` on encoded observations (N, n_obs): what an operator, or a log
    analysis, can tell from the observation alone (the env itself also knows the true,
    noise-free accuracy)."""
    obs = np.atleast_2d(np.asarray(obs, dtype=float))
    lay = model.layout

    def c(name: str) -> np.ndarray:
        return obs[:, lay.ctx(name)]

    return slo_rows(model, obs[:, lay.z.slice], c("accuracy"), c("staleness_h") * 3600.0,
                    c("null_rate"), c("schema_error_rate"), c("cost_factor"))
