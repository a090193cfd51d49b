"""A finished episode's metrics, from the state's metric fields
(:data:`healgym.envs.state.METRIC_FIELDS`): the scalar env's dictionary, and the lazily built
mapping the vector env hands out."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from healgym.envs.consts import FAULT_LABEL
from healgym.envs.state import (
    NATURAL,
    UNRESOLVED,
)
from healgym.sim.episode import (
    SOURCES,
)
from healgym.sim.model import (
    PipelineModel,
)


def metrics_dict(m: PipelineModel, a: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """The scalar env's episode-metrics dictionary from row ``i`` of the arrays ``a``."""
    names = m.action_names
    incidents = []
    n_inc = int(a["incidents.n"][i])
    fault, stage, src, onset, det, res, by = (
        a[f"incidents.{k}"][i, :n_inc].tolist()
        for k in ("fault", "stage", "src", "onset", "detected", "resolved", "by"))
    nf, faults = a["incidents.nf"][i].tolist(), a["incidents.faults"][i]
    for c in range(n_inc):
        d, r, o, b = det[c], res[c], onset[c], by[c]
        incidents.append({
            "id": c, "fault": FAULT_LABEL[fault[c]],
            "stage": m.stages[stage[c]], "source": SOURCES[src[c]],
            "faults": [FAULT_LABEL[x] for x in faults[c, : nf[c]].tolist()],
            "onset_s": o,
            "detected_s": None if d != d else d,
            "resolved_s": None if r != r else r,
            "resolved_by": None if b == UNRESOLVED else ("natural" if b == NATURAL else names[b]),
            "mttr_s": None if r != r else r - o,
            "time_to_detect_s": None if d != d else d - o,
        })
    taken = {names[j]: c for j, c in enumerate(a["actions.counts"][i].tolist()) if c}
    return episode_metrics(float(a["clock.t"][i]), incidents, float(a["pipeline.downtime"][i]),
                           taken, float(a["actions.spent"][i]), int(a["actions.invalid"][i]),
                           float(a["pipeline.total_reward"][i]),
                           int(a["incidents.dropped"][i]), int(a["actions.ineffective"][i]))


def episode_metrics(elapsed: float, incidents: list[dict[str, Any]], downtime_s: float,
                    actions_taken: dict[str, int], action_cost: float, invalid: int,
                    total_reward: float, dropped: int, ineffective: int) -> dict[str, Any]:
    """The episode-metrics dictionary (shared by the scalar and the vector env)."""
    resolved = [i["mttr_s"] for i in incidents if i["mttr_s"] is not None]
    return {
        "elapsed_s": elapsed,
        "incidents": incidents,
        "n_incidents": len(incidents),
        "resolved_incidents": len(resolved),
        "unresolved_incidents": len(incidents) - len(resolved),
        "mean_mttr_s": float(np.mean(resolved)) if resolved else None,
        "downtime_s": downtime_s,
        "uptime_pct": 100.0 * (1.0 - downtime_s / elapsed) if elapsed > 0 else 100.0,
        "actions_taken": actions_taken,
        "n_actions": int(sum(actions_taken.values())),
        "action_cost": action_cost,
        "invalid_actions": invalid,
        "ineffective_actions": ineffective,  # completed, and healed no fault
        "dropped_faults": dropped,
        "total_reward": total_reward,
    }


class EpisodeMetrics(Mapping):  # type: ignore[type-arg]
    """A finished sub-env's episode metrics: the scalar env's dictionary, made on first use.

    The vector env copies a finished env's few arrays (in one batch for all envs that finish
    at a step) and builds the dictionary only when it is read, so a training loop that never
    reads it does not pay for it. It compares equal to the dictionary; ``dict(m)`` is one.
    """

    __slots__ = ("_model", "_arrays", "_row", "_dict")

    def __init__(self, model: PipelineModel, arrays: dict[str, np.ndarray], row: int) -> None:
        self._model, self._arrays, self._row = model, arrays, row
        self._dict: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        if self._dict is None:
            self._dict = metrics_dict(self._model, self._arrays, self._row)
        return self._dict

    def __getitem__(self, key: str) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get())

    def __getstate__(self) -> dict[str, Any]:  # pickles (and deep-copies) as its dictionary
        return {"_dict": self._get()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._model = self._arrays = None  # type: ignore[assignment]
        self._row, self._dict = -1, state["_dict"]
