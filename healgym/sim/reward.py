"""Service-level objectives and the reward.

The SLO is violated in a step when any of these holds (thresholds configurable):

* latency_p95_ms of the SLO stage above ``latency_factor`` x its healthy median (and above its
  healthy 99.9 % quantile, so real telemetry's own spikes are not violations);
* error_rate of any stage above ``error_rate_max``;
* throughput_rps of the last stage below ``throughput_min_factor`` x its healthy median (and
  below its healthy 0.1 % quantile);
* model accuracy below ``accuracy_min``; feature staleness above ``staleness_max_s``;
  null rate above ``null_rate_max``; schema error rate above ``schema_error_max``;
  running cost above ``cost_factor_max`` x its baseline.

Reward per step: ``-slo_violation_per_s * dt`` when violated; while load is shed and the SLO
otherwise holds, the shed share of that (``shed_share``: the requests turned away are unserved
users, not errors); ``+recovery_bonus * (1 - ttr / recovery_horizon_s)`` for each incident an
action resolves ``ttr`` seconds after its onset (linear, 0 from the horizon on: a correct 60 s
fix earns most of it, a fault that ends by itself earns nothing); minus each action's cost (times
``action_cost_weight``); minus the running cost above baseline (times ``infra_cost_weight``, in
cost units per hour; running below baseline earns nothing); minus ``invalid_action_penalty`` for
a masked action.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

from healgym.errors import ConfigError, reject_unknown_keys
from healgym.sim.jit import compiled

T = TypeVar("T")


def _from_mapping(cls: type[T], value: Any, key: str) -> T:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping; got {value!r}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    reject_unknown_keys(value, names, key)
    kwargs = {}
    for k, v in value.items():
        if v is not None:
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{key}.{k} = {v!r}: expected a number") from None
        kwargs[k] = v
    return cls(**kwargs)


@dataclass(frozen=True)
class SLOConfig:
    latency_factor: float = 3.0
    error_rate_max: float = 0.05
    throughput_min_factor: float = 0.5
    accuracy_min: float = 0.85
    staleness_max_s: float = 1800.0
    null_rate_max: float = 0.1
    schema_error_max: float = 0.05
    cost_factor_max: float = 1.5

    @classmethod
    def from_value(cls, value: Any) -> SLOConfig:
        return _from_mapping(cls, value, "slo")


@dataclass(frozen=True)
class RewardConfig:
    slo_violation_per_s: float = 10.0
    recovery_bonus: float = 100.0
    recovery_horizon_s: float = 600.0
    action_cost_weight: float = 1.0
    infra_cost_weight: float = 1.0
    invalid_action_penalty: float = 1.0
    cost_budget: float | None = None  # total action cost allowed per episode; None: no budget

    @classmethod
    def from_value(cls, value: Any) -> RewardConfig:
        if isinstance(value, dict):
            for old, new in (("fast_resolution_bonus", "recovery_bonus"),
                             ("fast_resolution_s", "recovery_horizon_s")):
                if old in value:
                    raise ConfigError(
                        f"reward.{old}: renamed in PipelineHeal-v1; use reward.{new} (the bonus "
                        "now falls linearly with the time to recovery, to 0 at the horizon)")
        cfg = _from_mapping(cls, value, "reward")
        if cfg.recovery_horizon_s <= 0:
            raise ConfigError(f"reward.recovery_horizon_s={cfg.recovery_horizon_s!r}: must be "
                              "> 0 seconds")
        return cfg


# --------------------------------------------------------------------------- compiled, shared
# The SLO test and the reward, written once: the env's compiled step calls them, and serving and
# the offline tools call them through numpy wrappers (healgym.sim.observation).
@compiled(inline="always")
def slo_violated_z(z, n_stages, n_metrics, model_stage, lat, thr, err, lat_limit_z, thr_limit_z,
                   err_limit_z, accuracy, staleness_s, null_rate, schema_error_rate, cost_factor,
                   accuracy_min, staleness_max_s, null_rate_max, schema_error_max,
                   cost_factor_max):
    """The SLO test on one pipeline: ``z`` (S*M,) its metric z-scores, stage-major."""
    M = n_metrics
    violated = (z[model_stage * M + lat] > lat_limit_z
                or z[(n_stages - 1) * M + thr] < thr_limit_z)
    for d in range(n_stages):
        if z[d * M + err] > err_limit_z[d]:
            violated = True
    return (violated or accuracy < accuracy_min or staleness_s > staleness_max_s
            or null_rate > null_rate_max or schema_error_rate > schema_error_max
            or cost_factor > cost_factor_max)


@compiled(inline="always")
def action_reward(invalid, cost, invalid_penalty, cost_weight):
    """The reward of issuing an action: its cost, or the masked-action penalty."""
    r = 0.0
    if invalid:
        r -= invalid_penalty
    else:
        r -= cost_weight * cost
    return r


@compiled(inline="always")
def recovery_bonus(ttr, bonus, horizon_s):
    """The bonus for an incident an action resolved ``ttr`` seconds after its onset."""
    return bonus * max(0.0, 1.0 - ttr / horizon_s)


@compiled(inline="always")
def state_reward(r, violated, shed_share, dt, running_cost, base_cost, slo_per_s, infra_weight):
    """``r`` (the action's reward plus any recovery bonus) with the step's SLO terms (the
    whole rate when violated, else the share of traffic shed) and running cost above
    baseline."""
    if violated:
        r -= slo_per_s * dt
    elif shed_share > 0.0:
        r -= slo_per_s * shed_share * dt
    if running_cost > base_cost:
        r -= infra_weight * (running_cost - base_cost) * dt / 3600.0
    return r
