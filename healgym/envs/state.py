"""The batched env's state: one table of fields, grouped by concept into named records.

Every per-env array of :class:`healgym.envs.vector.PipelineHealVectorEnv` is a row of
:data:`FIELDS`: its group, name, dtype, shape (symbolic dimensions, resolved by
:func:`dims`), value at allocation and, where it has one, the value an episode starts from. The
compiled kernels take the state as one :class:`State` record of group records
(``s.slots.kind[i, f]``, ``s.actions.in_flight[i]``), never by position; numba compiles a
namedtuple's fields to the same struct members a plain tuple has, so names cost nothing.

Allocation (:func:`allocate`), the episode-start values (tested against the compiled reset),
the episode-metric snapshot (:data:`METRIC_FIELDS`) and pickling come from this table. To add a
field: one row here, then read or write it by name in :mod:`healgym.envs._kernel`.

The records are module-level namedtuple classes, so numba's on-disk cache recognises their types
in every process (a class made per call recompiles every kernel).
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import numpy as np

from healgym.sim.model import BASE_ACCURACY, DEFAULT_REPLICAS, F_MAX, HEALTH, I_MAX

INF = np.inf
NATURAL = -1  # an incident resolved by its natural end (``incidents.by``)
UNRESOLVED = -2
N_FAULT_PER_INCIDENT = 4
# the columns of the small per-env tables
DRIFT_KS, DRIFT_PSI = 0, 1  # pipeline.drift
SP_STAGE, SP_FROM, SP_TO, SP_ONSET = range(4)  # pipeline.splice (steps)


@dataclass(frozen=True)
class Field:
    """One per-env array: ``shape`` is symbolic ("N" envs, "F" slots, "I" incidents, "S" stages,
    "A" actions, "SM" stage-metrics, "E" planned events, "R" replay rows, "LSM" the delayed
    metrics' ring (metric_lag_steps x SM), or an int)."""

    group: str
    name: str
    dtype: Any
    shape: tuple[str | int, ...]
    init: Any
    doc: str
    #: the value a new episode starts from (None: set by the episode draws, or kept)
    start: Any = None
    #: copied for a finished env's episode metrics
    metric: bool = False


_F = Field
#: The state, field by field. Groups: ``clock`` (episode key, steps, plan), ``events`` (the
#: episode's planned fault arrivals), ``slots`` (active faults and action side effects, in
#: creation order), ``incidents`` (what the episode metrics report), ``actions`` (in flight,
#: spent, counted, masked), ``pipeline`` (replicas, model, SLO totals), ``effects`` (the cached
#: fault effects as an affine map on z-scores).
FIELDS: tuple[Field, ...] = (
    _F("clock", "key", np.uint64, ("N",), 0, "episode key (SplitMix64 stream)"),
    _F("clock", "k", np.int64, ("N",), 0, "steps taken this episode", 0),
    _F("clock", "k0", np.int64, ("N",), 0, "first step of the current plan chunk", 0),
    _F("clock", "t", np.float64, ("N",), 0.0, "simulated clock, s", 0.0, metric=True),
    _F("clock", "n_plan", np.int64, ("N",), 0, "steps the replay rows and arrivals cover"),
    _F("clock", "rows", np.int64, ("N", "R"), 0, "replay-table row of each planned step"),
    _F("events", "t", np.float64, ("N", "E"), INF, "arrival time, s (INF: none)"),
    _F("events", "kind", np.int8, ("N", "E"), 0, "fault spec index"),
    _F("events", "stage", np.int8, ("N", "E"), 0, "stage index"),
    _F("events", "sev", np.float64, ("N", "E"), 0.0, "severity"),
    _F("events", "src", np.int8, ("N", "E"), 0, "source (episode.SOURCES)"),
    _F("events", "ptr", np.int64, ("N",), 0, "next event to apply", 0),
    _F("slots", "n", np.int64, ("N",), 0, "slots in use", 0),
    _F("slots", "kind", np.int8, ("N", "F"), 0, "fault spec or side-effect kind"),
    _F("slots", "fault", np.int8, ("N", "F"), -1, "healing column (-1: side effect)", -1),
    _F("slots", "stage", np.int8, ("N", "F"), 0, "stage index"),
    _F("slots", "sev", np.float64, ("N", "F"), 0.0, "severity", 0.0),
    _F("slots", "onset", np.float64, ("N", "F"), 0.0, "onset, s"),
    _F("slots", "shown", np.float64, ("N", "F"), 0.0, "onset of its symptom, s (later than the "
       "onset once an action relieved it: FaultSpec.relieved_by)"),
    _F("slots", "end", np.float64, ("N", "F"), INF, "natural end, s", INF),
    _F("slots", "cascade", np.float64, ("N", "F"), INF, "time its cascade fires, s", INF),
    _F("slots", "inc", np.int8, ("N", "F"), -1, "incident (-1: a side effect)", -1),
    _F("slots", "uid", np.int32, ("N", "F"), 0, "creation number"),
    _F("slots", "next_uid", np.int32, ("N",), 0, "last creation number given", 0),
    _F("slots", "dirty", np.bool_, ("N",), True, "effects or capacity changed", True),
    _F("incidents", "n", np.int64, ("N",), 0, "incidents opened", 0, metric=True),
    _F("incidents", "fault", np.int8, ("N", "I"), 0, "first fault's code", metric=True),
    _F("incidents", "stage", np.int8, ("N", "I"), 0, "stage index", metric=True),
    _F("incidents", "src", np.int8, ("N", "I"), 0, "source", metric=True),
    _F("incidents", "onset", np.float64, ("N", "I"), 0.0, "onset, s", metric=True),
    _F("incidents", "detected", np.float64, ("N", "I"), np.nan, "detection, s", np.nan,
       metric=True),
    _F("incidents", "resolved", np.float64, ("N", "I"), np.nan, "resolution, s", np.nan,
       metric=True),
    _F("incidents", "by", np.int8, ("N", "I"), UNRESOLVED, "resolving action (NATURAL, "
       "UNRESOLVED)", UNRESOLVED, metric=True),
    _F("incidents", "active", np.int16, ("N", "I"), 0, "active faults", 0),
    _F("incidents", "faults", np.int8, ("N", "I", N_FAULT_PER_INCIDENT), -1, "fault codes", -1,
       metric=True),
    _F("incidents", "nf", np.int16, ("N", "I"), 0, "faults the incident gained", 0,
       metric=True),
    _F("incidents", "dropped", np.int64, ("N",), 0, "faults dropped (no free slot)",
       metric=True),
    _F("incidents", "watch", np.bool_, ("N",), False, "an incident may be open and undetected",
       False),
    _F("actions", "in_flight", np.int64, ("N",), -1, "action in flight (-1: none)", -1),
    _F("actions", "done", np.float64, ("N",), INF, "its completion, s", INF),
    _F("actions", "issued", np.float64, ("N",), 0.0, "its issue time, s", 0.0),
    _F("actions", "esc_done", np.float64, ("N",), INF, "escalation's completion, s", INF),
    _F("actions", "esc_issued", np.float64, ("N",), 0.0, "escalation's issue time, s", 0.0),
    _F("actions", "spent", np.float64, ("N",), 0.0, "action cost spent", 0.0, metric=True),
    _F("actions", "counts", np.int32, ("N", "A"), 0, "times each action was taken", 0,
       metric=True),
    _F("actions", "last", np.int64, ("N",), 0, "last action taken", 0),
    _F("actions", "last_t", np.float64, ("N",), 0.0, "its time, s", 0.0),
    _F("actions", "invalid", np.int64, ("N",), 0, "masked actions attempted", 0, metric=True),
    _F("actions", "ineffective", np.int64, ("N",), 0, "completed actions that healed nothing",
       0, metric=True),
    _F("actions", "completed", np.int64, ("N",), 0, "last action completed (0: none yet)", 0),
    _F("actions", "completed_fixed", np.bool_, ("N",), False, "it healed something", False),
    _F("actions", "mask", np.int8, ("N", "A"), 0, "action mask"),
    _F("actions", "mask_dirty", np.bool_, ("N",), True, "mask and fault count to recompute",
       True),
    _F("pipeline", "replicas", np.int8, ("N", "S"), DEFAULT_REPLICAS, "replicas per stage",
       DEFAULT_REPLICAS),
    _F("pipeline", "version", np.int64, ("N",), 2, "model version", 2),
    _F("pipeline", "light", np.bool_, ("N",), False, "the light model serves", False),
    _F("pipeline", "splice", np.int64, ("N", 4), -1, "replayed incident's healed splice: "
       "stage, from_k, to_k, onset_k", -1),
    _F("pipeline", "replayed_uid", np.int64, ("N",), -1, "the replayed incident's slot uid", -1),
    _F("pipeline", "drift", np.float64, ("N", 2), 0.0, "drift monitor (KS, PSI)", 0.0),
    _F("pipeline", "downtime", np.float64, ("N",), 0.0, "SLO-violating seconds", 0.0,
       metric=True),
    _F("pipeline", "total_reward", np.float64, ("N",), 0.0, "episode return so far", 0.0,
       metric=True),
    _F("pipeline", "n_faults", np.int64, ("N",), 0, "active faults (ground truth)"),
    _F("pipeline", "deploy_t", np.float64, ("N",), -INF, "last deploy (a release, rollback or "
       "retrain), s", -INF),
    _F("pipeline", "acc_seen", np.float64, ("N",), BASE_ACCURACY, "the accuracy the late "
       "labels show (before the estimate's noise)", BASE_ACCURACY),
    _F("effects", "za", np.float64, ("N", "SM"), 1.0, "z = base * za + zb (set by the env)"),
    _F("effects", "zb", np.float64, ("N", "SM"), 0.0, "z = base * za + zb (set by the env)"),
    _F("effects", "ml_now", np.float64, ("N", len(HEALTH)), 0.0,
       "ML health now (model.ml_health; columns model.HEALTH)"),
    _F("effects", "stable", np.float64, ("N",), -INF, "effects hold until, s", -INF),
    _F("effects", "z_prev", np.float32, ("N", "SM"), 0.0, "the last observation's z (history "
       "deltas)"),
    _F("effects", "z_prev_ok", np.bool_, ("N",), False, "z_prev holds this episode's last z",
       False),
    _F("effects", "z_seen", np.float32, ("N", "SM"), 0.0, "the z the last observation showed "
       "(a stage whose scrape fails shows it again)"),
    _F("effects", "z_seen_ok", np.bool_, ("N",), False, "z_seen holds this episode's last "
       "observation", False),
    _F("effects", "z_ring", np.float32, ("N", "LSM"), 0.0, "the last metric_lag_steps scraped "
       "z rows (delayed metrics: the observation shows the oldest)"),
    _F("effects", "z_ring_n", np.int64, ("N",), 0, "rows pushed to z_ring this episode", 0),
)

GROUPS = ("clock", "events", "slots", "incidents", "actions", "pipeline", "effects")


def _record(group: str) -> type:
    return namedtuple(group.capitalize(), [f.name for f in FIELDS if f.group == group])  # type: ignore[misc]


Clock = _record("clock")
Events = _record("events")
Slots = _record("slots")
Incidents = _record("incidents")
Actions = _record("actions")
Pipeline = _record("pipeline")
Effects = _record("effects")
RECORDS: dict[str, type] = {"clock": Clock, "events": Events, "slots": Slots,
                            "incidents": Incidents, "actions": Actions, "pipeline": Pipeline,
                            "effects": Effects}
State = namedtuple("State", GROUPS)  # type: ignore[misc]

#: The fields an episode's metrics are made from, as "group.name" (copied for finished envs).
METRIC_FIELDS = tuple(f"{f.group}.{f.name}" for f in FIELDS if f.metric)


def dims(n: int, n_stages: int, n_metrics: int, n_actions: int, events: int = 1,
         rows: int = 2, lag: int = 0) -> dict[str, int]:
    return {"N": n, "F": F_MAX, "I": I_MAX, "S": n_stages, "A": n_actions,
            "SM": n_stages * n_metrics, "E": events, "R": rows,
            "LSM": max(lag, 1) * n_stages * n_metrics}


def allocate(d: dict[str, int]) -> Any:
    """A fresh :class:`State` with every field at its allocation value."""
    groups = {}
    for g in GROUPS:
        arrays = {}
        for f in FIELDS:
            if f.group == g:
                shape = tuple(d[x] if isinstance(x, str) else x for x in f.shape)
                arrays[f.name] = np.full(shape, f.init, dtype=f.dtype)
        groups[g] = RECORDS[g](**arrays)
    return State(**groups)


def get(state: Any, path: str) -> np.ndarray:
    """A field by its "group.name" path."""
    g, name = path.split(".")
    return getattr(getattr(state, g), name)  # type: ignore[no-any-return]


def replace(state: Any, path: str, array: np.ndarray) -> Any:
    """``state`` with the field at ``path`` replaced (the caller renews its dispatch layout)."""
    g, name = path.split(".")
    return state._replace(**{g: getattr(state, g)._replace(**{name: array})})


__all__ = ["FIELDS", "GROUPS", "METRIC_FIELDS", "Field", "State", "allocate", "dims", "get",
           "replace"]
