"""Tabular Q-learning for healgym, trained on the vector env with batched numpy updates.

The observation is discretised into a few operator-level features (configurable; defaults in
:data:`DEFAULT_FEATURES`), each cut into bins; a state is their mixed-radix index. Learning is
epsilon-greedy over the valid actions with the classic defaults (alpha 0.1, gamma 0.95, epsilon
0.1) and an optional exponential epsilon decay. One batched update applies every sub-env's
transition of a step at once: TD errors are computed from the Q-table before the step's update,
and the k transitions that hit the same (state, action) in the same step share one update toward
their mean target with step size 1 - (1 - alpha) ** k (what k sequential updates toward one
target would do).

Truncation is not termination: a truncated step bootstraps from the next state. The step after a
sub-env's last (the NEXT_STEP autoreset) is not a transition and is skipped.

Saved as a folder: ``q.npz`` (arrays) and ``policy.json`` (format version, discretiser, action
names, env id and version, training config). Never pickled.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.policy import Decision, read_versioned_json
from healgym.errors import ConfigError, HealgymError, did_you_mean
from healgym.sim.faults import METRICS
from healgym.sim.layout import CONTEXT, CONTEXT_INDEX, ObsLayout
from healgym.sim.model import PipelineModel

FORMAT = "healgym-qtable"
FORMAT_VERSION = 1
ENV_VERSION = "healgym/PipelineHeal-v1"
M = len(METRICS)
LAT, ERR, CPU, MEM, THR = (METRICS.index(m) for m in ("latency_p95_ms", "error_rate", "cpu_pct",
                                                      "memory_pct", "throughput_rps"))


@dataclass(frozen=True)
class Feature:
    """One discretised feature: ``source`` (see :func:`feature_values`), bin edges."""

    name: str
    source: str
    edges: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.edges) + 1


#: Default features: where it hurts (the worst stage) and how (z-scores and ML signals).
DEFAULT_FEATURES: tuple[Feature, ...] = (
    Feature("worst_stage", "worst_stage", ()),  # size = number of stages (set at build)
    Feature("latency_z", "max_z:latency", (4.0, 12.0)),
    Feature("error_z", "max_z:error", (4.0,)),
    Feature("throughput_z", "min_z:throughput", (-4.0,)),
    Feature("resource_z", "max_z:resource", (6.0,)),
    Feature("accuracy", "ctx:accuracy", (0.85,)),
    Feature("drift_psi", "ctx:drift_psi", (0.2,)),
    Feature("data_quality", "max_ctx:null_rate,schema_error_rate", (0.02,)),
    Feature("staleness_h", "ctx:staleness_h", (0.25,)),
    Feature("cost_factor", "ctx:cost_factor", (1.3,)),
    Feature("in_flight", "inflight_action", ()),  # which action is in flight (0: none)
    Feature("light_model", "ctx:light_model", (0.5,)),
)


#: History features (``agent.history_features``; the second needs the env's history block,
#: ``history=True``): was there a deploy in the last 6 minutes (a bad release, or a
#: rollback/retrain: in every observation's context), and did the last completed action's target
#: recover (a restart relieves a crash loop for a minute: a recovery that does not hold).
HISTORY_FEATURES: tuple[Feature, ...] = (
    Feature("recent_deploy", "ctx:since_deploy_h", (0.1,)),
    Feature("last_fix_held", "hist:last_done_fixed", (0.5,)),
)


def feature_values(model: PipelineModel, obs: np.ndarray, source: str) -> np.ndarray:
    """The raw value of a feature for a batch of observations (N, obs). Context signals are
    named (``ctx:accuracy``, :data:`healgym.sim.layout.CONTEXT`); Q-tables saved before
    names gave their position (``ctx:0``), which still loads."""
    lay = model.layout
    z = lay.z_block(obs)
    if source == "worst_stage":
        return np.abs(z).max(axis=2).argmax(axis=1).astype(float)
    if source == "inflight_action":  # the last action while it is in flight, else 0 (noop)
        last = obs[:, lay.last.slice].argmax(axis=1)
        return np.where(obs[:, lay.ctx("action_in_flight")] > 0.5, last, 0).astype(float)
    kind, _, arg = source.partition(":")
    groups = {"latency": [LAT], "error": [ERR], "throughput": [THR], "resource": [CPU, MEM]}
    if kind == "max_z":
        return z[:, :, groups[arg]].max(axis=(1, 2))
    if kind == "min_z":
        return z[:, :, groups[arg]].min(axis=(1, 2))
    if kind == "hist":
        try:
            return obs[:, lay.hst(arg)]
        except KeyError:
            raise ConfigError(f"feature source {source!r}: the env has no history block; "
                              "make it with history=True (env.history=true)") from None
    if kind in ("ctx", "max_ctx"):
        cols = [_ctx_index(lay, name, source) for name in arg.split(",")]
        return obs[:, cols].max(axis=1) if kind == "max_ctx" else obs[:, cols[0]]
    raise ConfigError(f"unknown feature source {source!r}")


def _ctx_index(lay: ObsLayout, name: str, source: str) -> int:
    if name.isdigit():  # a position (Q-tables saved before context signals had names)
        return lay.context.start + int(name)
    if name not in CONTEXT_INDEX:
        raise ConfigError(f"feature source {source!r}: {name!r} is not a context signal."
                          f"{did_you_mean(name, CONTEXT)} Known: {list(CONTEXT)}")
    return lay.ctx(name)


@dataclass
class Discretiser:
    features: tuple[Feature, ...]
    n_stages: int

    n_actions: int = 0

    def sizes(self) -> list[int]:
        special = {"worst_stage": self.n_stages, "inflight_action": self.n_actions}
        return [special.get(f.source, f.size) for f in self.features]

    @property
    def n_states(self) -> int:
        return int(np.prod(self.sizes()))

    def plan(self, model: PipelineModel) -> list[tuple[str, Any, tuple[float, ...], int]]:
        """Each feature as (how, observation indices, edges, size): :meth:`state` reads one
        observation with it (the same state as :meth:`states`, without its batch overhead)."""
        lay = model.layout
        S, M = model.n_stages, model.n_metrics
        groups = {"latency": [LAT], "error": [ERR], "throughput": [THR], "resource": [CPU, MEM]}
        out: list[tuple[str, Any, tuple[float, ...], int]] = []
        for f, size in zip(self.features, self.sizes(), strict=True):
            kind, _, arg = f.source.partition(":")
            if f.source in ("worst_stage", "inflight_action"):
                ix: Any = (lay.last.start, lay.last.stop, lay.ctx("action_in_flight"))
                out.append((f.source, ix, (), size))
            elif kind in ("max_z", "min_z"):
                ix = np.array([lay.z.start + s * M + m for s in range(S) for m in groups[arg]])
                out.append((kind, ix, tuple(f.edges), size))
            else:  # a context or history value: feature_values checks the name
                feature_values(model, np.zeros((1, lay.n)), f.source)
                cols = [lay.hst(arg)] if kind == "hist" else \
                    [_ctx_index(lay, name, f.source) for name in arg.split(",")]
                out.append(("max", np.array(cols), tuple(f.edges), size))
        return out

    def state(self, model: PipelineModel, plan: list[tuple[str, Any, tuple[float, ...], int]],
              obs: np.ndarray) -> int:
        """The state of one observation (n_obs,), read with :meth:`plan`."""
        idx = 0
        lay = model.layout
        for how, ix, edges, size in plan:
            if how == "worst_stage":
                b = int(np.abs(obs[lay.z.slice]).reshape(model.n_stages, -1).max(axis=1).argmax())
            elif how == "inflight_action":
                b = int(obs[ix[0]:ix[1]].argmax()) if obs[ix[2]] > 0.5 else 0
            else:
                v = float(obs[ix].min()) if how == "min_z" else float(obs[ix].max())
                b = bisect_right(edges, v)
            idx = idx * size + min(max(b, 0), size - 1)
        return idx

    def states(self, model: PipelineModel, obs: np.ndarray) -> np.ndarray:
        obs = np.atleast_2d(obs)
        idx = np.zeros(len(obs), dtype=np.int64)
        for f, size in zip(self.features, self.sizes(), strict=True):
            v = feature_values(model, obs, f.source)
            b = v.astype(np.int64) if f.source in ("worst_stage", "inflight_action") else \
                np.searchsorted(np.asarray(f.edges), v, side="right")
            idx = idx * size + np.clip(b, 0, size - 1)
        return idx


@dataclass
class QConfig:
    alpha: float = 0.1  # learning rate
    gamma: float = 0.95  # discount per step
    epsilon: float = 0.1  # exploration rate (final, after decay)
    epsilon_start: float | None = None  # None: no decay
    decay_steps: int = 100_000  # vector steps over which epsilon decays exponentially
    seed: int = 0
    # the table's start: 0, or (pessimistic) the return of an SLO violation that never ends,
    # -slo_violation_per_s * dt / (1 - gamma). Every reward is <= 0 but a recovery's bonus, so
    # from 0 every action never tried looks best and the greedy policy flails in rarely seen
    # states. Measured on make run's protocol (3 seeds x 20 k steps): pessimistic cut harmful
    # actions per incident from 37.8 to 13.5 but lost 1-15 pp more uptime against the expert
    # runbook in every distribution, so it is not the default (docs/agents.md).
    pessimistic: bool = False


@dataclass
class TrainLog:
    steps: list[int] = field(default_factory=list)
    epsilon: list[float] = field(default_factory=list)
    explore_share: list[float] = field(default_factory=list)
    mean_reward: list[float] = field(default_factory=list)


class QLearningAgent:
    """A Q-table over discretised observations; implements the Policy protocol (greedy)."""

    name = "qlearning"
    acts_in_batches = True  # ``act`` is the greedy choice for a batch (lockstep evaluation)

    def __init__(self, model: PipelineModel, features: tuple[Feature, ...] = DEFAULT_FEATURES,
                 config: QConfig | None = None) -> None:
        self.model = model
        self.disc = Discretiser(tuple(features), model.n_stages, len(model.actions))
        self.config = c = config or QConfig()
        init = -model.reward.slo_violation_per_s * model.dt / (1.0 - c.gamma) \
            if c.pessimistic else 0.0
        self.q = np.full((self.disc.n_states, len(model.actions)), float(init))
        self.visits = np.zeros(self.disc.n_states, dtype=np.int64)
        self._plan: list[tuple[str, Any, tuple[float, ...], int]] | None = None

    # -------------------------------------------------------------- acting
    def reset(self) -> None:
        pass

    def greedy(self, states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        q = np.where(mask.astype(bool), self.q[states], -np.inf)
        return q.argmax(axis=1)

    def act(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Greedy valid actions for a batch of observations (N, n_obs): ``decide``'s choice for
        each row (batched evaluation)."""
        return self.greedy(self.disc.states(self.model, np.atleast_2d(obs)), np.atleast_2d(mask))

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        if self._plan is None:
            self._plan = self.disc.plan(self.model)
        s = self.disc.state(self.model, self._plan, np.asarray(obs).reshape(-1))
        row = self.q[s]
        a = int(np.where(np.asarray(info["action_mask"]).astype(bool), row, -np.inf).argmax())
        return Decision(a, {"state": s, "q": row.round(2).tolist()})

    # -------------------------------------------------------------- learning
    def epsilon_at(self, step: int) -> float:
        c = self.config
        if c.epsilon_start is None:
            return c.epsilon
        frac = min(step / max(c.decay_steps, 1), 1.0)
        return float(c.epsilon_start * (c.epsilon / c.epsilon_start) ** frac)

    def train(self, venv: Any, steps: int, seed: int | None = None, log_every: int = 100,
              progress: bool = False) -> TrainLog:
        """Train for ``steps`` vector steps on a (healgym) vector env."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed if seed is None else seed)
        obs, info = venv.reset(seed=cfg.seed if seed is None else seed)
        n = venv.num_envs
        states = self.disc.states(self.model, obs)
        mask = info["action_mask"]
        log = TrainLog()
        fresh = np.zeros(n, dtype=bool)  # this step resets the sub-env (NEXT_STEP autoreset)
        rewards = []
        explored = 0
        it: Any = range(steps)
        if progress:
            from rich.progress import track

            it = track(it, description="q-learning")
        for t in it:
            eps = self.epsilon_at(t)
            greedy = self.greedy(states, mask)
            explore = rng.random(n) < eps
            scores = rng.random(mask.shape) * mask
            actions = np.where(explore, scores.argmax(axis=1), greedy)
            explored += int(explore.sum())
            obs, r, term, trunc, info = venv.step(actions)
            nxt = self.disc.states(self.model, obs)
            nmask = info["action_mask"]
            learn = ~fresh
            if learn.any():
                s, a = states[learn], actions[learn]
                target = r[learn] + cfg.gamma * np.where(
                    term[learn], 0.0, np.where(nmask[learn].astype(bool), self.q[nxt[learn]],
                                               -np.inf).max(axis=1))
                td = target - self.q[s, a]
                # Sub-envs that hit the same (state, action) this step share one update toward
                # the mean of their targets, with the step size of that many sequential updates
                # toward a fixed target, 1 - (1 - alpha) ** count (a plain sum of TD errors
                # would multiply the learning rate by the count and diverge).
                flat = s * self.q.shape[1] + a
                uniq, inv, count = np.unique(flat, return_inverse=True, return_counts=True)
                mean_td = np.bincount(inv, weights=td) / count
                self.q.flat[uniq] += (1.0 - (1.0 - cfg.alpha) ** count) * mean_td
                np.add.at(self.visits, s, 1)
            rewards.append(float(r[learn].mean()) if learn.any() else 0.0)
            fresh = term | trunc
            states, mask = nxt, nmask
            if (t + 1) % log_every == 0:
                log.steps.append(t + 1)
                log.epsilon.append(eps)
                log.explore_share.append(explored / (log_every * n))
                log.mean_reward.append(float(np.mean(rewards[-log_every:])))
                explored = 0
        return log

    # -------------------------------------------------------------- persistence
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path / "q.npz", q=self.q, visits=self.visits)
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "env": ENV_VERSION,
            "stages": self.model.stages, "action_names": self.model.action_names,
            "features": [asdict(f) for f in self.disc.features],
            "config": asdict(self.config), **(extra or {}),
        }
        (path / "policy.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, model: PipelineModel) -> QLearningAgent:
        path = Path(path)
        meta = read_versioned_json(path, "policy.json", FORMAT, FORMAT_VERSION,
                                   "a saved Q-learning policy", "retrain with this healgym")
        if meta.get("env") != ENV_VERSION:
            raise HealgymError(f"{path}: trained on {meta.get('env')!r}, this is {ENV_VERSION!r}"
                               "; retrain on this environment version")
        if meta.get("action_names") != model.action_names:
            raise HealgymError(
                f"{path}: trained for actions {meta.get('action_names')} but this pipeline's "
                f"actions are {model.action_names} (stages {model.stages}); use the same stages")
        features = tuple(Feature(f["name"], f["source"], tuple(f["edges"]))
                         for f in meta["features"])
        agent = cls(model, features, QConfig(**meta["config"]))
        with np.load(path / "q.npz", allow_pickle=False) as data:
            if data["q"].shape != agent.q.shape:
                raise HealgymError(f"{path}: Q-table shape {data['q'].shape} does not match the "
                                   f"discretiser's {agent.q.shape}")
            agent.q, agent.visits = data["q"], data["visits"]
        return agent
