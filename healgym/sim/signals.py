"""What an operator reads off an observation, in the units of a dashboard.

:func:`decode` turns an observation back into named signals: each stage's raw metrics
(``serve.latency_p95_ms``), their ratio to the healthy median (``serve.latency_p95_ms_ratio``),
and the ML and context signals. Runbooks are written against these names. (z-scores are clipped
at +-50, so a raw value decoded from a clipped z is a lower bound of the real one.)
"""

from __future__ import annotations

import numpy as np

from healgym.sim.layout import CONTEXT as ML_NAMES
from healgym.sim.layout import HISTORY
from healgym.sim.model import MAX_REPLICAS, PipelineModel


def signal_names(model: PipelineModel) -> list[str]:
    names = [f"{s}.{m}" for s in model.stages for m in model.metrics]
    names += [f"{s}.{m}_ratio" for s in model.stages for m in model.metrics]
    names += [f"{s}.replicas" for s in model.stages]
    names += list(ML_NAMES)
    if model.layout.history:  # runbooks may use them too
        names += [f"{s}.{m}_dz" for s in model.stages for m in model.metrics]
        names += [*HISTORY, "last_done"]
    return names


def observation_names(model: PipelineModel) -> list[str]:
    """The name of every observation index, in order: the observation's layout (see the
    env's Observation Space table). Exported policies record it, so a policy is never run on
    observations laid out differently from those it was trained on."""
    return model.layout.names()


def decode(model: PipelineModel, obs: np.ndarray) -> dict[str, float]:
    """Named signals of one observation."""
    lay = model.layout
    z = lay.z_block(np.asarray(obs, dtype=float))
    raw = z * model.replay.scale + model.median
    ratio = raw / np.where(model.median != 0, model.median, 1.0)
    out: dict[str, float] = {}
    for i, s in enumerate(model.stages):
        for j, m in enumerate(model.metrics):
            out[f"{s}.{m}"] = float(raw[i, j])
            out[f"{s}.{m}_ratio"] = float(ratio[i, j])
        out[f"{s}.replicas"] = float(obs[lay.replicas.start + i] * MAX_REPLICAS)
    for name in ML_NAMES:
        out[name] = float(obs[lay.ctx(name)])
    out["staleness_s"] = out["staleness_h"] * 3600.0
    if lay.history:
        dz = np.asarray(obs, dtype=float)[lay.dz.slice].reshape(len(model.stages), -1)
        for i, s in enumerate(model.stages):
            for j, m in enumerate(model.metrics):
                out[f"{s}.{m}_dz"] = float(dz[i, j])
        for name in HISTORY:
            out[name] = float(obs[lay.hst(name)])
        out["last_done"] = float(np.argmax(obs[lay.done.slice]))
    return out
