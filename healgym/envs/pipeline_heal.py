"""``healgym/PipelineHeal-v0``: heal an ML pipeline whose telemetry is replayed from real logs."""

from __future__ import annotations

import functools
import heapq
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from healgym.errors import ConfigError
from healgym.sim import actions as act
from healgym.sim.chaos import (
    ChaosConfig,
    FaultEvent,
    Scenario,
    draw_random_arrivals,
    load_scenario,
)
from healgym.sim.drift import DriftReference
from healgym.sim.faults import (
    ACC,
    BY_NAME,
    COMPILED,
    COST,
    ERR,
    FAULT_NAMES,
    INF,
    LAT,
    METRICS,
    ML_SIGNALS,
    NULL,
    SCHEMA,
    SHIFT,
    SPEC_INDEX,
    STALE,
    THR,
    FaultGeometry,
    effect_factor,
    effects_at,
    fault_geometry,
)
from healgym.sim.replay import HI, LO, ReplaySource
from healgym.sim.reward import RewardConfig, SLOConfig
from healgym.telemetry.dataset import TelemetryDataset, load_dataset
from healgym.telemetry.schema import unix_seconds
from healgym.telemetry.synthetic import generate_synthetic

Z_CLIP = 50.0
BASE_ACCURACY = 0.92
BASE_NULL_RATE = 0.005
BASE_STALENESS_S = 120.0
REPLICA_COST_PER_H = 5.0
DEFAULT_REPLICAS, MIN_REPLICAS, MAX_REPLICAS = 2, 1, 8
DETECT_Z = 6.0
DRIFT_WINDOW, DRIFT_REF_SIZE = 200, 1000
HEAL_SLOTS = 8
ML_OBS = ("accuracy_est", "drift_ks", "drift_psi", "null_rate", "schema_error_rate",
          "staleness_h", "cost_factor")
CONTEXT_OBS = ("since_last_action_h", "action_in_flight", "light_model", "can_rollback")


@functools.lru_cache(maxsize=4)
def default_dataset(seed: int = 0) -> TelemetryDataset:
    """The embedded default: 3 days of seeded synthetic telemetry (marked synthetic)."""
    return generate_synthetic(seed=seed, days=3.0)


def hops_from_edges(names: list[str], edges: list[tuple[str, str]] | None) -> np.ndarray:
    """hops[s, d]: shortest downstream distance from stage s to d (-1: not downstream)."""
    n = len(names)
    if not edges:
        edges = list(zip(names[:-1], names[1:], strict=True))
    idx = {nm: i for i, nm in enumerate(names)}
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        if a in idx and b in idx and a != b:
            adj[idx[a]].append(idx[b])
    hops = -np.ones((n, n), dtype=np.int64)
    for s in range(n):
        hops[s, s] = 0
        queue = deque([s])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if hops[s, v] < 0:
                    hops[s, v] = hops[s, u] + 1
                    queue.append(v)
    return hops


@dataclass(slots=True)
class FaultInstance:
    uid: int
    kind: int  # index into faults.ALL_SPECS
    name: str
    stage: int
    severity: float
    onset_s: float
    incident: int  # -1 for the side effects of actions
    end_s: float  # natural end (INF: persists)


@dataclass
class Incident:
    uid: int
    fault: str
    stage: str
    source: str
    onset_s: float
    faults: list[str] = field(default_factory=list)
    active: set[int] = field(default_factory=set)
    detected_s: float | None = None
    resolved_s: float | None = None
    resolved_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        mttr = None if self.resolved_s is None else self.resolved_s - self.onset_s
        return {"id": self.uid, "fault": self.fault, "stage": self.stage, "source": self.source,
                "faults": list(self.faults), "onset_s": self.onset_s,
                "detected_s": self.detected_s, "resolved_s": self.resolved_s,
                "resolved_by": self.resolved_by, "mttr_s": mttr,
                "time_to_detect_s": None if self.detected_s is None
                else self.detected_s - self.onset_s}


