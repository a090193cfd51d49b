"""The observation's layout: named blocks whose offsets follow from the metrics, the stages and
the action table.

One :class:`ObsLayout` per pipeline (``PipelineModel.layout``) is read by everything that
writes or reads an observation: the compiled step (:mod:`healgym.envs._kernel`, through the
offsets in its constants), the observation space, :func:`healgym.sim.observation.encode`,
:func:`healgym.sim.signals.decode`, the runbook's signals, Q-learning's features, the offline
tools and serving. No other module computes an offset. Blocks, in order:

========== ======================= ==========================================================
block      size                    content
========== ======================= ==========================================================
z          S * M                   each stage's metric z-scores, stage-major (METRICS order)
replicas   S                       replicas / MAX_REPLICAS per stage
context    len(CONTEXT)            the ML and context signals (:data:`CONTEXT`)
last       A                       the last action taken, one-hot
history    S * M + 3 + A           only with ``history=True``: each z-score's change since the
                                   previous observation (stage-major), then
                                   :data:`HISTORY` (time since the first open alarm, since the
                                   last deploy, whether the last completed action healed
                                   something), then the last completed action, one-hot
========== ======================= ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The ML and context signals, in observation order, with their upper bounds (lower: 0).
CONTEXT: tuple[str, ...] = (
    "accuracy", "drift_ks", "drift_psi", "null_rate", "schema_error_rate", "staleness_h",
    "cost_factor", "since_last_action_h", "action_in_flight", "light_model", "can_rollback",
    "escalation_in_flight", "shedding", "since_deploy_h", "pred_shift")
CONTEXT_HIGH: tuple[float, ...] = (1.0, 1.0, 10.0, 1.0, 1.0, 24.0, 10.0, 1.0, 1.0, 1.0, 1.0,
                                   1.0, 1.0, 1.0, 10.0)
CONTEXT_INDEX = {name: i for i, name in enumerate(CONTEXT)}
#: The history block's named signals (after the z deltas), with their upper bounds (lower: 0).
HISTORY: tuple[str, ...] = ("since_alarm_h", "last_done_fixed")
HISTORY_HIGH: tuple[float, ...] = (1.0, 1.0)
HISTORY_INDEX = {name: i for i, name in enumerate(HISTORY)}


@dataclass(frozen=True)
class Block:
    """Observation indices [start, stop)."""

    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)


@dataclass(frozen=True)
class ObsLayout:
    """Where each part of an observation lives, for ``stages`` x ``metrics`` and ``actions``."""

    stages: tuple[str, ...]
    metrics: tuple[str, ...]
    actions: tuple[str, ...]
    history: bool = False
    z: Block = field(init=False)
    replicas: Block = field(init=False)
    context: Block = field(init=False)
    last: Block = field(init=False)
    dz: Block = field(init=False)  # empty without history
    hist: Block = field(init=False)
    done: Block = field(init=False)

    def __post_init__(self) -> None:
        at = 0
        sm = len(self.stages) * len(self.metrics)
        h = self.history
        for name, size in (("z", sm), ("replicas", len(self.stages)), ("context", len(CONTEXT)),
                           ("last", len(self.actions)), ("dz", sm if h else 0),
                           ("hist", len(HISTORY) if h else 0),
                           ("done", len(self.actions) if h else 0)):
            object.__setattr__(self, name, Block(name, at, at + size))
            at += size

    @property
    def n(self) -> int:
        """The observation's length."""
        return self.done.stop

    @property
    def blocks(self) -> tuple[Block, ...]:
        base = (self.z, self.replicas, self.context, self.last)
        return (*base, self.dz, self.hist, self.done) if self.history else base

    def ctx(self, name: str) -> int:
        """The index of context signal ``name``."""
        return self.context.start + CONTEXT_INDEX[name]

    def hst(self, name: str) -> int:
        """The index of history signal ``name`` (only with ``history``)."""
        if not self.history:
            raise KeyError(f"{name!r}: this observation has no history block (history=False)")
        return self.hist.start + HISTORY_INDEX[name]

    def names(self) -> list[str]:
        """The name of every index, in order (exported policies record it)."""
        out = [f"{s}.{m}_z" for s in self.stages for m in self.metrics]
        out += [f"{s}.replicas_frac" for s in self.stages]
        out += list(CONTEXT) + [f"last_action={a}" for a in self.actions]
        if self.history:
            out += [f"{s}.{m}_dz" for s in self.stages for m in self.metrics]
            out += list(HISTORY) + [f"last_done={a}" for a in self.actions]
        return out

    def bounds(self, z_clip: float) -> tuple[np.ndarray, np.ndarray]:
        """The observation space's (low, high)."""
        low = np.zeros(self.n, dtype=np.float32)
        high = np.ones(self.n, dtype=np.float32)
        low[self.z.slice], high[self.z.slice] = -z_clip, z_clip
        high[self.context.slice] = CONTEXT_HIGH
        if self.history:
            low[self.dz.slice], high[self.dz.slice] = -2 * z_clip, 2 * z_clip
            high[self.hist.slice] = HISTORY_HIGH
        return low, high

    def z_block(self, obs: np.ndarray) -> np.ndarray:
        """The z-scores of observations (..., n) as (..., S, M)."""
        return np.asarray(obs)[..., self.z.slice].reshape(
            *np.shape(obs)[:-1], len(self.stages), len(self.metrics))
