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

import numpy as np

from healgym.errors import ConfigError, did_you_mean
from healgym.sim.faults import FAULT_NAMES


@dataclass(frozen=True)
class ActionKind:
    name: str
    per_stage: bool
    duration_s: float
    cost: float
    description: str


KINDS: tuple[ActionKind, ...] = (
    ActionKind("noop", False, 0.0, 0.0, "Do nothing; watch."),
    ActionKind("restart", True, 30.0, 1.0,
               "Restart the stage's processes; the stage is down while it restarts."),
    ActionKind("scale_up", True, 60.0, 5.0, "Add a replica (more capacity, more running cost)."),
    ActionKind("scale_down", True, 30.0, 0.0, "Remove a replica (less cost, less capacity)."),
    ActionKind("rollback", False, 60.0, 2.0,
               "Roll the model and its release back to the previous version."),
    ActionKind("retrain", False, 1200.0, 50.0, "Retrain the model on fresh data and deploy it."),
    ActionKind("backfill", False, 600.0, 20.0, "Reprocess / backfill the data of the window."),
    ActionKind("switch_light", False, 30.0, 1.0, "Switch serving to the lighter model."),
    ActionKind("switch_back", False, 30.0, 1.0, "Switch serving back to the full model."),
    ActionKind("shed_load", False, 10.0, 5.0,
               "Open the circuit breaker: shed 30 % of traffic for 10 minutes."),
    ActionKind("escalate", False, 900.0, 100.0,
               "Page a human, who diagnoses and fixes most faults, slowly and expensively."),
)
KIND_INDEX = {k.name: i for i, k in enumerate(KINDS)}
SHED_SECONDS = 600.0

#: Success probability of each action kind on each fault type; absent entries are 0.
DEFAULT_HEALING: dict[str, dict[str, float]] = {
    "process_crash": {"restart": 0.95, "scale_up": 0.6, "escalate": 0.98},
    "crash_loop": {"restart": 0.05, "rollback": 0.9, "escalate": 0.95},
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
    "unknown": {"restart": 0.5, "rollback": 0.3, "escalate": 0.9},
}


def healing_matrix(overrides: dict[str, dict[str, float]] | None = None) -> np.ndarray:
    """The (kinds x faults) success-probability matrix; columns follow FAULT_NAMES + 'unknown'.

    ``overrides`` replaces rows of the default, e.g. ``{"process_crash": {"restart": 1.0}}``
    (a fault's given row replaces its whole default row).
    """
    faults = (*FAULT_NAMES, "unknown")
    table = dict(DEFAULT_HEALING)
    for fault, row in (overrides or {}).items():
        if fault not in faults:
            raise ConfigError(
                f"healing_matrix: unknown fault {fault!r}.{did_you_mean(fault, faults)} "
                f"Known faults: {list(faults)}"
            )
        for kind, p in row.items():
            if kind not in KIND_INDEX:
                raise ConfigError(
                    f"healing_matrix[{fault!r}]: unknown action {kind!r}."
                    f"{did_you_mean(kind, KIND_INDEX)} Known actions: {list(KIND_INDEX)}"
                )
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(
                    f"healing_matrix[{fault!r}][{kind!r}] = {p!r}: a probability must be in "
                    "[0, 1]"
                )
        table[fault] = dict(row)
    matrix = np.zeros((len(KINDS), len(faults)))
    for j, fault in enumerate(faults):
        for kind, p in table.get(fault, {}).items():
            matrix[KIND_INDEX[kind], j] = float(p)
    return matrix


@dataclass(frozen=True)
class Action:
    index: int
    name: str
    kind: int  # index into KINDS
    stage: int  # stage index for per-stage actions, -1 otherwise


def action_table(stages: list[str]) -> list[Action]:
    """All actions for a pipeline of ``stages``, in action-space order."""
    out = [Action(0, "noop", KIND_INDEX["noop"], -1)]
    for kind in ("restart", "scale_up", "scale_down"):
        for s, name in enumerate(stages):
            out.append(Action(len(out), f"{kind}_{name}", KIND_INDEX[kind], s))
    for kind in ("rollback", "retrain", "backfill", "switch_light", "switch_back", "shed_load",
                 "escalate"):
        out.append(Action(len(out), kind, KIND_INDEX[kind], -1))
    return out


def heal_outcome(u: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Which heal attempts succeed: uniform draws ``u`` against probabilities ``p``."""
    return u < p