class PipelineHealEnv(gym.Env[np.ndarray, np.int64]):
    """Heal an ML pipeline under chaos; its healthy behaviour is replayed from real telemetry.

    ## Description
    A pipeline of stages (default ``ingest -> features -> train -> serve -> deliver``) runs on a
    simulated clock (``step_seconds`` per step, default 10 s). Each stage's healthy metrics are
    replayed from a telemetry dataset (real logs, or the embedded seeded synthetic default).
    Chaos injects faults from a library of 17 types (infrastructure and ML), at random or from a
    scenario file; faults ramp up, fade or persist, spread downstream with a lag, and cascade.
    The agent sees what an operator sees, not the hidden faults, and acts: restart, scale,
    roll back, retrain, backfill, switch model, shed load, escalate. See ``docs/environment.md``.

    ## Action Space
    ``Discrete(3 * S + 8)`` (23 for 5 stages): noop; restart, scale_up, scale_down per stage;
    rollback, retrain, backfill, switch_light, switch_back, shed_load, escalate. Each has a
    duration, a cost, and a success probability per fault (the healing matrix,
    :mod:`healgym.sim.actions`). ``info["action_mask"]`` marks the actions possible now: one
    action at a time (only noop and escalate while one is in flight), replicas within [1, 8],
    rollback only with a previous version, the right model switch, no shedding while shedding,
    nothing costlier than the remaining budget. A masked action is treated as noop with a
    penalty.

    ## Observation Space
    ``Box(float32)`` of size ``7 * S + 11 + n_actions``:

    | index | meaning | min | max |
    |---|---|---|---|
    | 0 .. 6S-1 | per stage and metric (stage-major): robust z vs healthy baseline | -50 | 50 |
    | 6S .. 7S-1 | replicas of each stage / 8 | 0 | 1 |
    | 7S | estimated model accuracy | 0 | 1 |
    | 7S+1 | drift KS statistic (features vs reference) | 0 | 1 |
    | 7S+2 | drift PSI | 0 | 10 |
    | 7S+3 | null rate | 0 | 1 |
    | 7S+4 | schema error rate | 0 | 1 |
    | 7S+5 | feature staleness, hours | 0 | 24 |
    | 7S+6 | running cost / baseline cost | 0 | 10 |
    | 7S+7 | time since the last action, hours | 0 | 1 |
    | 7S+8 | an action is in flight | 0 | 1 |
    | 7S+9 | serving the light model | 0 | 1 |
    | 7S+10 | a rollback target exists | 0 | 1 |
    | 7S+11 .. | the last action, one-hot | 0 | 1 |

    Ground truth (active faults, open incidents) is in ``info["faults"]`` and
    ``info["incidents"]``, for analysis only.

    ## Rewards
    ``-10`` per second of SLO violation, ``+100`` per incident resolved within 30 s of onset,
    minus each action's cost and the running cost above baseline; all configurable through
    ``reward`` and ``slo`` (:mod:`healgym.sim.reward`).

    ## Starting State
    A random offset into the telemetry, every stage at 2 replicas, the full model deployed with a
    previous version to roll back to, no faults active.

    ## Episode End
    No terminal state: a pipeline is never "done". The episode is truncated when its replayed
    window ends, ``max_episode_steps`` (360 steps = 1 hour by default, from the registration);
    the final ``info["episode_metrics"]`` holds per-incident onset, detection, resolution
    (MTTR), downtime, uptime %, actions and their cost, and unresolved incidents.

    ## Arguments
    ``gymnasium.make("healgym/PipelineHeal-v0", dataset=None, stages=None, step_seconds=10,
    chaos=True, scenario=None, replay_incidents=False, reward=None, slo=None,
    healing_matrix=None, render_mode=None)``

    * ``dataset``: a dataset folder path or a ``TelemetryDataset``; None: embedded synthetic.
    * ``stages``: stage names (dataset entities), or ``{stage: entity}``; default: all.
    * ``chaos``: True, False, or a mapping (``rates``, ``rate_scale``, ``severity``, ``warmup_s``).
    * ``scenario``: a scenario YAML path or mapping (see :mod:`healgym.sim.chaos`); random arrivals
      are off under a scenario unless it says ``random_chaos: true``.
    * ``replay_incidents``: start episodes around the dataset's labelled fault windows and track
      them as incidents (the fault is in the real data; healing it splices healthy data in).
    * ``episode_steps``: the episode length when the env is built without ``gymnasium.make``.

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        dataset: str | Path | TelemetryDataset | None = None,
        stages: list[str] | dict[str, str] | None = None,
        step_seconds: float = 10.0,
        chaos: bool | dict[str, Any] | ChaosConfig | None = True,
        scenario: str | Path | dict[str, Any] | Scenario | None = None,
        replay_incidents: bool = False,
        reward: dict[str, Any] | RewardConfig | None = None,
        slo: dict[str, Any] | SLOConfig | None = None,
        healing_matrix: dict[str, dict[str, float]] | None = None,
        episode_steps: int = 360,
        drift_period_s: float = 60.0,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r} is not supported; use 'ansi' or None")
        if step_seconds <= 0:
            raise ConfigError(f"step_seconds={step_seconds!r}: must be > 0 seconds")
        if episode_steps < 1:
            raise ConfigError(f"episode_steps={episode_steps!r}: must be >= 1")
        self.render_mode = render_mode
        if dataset is None:
            ds = default_dataset()
        elif isinstance(dataset, TelemetryDataset):
            ds = dataset
        else:
            ds = load_dataset(dataset)
        self.dataset_name = str(ds.metadata.get("name", "dataset"))
        self.replay = ReplaySource.build(ds, stages)
        self.stages = self.replay.stages
        edges = ds.call_graph
        if edges and self.replay.entities != self.stages:
            ent_to_stage = dict(zip(self.replay.entities, self.stages, strict=True))
            edges = [(ent_to_stage[a], ent_to_stage[b]) for a, b in edges
                     if a in ent_to_stage and b in ent_to_stage]
        self.hops = hops_from_edges(self.stages, [e for e in edges if e[0] in self.stages
                                                  and e[1] in self.stages] or None)
        self.dt = float(step_seconds)
        self.chaos = ChaosConfig.from_value(chaos)
        self.scenario = None if scenario is None else load_scenario(scenario)
        if self.scenario is not None:
            self.scenario.events(self.stages)  # validate stage names now, not mid-episode
        self.replay_incidents = bool(replay_incidents)
        if self.replay_incidents and self.replay.fault_windows.empty:
            raise ConfigError(f"replay_incidents=True, but dataset {self.dataset_name!r} has no "
                              "labelled fault windows for the replayed stages")
        self.reward_cfg = RewardConfig.from_value(reward)
        self.slo = SLOConfig.from_value(slo)
        self.healing = act.healing_matrix(healing_matrix)
        self.episode_steps = int(episode_steps)
        self.drift_every = max(1, int(round(drift_period_s / self.dt)))
        self.actions = act.action_table(self.stages)
        self.action_names = [a.name for a in self.actions]
        self.n_stages = S = len(self.stages)
        self.model_stage = self.stages.index("serve") if "serve" in self.stages else max(S - 2, 0)
        self.action_space = spaces.Discrete(len(self.actions))
        n_obs = 7 * S + 11 + len(self.actions)
        low = np.zeros(n_obs, dtype=np.float32)
        high = np.ones(n_obs, dtype=np.float32)
        low[: 6 * S], high[: 6 * S] = -Z_CLIP, Z_CLIP
        high[7 * S + 2], high[7 * S + 5], high[7 * S + 6] = 10.0, 24.0, 10.0
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._obs_low, self._obs_high = low, high
        self._inv_scale = 1.0 / self.replay.scale
        self._median = self.replay.median
        med = self.replay.median
        self._lat_limit = max(self.slo.latency_factor * med[self.model_stage, LAT],
                              self.replay.q_hi[self.model_stage, LAT])
        self._thr_limit = min(self.slo.throughput_min_factor * med[-1, THR],
                              self.replay.q_lo[-1, THR])
        self._lat_limit_z = ((self._lat_limit - med[self.model_stage, LAT])
                             * self._inv_scale[self.model_stage, LAT])
        self._thr_limit_z = (self._thr_limit - med[-1, THR]) * self._inv_scale[-1, THR]
        self._err_limit_z = (self.slo.error_rate_max - med[:, ERR]) * self._inv_scale[:, ERR]
        self._z_lo = np.maximum((LO - med) * self._inv_scale, -Z_CLIP)
        self._z_hi = np.minimum((HI - med) * self._inv_scale, Z_CLIP)
        self._base_cost = S * DEFAULT_REPLICAS * REPLICA_COST_PER_H
        ref_rng = np.random.default_rng(20260101)  # the model's training distribution, fixed
        self._drift_ref = DriftReference.from_sample(ref_rng.standard_normal(DRIFT_REF_SIZE))
        self._nz, self._ctx = 6 * S, 7 * S
        self._obs_buf = np.zeros(n_obs, dtype=np.float32)
        self._kind_cols = {name: i for i, name in enumerate((*FAULT_NAMES, "unknown"))}
        self._started = False
        # Episode state, (re)built by reset().
        self._base: np.ndarray = np.empty(0)
        self._base_z: np.ndarray = np.empty(0)
        self._base_violation: np.ndarray = np.empty(0)
        self._features: np.ndarray = np.empty(0)
        self._healthy_ks: np.ndarray = np.empty(0)
        self._healthy_psi: np.ndarray = np.empty(0)
        self._acc_noise: np.ndarray = np.empty(0)
        self._heal_u: np.ndarray = np.empty(0)
        self._geometry: FaultGeometry | None = None
        self._drift: tuple[float, float] = (0.0, 0.0)
        self._n = 0

    # ------------------------------------------------------------------ episode set-up
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        scenario = self.scenario
        if "scenario" in options:
            scenario = None if options["scenario"] is None else load_scenario(options["scenario"])
        rng = self.np_random
        n = self.episode_steps
        self._n = 0
        replay_window = self._pick_replay_window(rng, n) if self.replay_incidents else None
        start_row = None if replay_window is None else replay_window[0]
        self._extend_plan(n, start_row)
        events: list[FaultEvent] = []
        if scenario is not None:
            events += scenario.events(self.stages)
        self._random_chaos = scenario is None or scenario.random_chaos
        if self._random_chaos:
            events += draw_random_arrivals(rng, self.chaos, self.stages, n * self.dt)
        # -- state
        self._k, self._t = 0, 0.0
        self._queue: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        for ev in sorted(events, key=lambda e: (e.at_s, e.fault, e.stage)):
            self._push(ev.at_s, "fault", ev)
        self._faults: dict[int, FaultInstance] = {}
        self._uid = 0
        self._incidents: list[Incident] = []
        self._replicas = np.full(self.n_stages, DEFAULT_REPLICAS, dtype=np.int64)
        self._replicas_changed()
        self._watch = False
        self._mask_dirty = True
        self._model_version, self._light = 2, False
        self._in_flight: act.Action | None = None
        self._escalated = False
        self._shedding = False
        self._last_action, self._last_action_t = 0, 0.0
        self._spent = 0.0
        self._downtime_s = 0.0
        self._action_counts: dict[str, int] = {}
        self._invalid = 0
        self._total_reward = 0.0
        self._drift = (0.0, 0.0)
        self._dirty, self._stable_until = True, INF
        self._cap_dirty = True
        self._replayed: tuple[int, int, int, int, str] | None = None
        if replay_window is not None:
            self._start_replayed_incident(*replay_window)
        self._refresh_mask()
        obs, _, _ = self._observe()
        self._started = True
        return obs, self._info(final=False)

    def _extend_plan(self, n: int, start_row: int | None = None) -> None:
        """Draw (or append) the next ``n`` steps of the episode's randomness: the replayed
        baseline, accuracy noise, drift-monitor feature windows and heal draws.

        Under ``gymnasium.make`` the time limit is the registration's ``TimeLimit``, which the
        env cannot see, so the plan grows in chunks of ``episode_steps`` as the episode goes on.
        """
        rng = self.np_random
        base, _ = self.replay.draw_window(rng, n, self.dt, start_row)
        noise = rng.normal(0.0, 0.004, size=n + 1)
        heal_u = rng.random((n + 1, HEAL_SLOTS))
        first = self._n == 0
        n_checks = (self._n + n) // self.drift_every + 2 - (0 if first else len(self._features))
        features = rng.standard_normal((n_checks, DRIFT_WINDOW))
        ks, psi_v = self._drift_ref.scores(features)
        if first:
            self._base, self._acc_noise, self._heal_u = base, noise, heal_u
            self._features, self._healthy_ks, self._healthy_psi = features, ks, psi_v
        else:
            cat = np.concatenate
            self._base = cat([self._base, base[1:]])
            self._acc_noise = cat([self._acc_noise, noise[1:]])
            self._heal_u = cat([self._heal_u, heal_u[1:]])
            self._features = cat([self._features, features])
            self._healthy_ks, self._healthy_psi = (cat([self._healthy_ks, ks]),
                                                   cat([self._healthy_psi, psi_v]))
        self._n += n
        self._precompute_baseline()

    def _grow_plan(self) -> None:
        start = self._n * self.dt
        self._extend_plan(self.episode_steps)
        if self._random_chaos:
            for ev in draw_random_arrivals(self.np_random, self.chaos, self.stages,
                                           self._n * self.dt, start):
                self._push(ev.at_s, "fault", ev)

    def _pick_replay_window(self, rng: np.random.Generator, n: int
                            ) -> tuple[int, int, int, str] | None:
        fw = self.replay.fault_windows
        times, step = self.replay.times, self.replay.step_seconds
        start = unix_seconds(fw["start"])
        end = unix_seconds(fw["end"])
        ok = np.flatnonzero((start >= times[0]) & (end <= times[-1]))
        if ok.size == 0:
            raise ConfigError("replay_incidents=True, but no labelled fault window lies inside "
                              "the replayable span of the chosen stages")
        i = int(ok[rng.integers(ok.size)])
        lead_rows = max(1, int(0.1 * n * self.dt / step))
        onset_row = int(np.searchsorted(times, start[i]))
        end_row = int(np.searchsorted(times, end[i]))
        stage = self.replay.entities.index(fw["entity"].iloc[i])
        ftype = fw["fault_type"].iloc[i]
        ftype = ftype if isinstance(ftype, str) and ftype in FAULT_NAMES else "unknown"
        return max(onset_row - lead_rows, 0), onset_row, max(end_row, onset_row + 1), \
            f"{stage}:{ftype}"

    def _start_replayed_incident(self, start_row: int, onset_row: int, end_row: int,
                                 tag: str) -> None:
        stage_s, ftype = tag.split(":", 1)
        stage = int(stage_s)
        step = self.replay.step_seconds
        onset = (onset_row - start_row) * step
        end = (end_row - start_row) * step
        # A replayed fault has no synthetic effects: the data carries it ("_old_model" is inert
        # on metrics, so it serves as an effect-free carrier); its kind for healing is ftype.
        inst = self._new_instance("unknown" if ftype == "unknown" else ftype, stage, 0.0, onset,
                                  "replay", end_s=end, carrier=True)
        self._replayed = (inst.uid, stage, int(round(onset / self.dt)),
                          int(round(end / self.dt)), ftype)

    # ------------------------------------------------------------------ event machinery
    def _push(self, at: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def _new_instance(self, fault: str, stage: int, severity: float, onset: float, source: str,
                      parent_incident: int | None = None, end_s: float | None = None,
                      carrier: bool = False) -> FaultInstance:
        self._uid += 1
        kind = SPEC_INDEX["_old_model"] if carrier or fault == "unknown" else SPEC_INDEX[fault]
        spec = BY_NAME.get(fault)
        if end_s is None:
            end_s = onset + spec.duration_s + spec.fade_s if spec is not None else INF
        if parent_incident is None:
            inc = Incident(uid=len(self._incidents), fault=fault, stage=self.stages[stage],
                           source=source, onset_s=onset)
            self._incidents.append(inc)
            parent_incident = inc.uid
        inc = self._incidents[parent_incident]
        inc.faults.append(fault)
        inc.active.add(self._uid)
        if inc.detected_s is None:
            self._watch = True
        inst = FaultInstance(self._uid, kind, fault, stage, severity if not carrier else 0.0,
                             onset, parent_incident, end_s)
        self._faults[inst.uid] = inst
        if end_s < INF:
            self._push(end_s, "fault_end", inst.uid)
        if spec is not None and spec.cascade is not None and not carrier:
            child, after = spec.cascade
            self._push(onset + after, "cascade", (inst.uid, child))
        self._dirty = True
        return inst

    def _side_effect(self, name: str, stage: int, until: float) -> FaultInstance:
        self._uid += 1
        inst = FaultInstance(self._uid, SPEC_INDEX[name], name, stage, 1.0, self._t, -1, until)
        self._faults[inst.uid] = inst
        if until < INF:
            self._push(until, "fault_end", inst.uid)
        self._dirty = True
        return inst

    def _clear(self, uid: int, by: str) -> float:
        """Remove a fault; returns the fast-resolution bonus earned (if any)."""
        inst = self._faults.pop(uid, None)
        if inst is None:
            return 0.0
        self._dirty = True
        if inst.incident < 0:
            return 0.0
        if self._replayed is not None and self._replayed[0] == uid and by != "natural":
            self._splice_healthy()
        inc = self._incidents[inst.incident]
        inc.active.discard(uid)
        if inc.active or inc.resolved_s is not None:
            return 0.0
        inc.resolved_s, inc.resolved_by = self._t, by
        if inc.detected_s is None and by != "natural":
            inc.detected_s = self._t  # acting on it is evidence it was noticed
        if self._t - inc.onset_s <= self.reward_cfg.fast_resolution_s:
            return self.reward_cfg.fast_resolution_bonus
        return 0.0

    def _splice_healthy(self) -> None:
        """A healed replayed incident: the rest of its window is replaced by pre-onset data."""
        if self._replayed is None:
            return
        _, stage, onset_k, end_k, _ = self._replayed
        k = self._k
        if k >= end_k:
            return
        length = end_k - k
        src = np.arange(max(onset_k - length, 0), max(onset_k - length, 0) + length)
        src = np.minimum(src, max(onset_k - 1, 0))
        self._base[k:end_k, stage, :] = self._base[src, stage, :]

    def _process_events(self) -> float:
        bonus = 0.0
        q = self._queue
        while q and q[0][0] <= self._t + 1e-9:
            _, _, kind, payload = heapq.heappop(q)
            if kind == "fault":
                ev: FaultEvent = payload
                self._new_instance(ev.fault, ev.stage, ev.severity, self._t, ev.source)
            elif kind == "fault_end":
                bonus += self._clear(payload, "natural")
            elif kind == "cascade":
                parent_uid, child = payload
                parent = self._faults.get(parent_uid)
                if parent is not None:
                    self._new_instance(child, parent.stage, parent.severity, self._t, "cascade",
                                       parent_incident=parent.incident)
            elif kind == "action_done":
                bonus += self._complete(*payload)
            elif kind == "shed_end":
                self._shedding = False
                self._mask_dirty = True
        return bonus

    # ------------------------------------------------------------------ actions
    def _refresh_mask(self) -> None:
        n = len(self.actions)
        mask = np.zeros(n, dtype=np.int8)
        mask[0] = 1
        escalate = n - 1
        if self._in_flight is None:
            S = self.n_stages
            mask[1:1 + S] = 1
            mask[1 + S:1 + 2 * S] = self._replicas < MAX_REPLICAS
            mask[1 + 2 * S:1 + 3 * S] = self._replicas > MIN_REPLICAS
            base = 1 + 3 * S
            mask[base] = self._model_version > 1  # rollback
            mask[base + 1] = 1  # retrain
            mask[base + 2] = 1  # backfill
            mask[base + 3] = not self._light
            mask[base + 4] = self._light
            mask[base + 5] = not self._shedding
            mask[escalate] = 1
        if self._escalated:
            mask[escalate] = 0
        elif self._in_flight is not None:
            mask[escalate] = 1
        budget = self.reward_cfg.cost_budget
        if budget is not None:
            remaining = budget - self._spent
            for a in self.actions[1:]:
                if act.KINDS[a.kind].cost > remaining:
                    mask[a.index] = 0
        mask.flags.writeable = False  # handed out in info without a copy
        self._mask = mask
        self._mask_dirty = False

    def _start(self, a: act.Action) -> float:
        kind = act.KINDS[a.kind]
        cost = kind.cost
        self._spent += cost
        self._mask_dirty = True
        self._action_counts[a.name] = self._action_counts.get(a.name, 0) + 1
        self._last_action, self._last_action_t = a.index, self._t
        if kind.name == "escalate":
            self._escalated = True  # a human is paged; other actions may continue meanwhile
        else:
            self._in_flight = a
        done = self._t + kind.duration_s
        if kind.name == "restart":
            self._side_effect("_restarting", a.stage, done)
        self._push(done, "action_done", (a, self._t))
        return cost

    def _complete(self, a: act.Action, issued_s: float) -> float:
        """An action takes effect: it may heal the faults that were active when it was issued."""
        kind = act.KINDS[a.kind]
        self._mask_dirty = True
        if self._in_flight is a:
            self._in_flight = None
        if kind.name == "escalate":
            self._escalated = False
        u = self._heal_u[self._k]
        bonus = 0.0
        healed_release = False
        slot = 0
        for inst in list(self._faults.values()):
            if (inst.incident < 0 or inst.onset_s > issued_s
                    or (a.stage >= 0 and inst.stage != a.stage)):
                continue
            col = self._kind_cols.get(inst.name, self._kind_cols["unknown"])
            p = self.healing[a.kind, col]
            if act.heal_outcome(u[slot % HEAL_SLOTS], p):
                healed_release |= inst.name in ("bad_model_deploy", "error_spike", "crash_loop",
                                                "schema_mismatch")
                bonus += self._clear(inst.uid, a.name)
            slot += 1
        name = kind.name
        if name == "scale_up":
            self._replicas[a.stage] = min(self._replicas[a.stage] + 1, MAX_REPLICAS)
            self._replicas_changed()
        elif name == "scale_down":
            self._replicas[a.stage] = max(self._replicas[a.stage] - 1, MIN_REPLICAS)
            self._replicas_changed()
        elif name == "rollback":
            self._model_version -= 1
            if not healed_release and not self._has_side("_old_model"):
                self._side_effect("_old_model", self.model_stage, INF)
        elif name == "retrain":
            self._model_version += 1
            self._drop_side("_old_model")
        elif name == "switch_light":
            self._light = True
            self._side_effect("_light_model", self.model_stage, INF)
        elif name == "switch_back":
            self._light = False
            self._drop_side("_light_model")
        elif name == "shed_load":
            self._shedding = True
            self._side_effect("_shedding", self.model_stage, self._t + act.SHED_SECONDS)
            self._push(self._t + act.SHED_SECONDS, "shed_end", None)
        return bonus

    def _undetected(self) -> bool:
        return any(i.detected_s is None and i.resolved_s is None for i in self._incidents)

    def _replicas_changed(self) -> None:
        self._replica_obs = self._replicas / MAX_REPLICAS
        self._replica_cost = float(self._replicas.sum()) * REPLICA_COST_PER_H
        self._cap_dirty = True

    def _has_side(self, name: str) -> bool:
        return any(f.name == name for f in self._faults.values())

    def _drop_side(self, name: str) -> None:
        for uid in [u for u, f in self._faults.items() if f.name == name and f.incident < 0]:
            self._faults.pop(uid)
            self._dirty = True

    # ------------------------------------------------------------------ dynamics
    def _effects(self) -> None:
        """Recompute fault effects only when they change (faults come, go, ramp or fade)."""
        if self._dirty:
            fs = [f for f in self._faults.values() if f.severity != 0.0]
            if fs:
                self._geometry = fault_geometry(
                    np.fromiter((f.kind for f in fs), np.int64, len(fs)),
                    np.fromiter((f.stage for f in fs), np.int64, len(fs)),
                    np.fromiter((f.severity for f in fs), float, len(fs)),
                    np.fromiter((f.onset_s for f in fs), float, len(fs)), self.hops, COMPILED)
            else:
                self._geometry = None
                S = self.n_stages
                self._mult, self._add = np.zeros((S, len(METRICS))), np.zeros((S, len(METRICS)))
                self._ml, self._stable_until = [0.0] * len(ML_SIGNALS), INF
            self._dirty = False
            self._cap_dirty = True
            if self._geometry is not None:
                self._stable_until = -INF
        if self._t >= self._stable_until and self._geometry is not None:
            self._mult, self._add, ml, self._stable_until = effects_at(self._geometry, self._t)
            self._ml = ml.tolist()
            self._cap_dirty = True
        if self._cap_dirty:
            self._factor = effect_factor(self._mult, self._replicas)
            self._cap_dirty = False
            self._clean = not (np.any(self._factor != 1.0) or np.any(self._add != 0.0))
            # z = (clip(base * factor + add) - median) / scale, as one affine map and a clip in
            # z-space (the clip commutes: the map is increasing in each cell).
            self._za = self._factor * self._inv_scale
            self._zb = (self._add - self._median) * self._inv_scale

    def _observe(self) -> tuple[np.ndarray, bool, bool]:
        """Observation at the current time; also returns (SLO violated, alarm).

        With no effect active (the common case) the metrics are the replayed baseline, whose
        z-scores and SLO checks were computed for the whole episode at reset.
        """
        self._effects()
        k = self._k
        obs = self._obs_buf.copy()
        nz = self._nz
        if self._clean:
            raw = self._base[k]
            obs[:nz] = self._base_z[k]
            metric_violation = bool(self._base_violation[k])
        else:
            zf = self._base[k] * self._za
            zf += self._zb
            # SLO checks in unclipped z-space; exact since every limit is within physical bounds.
            metric_violation = bool(
                zf[self.model_stage, LAT] > self._lat_limit_z or zf[-1, THR] < self._thr_limit_z
                or (zf[:, ERR] > self._err_limit_z).any()
            )
            z = obs[:nz].reshape(zf.shape)
            np.maximum(zf, self._z_lo, out=z, casting="unsafe")
            np.minimum(z, self._z_hi, out=z)
            raw = None
        self._raw_cache = raw
        ml = self._ml
        accuracy = min(max(BASE_ACCURACY + ml[ACC], 0.0), 1.0)
        acc_est = min(max(accuracy + self._acc_noise[k], 0.0), 1.0)
        null_rate = min(max(BASE_NULL_RATE + ml[NULL], 0.0), 1.0)
        schema = min(max(ml[SCHEMA], 0.0), 1.0)
        stale = max(BASE_STALENESS_S + ml[STALE], 0.0)
        cost = self._replica_cost * max(1.0 + ml[COST], 0.0)
        cost_factor = cost / self._base_cost
        self._cost_rate = cost
        if k % self.drift_every == 0:
            j = k // self.drift_every
            if ml[SHIFT] != 0.0:
                ks_w, psi_w = self._drift_ref.scores(self._features[j] + ml[SHIFT])
                self._drift = (float(ks_w[0]), float(psi_w[0]))
            else:
                self._drift = (float(self._healthy_ks[j]), float(self._healthy_psi[j]))
        ks_v, psi_v = self._drift
        slo = self.slo
        violated = (
            metric_violation
            or accuracy < slo.accuracy_min
            or stale > slo.staleness_max_s
            or null_rate > slo.null_rate_max
            or schema > slo.schema_error_max
            or cost_factor > slo.cost_factor_max
        )
        S, i = self.n_stages, self._ctx
        obs[6 * S: 7 * S] = self._replica_obs
        obs[i: i + 11] = (
            acc_est, ks_v, min(psi_v, 10.0), null_rate, schema, min(stale / 3600.0, 24.0),
            min(cost_factor, 10.0), min((self._t - self._last_action_t) / 3600.0, 1.0),
            float(self._in_flight is not None), float(self._light),
            float(self._model_version > 1),
        )
        obs[i + 11 + self._last_action] = 1.0
        alarm = violated
        if not violated and self._watch:
            alarm = bool(
                np.abs(obs[:nz]).max() > DETECT_Z or psi_v > 0.25
                or acc_est < BASE_ACCURACY - 0.05
            )
        self._accuracy = accuracy
        return obs, violated, alarm

    def _precompute_baseline(self) -> None:
        """z-scores and metric SLO checks of the fault-free baseline, for every step."""
        base = self._base
        z = (base - self._median) * self._inv_scale
        self._base_z = np.clip(z, -Z_CLIP, Z_CLIP).reshape(len(base), -1).astype(np.float32)
        self._base_violation = (
            (base[:, self.model_stage, LAT] > self._lat_limit)
            | (base[:, -1, THR] < self._thr_limit)
            | (base[:, :, ERR] > self.slo.error_rate_max).any(axis=1)
        )

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = int(action)
        if not 0 <= a < len(self.actions):
            raise gym.error.InvalidAction(
                f"action {action!r} is outside Discrete({len(self.actions)})")
        if self._k >= self._n:
            self._grow_plan()
        reward = 0.0
        invalid = not self._mask[a]
        if invalid:
            self._invalid += 1
            reward -= self.reward_cfg.invalid_action_penalty
        elif a != 0:
            reward -= self.reward_cfg.action_cost_weight * self._start(self.actions[a])
        self._k += 1
        self._t = self._k * self.dt
        if self._queue and self._queue[0][0] <= self._t + 1e-9:
            reward += self._process_events()
        obs, violated, alarm = self._observe()
        if violated:
            self._downtime_s += self.dt
            reward -= self.reward_cfg.slo_violation_per_s * self.dt
        if self._cost_rate != self._base_cost:
            reward -= (self.reward_cfg.infra_cost_weight * (self._cost_rate - self._base_cost)
                       * self.dt / 3600.0)
        if alarm and self._watch:
            for inc in self._incidents:
                if inc.detected_s is None and inc.resolved_s is None and inc.onset_s <= self._t:
                    inc.detected_s = self._t
            self._watch = self._undetected()
        if self._mask_dirty:
            self._refresh_mask()
        self._total_reward += reward
        # Built directly, the env's own episode_steps is the limit; under gymnasium.make the
        # registration's TimeLimit is, and the plan grows when a step goes past it.
        truncated = self.spec is None and self._k >= self._n
        if truncated:
            self._started = False
        info = self._info(final=truncated)
        info["slo_violated"] = violated
        if invalid:
            info["invalid_action"] = True
        return obs, float(reward), False, truncated, info

    # ------------------------------------------------------------------ reporting
    def _info(self, final: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"action_mask": self._mask, "time_s": self._t}
        if self._faults:
            info["faults"] = [(f.name, self.stages[f.stage]) for f in self._faults.values()
                              if f.incident >= 0]
        else:
            info["faults"] = []
        if final:
            info["episode_metrics"] = self.episode_metrics()
        return info

    def action_masks(self) -> np.ndarray:
        """The current action mask (for maskable-policy libraries)."""
        return self._mask.copy()

    def episode_metrics(self) -> dict[str, Any]:
        """Metrics of the episode so far: incidents with MTTR, downtime, uptime, actions."""
        elapsed = self._t
        incidents = [inc.as_dict() for inc in self._incidents]
        resolved = [i["mttr_s"] for i in incidents if i["mttr_s"] is not None]
        return {
            "elapsed_s": elapsed,
            "incidents": incidents,
            "n_incidents": len(incidents),
            "resolved_incidents": len(resolved),
            "unresolved_incidents": len(incidents) - len(resolved),
            "mean_mttr_s": float(np.mean(resolved)) if resolved else None,
            "downtime_s": self._downtime_s,
            "uptime_pct": 100.0 * (1.0 - self._downtime_s / elapsed) if elapsed > 0 else 100.0,
            "actions_taken": dict(self._action_counts),
            "n_actions": int(sum(self._action_counts.values())),
            "action_cost": self._spent,
            "invalid_actions": self._invalid,
            "total_reward": self._total_reward,
        }

    def render(self) -> str | None:  # type: ignore[override]
        if self.render_mode != "ansi":
            return None
        from healgym.render import dashboard

        return dashboard(self)

    @property
    def _raw(self) -> np.ndarray:
        """Current raw metrics (S, M); computed on demand, the hot path works in z-space."""
        if self._raw_cache is None:
            raw = self._base[self._k] * self._factor + self._add
            self._raw_cache = np.clip(raw, LO, HI)
        return self._raw_cache

    @property
    def ml_health(self) -> dict[str, float]:
        """Current true ML health signals (the observation holds their estimates)."""
        ml = self._ml
        return {
            "accuracy": self._accuracy,
            "covariate_shift": ml[SHIFT],
            "null_rate": min(max(BASE_NULL_RATE + ml[NULL], 0.0), 1.0),
            "schema_error_rate": min(max(ml[SCHEMA], 0.0), 1.0),
            "staleness_s": max(BASE_STALENESS_S + ml[STALE], 0.0),
            "cost_factor": self._cost_rate / self._base_cost,
            "drift_ks": self._drift[0],
            "drift_psi": self._drift[1],
        }

    @property
    def raw_metrics(self) -> dict[str, dict[str, float]]:
        """The current raw (unnormalised) metrics per stage, for dashboards and analysis."""
        return {s: {m: float(self._raw[i, j]) for j, m in enumerate(METRICS)}
                for i, s in enumerate(self.stages)}
