"""Actions and the healing matrix.

The action space is ``Discrete(3 * S + 8)`` for a pipeline of S stages, in this order::

    0                 noop
    1 .. S            restart_<stage>
    S+1 .. 2S         scale_up_<stage>
    2S+1 .. 3S        scale_down_<stage>
    3S+1 ..           rollback, retrain, backfill, switch_light, switch_back, shed_load, escalate

Each action kind has a duration before it takes effect, a cost, and a success probability per
fault type (the healing matrix). Stage actions (restart, scale) act on the faults of their stage;
the others act on the whole pipeline. When an action completes, each fault it targets is cleared
with the matrix probability, drawn from the episode's seeded uniforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from healgym.errors import ConfigError, did_you_mean
from healgym.sim.faults import FAULT_NAMES
from healgym.sim.jit import compiled

# Mask rules: when an action may be taken (one compiled function, :func:`mask_row`, for the
# env, serving and the offline tools).
ALWAYS = 0  # noop
FREE = 1  # no other action in flight
BELOW_MAX = 2  # free, and its stage has fewer than MAX_REPLICAS replicas
ABOVE_MIN = 3  # free, and its stage has more than MIN_REPLICAS replicas
CAN_ROLLBACK = 4  # free, and an older model version exists
NOT_LIGHT = 5  # free, and the full model serves
LIGHT = 6  # free, and the light model serves
NOT_SHEDDING = 7  # free, and load is not being shed
NOT_PAGED = 8  # no escalation with a human (escalation runs beside other actions)
MASK_RULES = ("always", "free", "below_max", "above_min", "can_rollback", "not_light", "light",
              "not_shedding", "not_paged")

# Effects on the pipeline when an action completes (beside healing its targets' faults); the
# compiled step dispatches on them (:func:`healgym.envs._kernel.complete`).
NO_EFFECT = 0
RESTARTING = 1  # the stage is down while the action runs (a side-effect slot)
ADD_REPLICA = 2
REMOVE_REPLICA = 3
PREVIOUS_VERSION = 4  # the model version goes back; an old model serves unless it healed
NEW_VERSION = 5  # a new version; the old model's effect ends
LIGHT_ON = 6
LIGHT_OFF = 7
SHED = 8  # sheds load for SHED_SECONDS
PAGE = 9  # a human works on it: runs beside the action in flight
EFFECTS = ("none", "restarting", "add_replica", "remove_replica", "previous_version",
           "new_version", "light_on", "light_off", "shed", "page")


@dataclass(frozen=True)
class ActionKind:
    """One kind of action: a row of :data:`KINDS`. ``target``: "stage" (one action per stage,
    healing that stage's faults) or "pipeline" (one action, healing any stage's)."""

    name: str
    target: str
    duration_s: float
    cost: float
    mask: int
    effect: int
    description: str

    @property
    def per_stage(self) -> bool:
        return self.target == "stage"


KINDS: tuple[ActionKind, ...] = (
    ActionKind("noop", "pipeline", 0.0, 0.0, ALWAYS, NO_EFFECT, "Do nothing; watch."),
    ActionKind("restart", "stage", 30.0, 1.0, FREE, RESTARTING,
               "Restart the stage's processes; the stage is down while it restarts."),
    ActionKind("scale_up", "stage", 60.0, 5.0, BELOW_MAX, ADD_REPLICA,
               "Add a replica (more capacity, more running cost)."),
    ActionKind("scale_down", "stage", 30.0, 1.0, ABOVE_MIN, REMOVE_REPLICA,
               "Remove a replica (less cost, less capacity)."),
    ActionKind("rollback", "pipeline", 60.0, 2.0, CAN_ROLLBACK, PREVIOUS_VERSION,
               "Roll the model and its release back to the previous version."),
    ActionKind("retrain", "pipeline", 1200.0, 50.0, FREE, NEW_VERSION,
               "Retrain the model on fresh data and deploy it."),
    ActionKind("backfill", "pipeline", 600.0, 20.0, FREE, NO_EFFECT,
               "Reprocess / backfill the data of the window."),
    ActionKind("switch_light", "pipeline", 30.0, 1.0, NOT_LIGHT, LIGHT_ON,
               "Switch serving to the lighter model."),
    ActionKind("switch_back", "pipeline", 30.0, 1.0, LIGHT, LIGHT_OFF,
               "Switch serving back to the full model."),
    ActionKind("shed_load", "pipeline", 10.0, 5.0, NOT_SHEDDING, SHED,
               "Open the circuit breaker: shed 30 % of traffic for 10 minutes."),
    ActionKind("escalate", "pipeline", 900.0, 100.0, NOT_PAGED, PAGE,
               "Page a human, who diagnoses and fixes most faults, slowly and expensively."),
)
KIND_INDEX = {k.name: i for i, k in enumerate(KINDS)}
SHED_SECONDS = 600.0
#: The share of traffic the circuit breaker turns away (``_shedding``'s throughput drop; the
#: reward charges it as that share of an SLO violation).
SHED_SHARE = 0.3

#: Success probability of each action kind on each fault type; absent entries are 0.
DEFAULT_HEALING: dict[str, dict[str, float]] = {
    "process_crash": {"restart": 0.95, "scale_up": 0.6, "escalate": 0.98},
    "crash_loop": {"rollback": 0.9, "escalate": 0.95},  # a restart relieves it for a minute
    "memory_leak": {"restart": 0.9, "scale_up": 0.2, "escalate": 0.95},
    "cpu_contention": {"restart": 0.6, "scale_up": 0.85, "escalate": 0.9},
    "network_delay": {"restart": 0.3, "escalate": 0.9},
    "error_spike": {"rollback": 0.9, "restart": 0.1, "escalate": 0.9},
    "request_surge": {"scale_up": 0.85, "shed_load": 0.95, "escalate": 0.8},
    "gpu_oom": {"switch_light": 0.9, "restart": 0.25, "scale_up": 0.3, "escalate": 0.9},
    "bad_model_deploy": {"rollback": 0.95, "retrain": 0.7, "escalate": 0.9},
    "covariate_drift": {"retrain": 0.85, "escalate": 0.6},
    "concept_drift": {"retrain": 0.8, "escalate": 0.5},
    "schema_mismatch": {"rollback": 0.85, "backfill": 0.3, "escalate": 0.9},
    "upstream_outage": {"backfill": 0.6, "escalate": 0.8},
    "null_surge": {"backfill": 0.85, "retrain": 0.2, "escalate": 0.8},
    "stale_feature_store": {"backfill": 0.9, "restart": 0.5, "escalate": 0.9},
    "sink_write_failure": {"restart": 0.7, "escalate": 0.9},
    "cost_overrun": {"scale_down": 0.85, "escalate": 0.9},
    "leaky_release": {"rollback": 0.95, "escalate": 0.95},  # a restart resets its memory only
    "slow_dependency": {"restart": 0.7, "scale_up": 0.6, "escalate": 0.9},  # on its own stage
    "unknown": {"restart": 0.5, "rollback": 0.3, "escalate": 0.9},
}


def healing_matrix(overrides: dict[str, dict[str, float]] | None = None,
                   kinds: tuple[ActionKind, ...] = KINDS) -> np.ndarray:
    """The (kinds x faults) success-probability matrix; columns follow FAULT_NAMES + 'unknown'.

    ``overrides`` replaces rows of the default, e.g. ``{"process_crash": {"restart": 1.0}}``
    (a fault's given row replaces its whole default row). Rows follow ``kinds``.
    """
    faults = (*FAULT_NAMES, "unknown")
    index = {k.name: i for i, k in enumerate(kinds)}
    table = dict(DEFAULT_HEALING)
    for fault, row in (overrides or {}).items():
        if fault not in faults:
            raise ConfigError(
                f"healing_matrix: unknown fault {fault!r}.{did_you_mean(fault, faults)} "
                f"Known faults: {list(faults)}"
            )
        for kind, p in row.items():
            if kind not in index:
                raise ConfigError(
                    f"healing_matrix[{fault!r}]: unknown action {kind!r}."
                    f"{did_you_mean(kind, index)} Known actions: {list(index)}"
                )
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(
                    f"healing_matrix[{fault!r}][{kind!r}] = {p!r}: a probability must be in "
                    "[0, 1]"
                )
        table[fault] = dict(row)
    matrix = np.zeros((len(kinds), len(faults)))
    for j, fault in enumerate(faults):
        for kind, p in table.get(fault, {}).items():
            if kind in index:  # a default row may name a kind this model leaves out
                matrix[index[kind], j] = float(p)
    return matrix


@dataclass(frozen=True)
class Action:
    index: int
    name: str
    kind: int  # index into KINDS
    stage: int  # stage index for per-stage actions, -1 otherwise


def action_table(stages: list[str], kinds: tuple[ActionKind, ...] = KINDS) -> list[Action]:
    """All actions for a pipeline of ``stages``, in action-space order: the kinds in order, a
    stage-targeted kind once per stage. A kind that pages (escalation) must come last."""
    out: list[Action] = []
    for i, k in enumerate(kinds):
        for s, name in enumerate(stages) if k.per_stage else [(-1, "")]:
            out.append(Action(len(out), f"{k.name}_{name}" if s >= 0 else k.name, i, s))
    return out


@compiled(inline="always")
def mask_row(out, rule, stage, cost, free, paged, replicas, can_rollback, light, shedding,
             remaining, max_replicas, min_replicas):
    """The action mask of one pipeline into ``out`` (A,) int8: each action's rule (``rule``,
    ``stage`` (-1: pipeline) and ``cost`` per action); ``remaining``: the cost budget left
    (``inf``: none), above which no action but noop is allowed."""
    for q in range(out.size):
        r = rule[q]
        if r == ALWAYS:
            out[q] = 1
            continue
        if r == NOT_PAGED:
            ok = not paged
        else:
            ok = free
            if r == BELOW_MAX:
                ok = ok and replicas[stage[q]] < max_replicas
            elif r == ABOVE_MIN:
                ok = ok and replicas[stage[q]] > min_replicas
            elif r == CAN_ROLLBACK:
                ok = ok and can_rollback
            elif r == NOT_LIGHT:
                ok = ok and not light
            elif r == LIGHT:
                ok = ok and light
            elif r == NOT_SHEDDING:
                ok = ok and not shedding
        if cost[q] > remaining:
            ok = False
        out[q] = 1 if ok else 0


@compiled()
def _mask_rows(out, rule, stage, cost, free, paged, replicas, can_rollback, light, shedding,
               remaining, max_replicas, min_replicas):
    for i in range(out.shape[0]):
        mask_row(out[i], rule, stage, cost, free[i], paged[i], replicas[i], can_rollback[i],
                 light[i], shedding[i], remaining[i], max_replicas, min_replicas)


def validate_kinds(kinds: tuple[ActionKind, ...]) -> tuple[ActionKind, ...]:
    """Check an action-kind table: noop first, one paging kind, last, known rules and effects."""
    kinds = tuple(kinds)
    names = [k.name for k in kinds]
    problems = []
    if not kinds or kinds[0].mask != ALWAYS or kinds[0].effect != NO_EFFECT:
        problems.append("the first kind must be noop (mask 'always', no effect)")
    pages = [k.name for k in kinds if k.effect == PAGE]
    if len(pages) != 1 or kinds[-1].effect != PAGE:
        problems.append(f"exactly one kind, the last, must page a human (found {pages})")
    if len(set(names)) != len(names):
        problems.append(f"duplicate kind names in {names}")
    for k in kinds:
        if k.target not in ("stage", "pipeline"):
            problems.append(f"{k.name}: target {k.target!r} is not 'stage' or 'pipeline'")
        if not 0 <= k.mask < len(MASK_RULES) or not 0 <= k.effect < len(EFFECTS):
            problems.append(f"{k.name}: mask {k.mask!r} / effect {k.effect!r} unknown")
        if k.effect in (RESTARTING, ADD_REPLICA, REMOVE_REPLICA) and k.target != "stage":
            problems.append(f"{k.name}: effect {EFFECTS[k.effect]!r} needs target 'stage'")
    if problems:
        raise ConfigError("action kinds: " + "; ".join(problems))
    return kinds


def action_arrays(actions: list[Action], kinds: tuple[ActionKind, ...] = KINDS
                  ) -> dict[str, np.ndarray]:
    """Per-action arrays the compiled code reads: kind, stage, cost, duration, rule, effect."""
    return {
        "kind": np.array([a.kind for a in actions], np.int64),
        "stage": np.array([a.stage for a in actions], np.int64),
        "cost": np.array([kinds[a.kind].cost for a in actions], np.float64),
        "duration": np.array([kinds[a.kind].duration_s for a in actions], np.float64),
        "rule": np.array([kinds[a.kind].mask for a in actions], np.int64),
        "effect": np.array([kinds[a.kind].effect for a in actions], np.int64),
    }


def action_mask(actions: list[Action], *, in_flight: Any, replicas: Any, can_rollback: Any,
                light: Any, shedding: Any = False, paged: Any = False,
                remaining: Any = np.inf, kinds: tuple[ActionKind, ...] = KINDS) -> np.ndarray:
    """:func:`mask_row` for numpy callers (serving, the offline tools): each argument a scalar
    (one pipeline) or an (N,) array (``replicas``: (S,) or (N, S)); returns (A,) or (N, A)."""
    from healgym.sim.model import MAX_REPLICAS, MIN_REPLICAS

    reps = np.asarray(replicas, dtype=np.float64)
    one = reps.ndim == 1
    reps = np.atleast_2d(reps)
    n = len(reps)

    def col(x: Any, dtype: Any) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=dtype), (n,)))

    arr = action_arrays(actions, kinds)
    out = np.zeros((n, len(actions)), dtype=np.int8)
    _mask_rows(out, arr["rule"], arr["stage"], arr["cost"], col(~np.asarray(in_flight, bool),
               np.bool_), col(paged, np.bool_), np.ascontiguousarray(reps),
               col(can_rollback, np.bool_), col(light, np.bool_), col(shedding, np.bool_),
               col(remaining, np.float64), float(MAX_REPLICAS), float(MIN_REPLICAS))
    return out[0] if one else out
