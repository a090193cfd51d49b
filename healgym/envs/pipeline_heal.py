"""``healgym/PipelineHeal-v0``: heal an ML pipeline whose telemetry is replayed from real logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from healgym.errors import ConfigError
from healgym.sim import actions as act
from healgym.sim import rng as crng
from healgym.sim.chaos import ChaosConfig, Scenario
from healgym.sim.episode import (
    draw_schedule,
    episode_consts,
    fill_rows,
    next_key,
    pick_window,
    seed_key,
)
from healgym.sim.faults import (
    BY_NAME,
    COMPILED,
    COST,
    ERR,
    FAULT_NAMES,
    INF,
    LAT,
    METRICS,
    ML_SIGNALS,
    SHIFT,
    SPEC_INDEX,
    THR,
    FaultGeometry,
    effect_factor,
    effects_at,
    fault_geometry,
)
from healgym.sim.model import (
    ACC_NOISE_SD,
    BASE_ACCURACY,
    CARRIER_KIND,
    DEFAULT_REPLICAS,
    DETECT_Z,
    ESCALATE_STREAM,
    F_MAX,
    HEAL_STREAM,
    I_MAX,
    MAX_REPLICAS,
    MIN_REPLICAS,
    RELEASE_FAULTS,
    REPLICA_COST_PER_H,
    affine,
    base_z,
    build_model,
    default_dataset,
    hops_from_edges,
    ml_signals,
)
from healgym.sim.observation import clip_z, pack_tail
from healgym.sim.replay import HI, LO, interpolate
from healgym.sim.reward import RewardConfig, SLOConfig
from healgym.telemetry.dataset import TelemetryDataset

__all__ = ["PipelineHealEnv", "default_dataset", "hops_from_edges"]


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
    cascade_s: float = INF  # when its cascade child is due (INF: none or done)


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
        stages: list[str] | dict[str, str] | str | None = None,
        step_seconds: float = 10.0,
        chaos: bool | dict[str, Any] | ChaosConfig | None = True,
        scenario: str | Path | dict[str, Any] | Scenario | None = None,
        replay_incidents: bool = False,
        reward: dict[str, Any] | RewardConfig | None = None,
        slo: dict[str, Any] | SLOConfig | None = None,
        healing_matrix: dict[str, dict[str, float]] | None = None,
        episode_steps: int = 360,
        drift_period_s: float = 60.0,
        time_range: tuple[float, float] | list[float] = (0.0, 1.0),
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r} is not supported; use 'ansi' or None")
        self.render_mode = render_mode
        self.model = m = build_model(
            dataset=dataset, stages=stages, step_seconds=step_seconds, chaos=chaos,
            scenario=scenario, replay_incidents=replay_incidents, reward=reward, slo=slo,
            healing_matrix=healing_matrix, episode_steps=episode_steps,
            drift_period_s=drift_period_s, time_range=time_range)
        self.observation_space = m.observation_space
        self.action_space = m.action_space
        self._started = False
        self._n = 0
        self._base: np.ndarray = np.empty(0)
        self._geometry: FaultGeometry | None = None
        self._drift: tuple[float, float] = (0.0, 0.0)
        self._raw_cache: np.ndarray | None = None
        self._fault_list: list[tuple[str, str]] = []
        self._key = -1  # the episode key (-1: not drawn yet)
        self._default_consts: Any = None

    # Read-only views of the model, for users and tests.
    dataset_name = property(lambda self: self.model.dataset_name)
    replay = property(lambda self: self.model.replay)
    stages = property(lambda self: self.model.stages)
    n_stages = property(lambda self: self.model.n_stages)
    hops = property(lambda self: self.model.hops)
    dt = property(lambda self: self.model.dt)
    actions = property(lambda self: self.model.actions)
    action_names = property(lambda self: self.model.action_names)
    model_stage = property(lambda self: self.model.model_stage)
    reward_cfg = property(lambda self: self.model.reward)
    slo = property(lambda self: self.model.slo)
    healing = property(lambda self: self.model.healing)
    chaos = property(lambda self: self.model.chaos)
    scenario = property(lambda self: self.model.scenario)
    episode_steps = property(lambda self: self.model.episode_steps)

    # ------------------------------------------------------------------ episode set-up
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        m = self.model
        scenario = m.scenario_for(options)
        if seed is not None:
            self._key = int(seed_key(seed))
        elif self._key >= 0:
            self._key = int(next_key(np.uint64(self._key)))
        else:
            self._key = crng.draw_key(self.np_random)
        ec = self._episode_consts(scenario, options)
        # The set-up draws (healgym.sim.episode), shared with the vector env's kernel.
        replay_window = None
        if ec.replay_on:
            start_row, onset_row, end_row, stage, col = ec.win[pick_window(np.uint64(self._key),
                                                                          len(ec.win))]
            replay_window = (int(start_row), int(onset_row), int(end_row),
                             f"{int(stage)}:{(*FAULT_NAMES, 'unknown')[int(col)]}")
        rows = np.empty(ec.rows_needed, dtype=np.int64)
        fill_rows(np.uint64(self._key), 0, ec.seg_start, ec.seg_end, ec.rows_needed,
                  -1 if replay_window is None else replay_window[0], rows)
        self._n = 0
        self._extend_plan(m.episode_steps, rows)
        self._precompute_draws()
        self._random_chaos = ec.random_chaos
        self._events, dropped = draw_schedule(ec, self._key)
        self._ev_next = 0
        # -- state
        self._k, self._t = 0, 0.0
        self._faults: dict[int, FaultInstance] = {}
        self._uid = 0
        self._incidents: list[Incident] = []
        self._dropped = dropped
        self._replicas = np.full(m.n_stages, DEFAULT_REPLICAS, dtype=np.int64)
        self._replicas_changed()
        self._model_version, self._light = 2, False
        self._in_flight: act.Action | None = None
        self._done_s, self._issued_s = INF, 0.0
        self._esc_done_s, self._esc_issued_s = INF, 0.0
        self._last_action, self._last_action_t = 0, 0.0
        self._spent = 0.0
        self._downtime_s = 0.0
        self._action_counts: dict[str, int] = {}
        self._invalid = 0
        self._ineffective = 0
        self._total_reward = 0.0
        self._drift = (0.0, 0.0)
        self._watch = False
        self._dirty = True
        self._stable_until = INF
        self._replayed: tuple[int, int, int, int, str] | None = None
        if replay_window is not None:
            self._start_replayed_incident(*replay_window)
        self._next_event_s = self._next_event()
        self._refresh_mask()
        obs, _, _ = self._observe()
        self._started = True
        return obs, self._info(final=False)

    def _episode_consts(self, scenario: Scenario | None, options: dict[str, Any] | None
                        ) -> Any:
        """The model's set-up constants with this reset's scenario (cached for the default)."""
        if options and "scenario" in options:
            return episode_consts(self.model, scenario)
        if self._default_consts is None:
            self._default_consts = episode_consts(self.model, scenario)
        return self._default_consts

    def _extend_plan(self, n: int, rows: np.ndarray) -> None:
        """Append the replayed baseline of the next ``n`` steps, from dataset ``rows``."""
        m = self.model
        chunk = interpolate(m.replay.values, rows, np.arange(n + 1), m.dt, m.replay.step_seconds)
        self._base = chunk if self._n == 0 else np.concatenate([self._base, chunk[1:]])
        self._n += n
        za, zb = affine(m, np.ones_like(m.median), np.zeros_like(m.median))
        self._clean_za, self._clean_zb = za, zb
        zf, violated = base_z(m, self._base, za, zb)
        self._clean_z = clip_z(m, zf).reshape(
            len(self._base), -1).astype(np.float32)
        self._clean_violation = violated

    def _precompute_draws(self) -> None:
        """Counter-based draws of the plan's steps: accuracy noise and drift-window picks."""
        m = self.model
        k = np.arange(self._n + 1)
        self._acc_noise = ACC_NOISE_SD * crng.normal(self._key, k)
        checks = np.arange(self._n // m.drift_every + 2)
        self._drift_idx = (crng.uniform(self._key, checks, crng.DRIFT_WINDOW)
                           * len(m.drift.windows)).astype(np.int64)

    def _start_replayed_incident(self, start_row: int, onset_row: int, end_row: int,
                                 tag: str) -> None:
        stage_s, ftype = tag.split(":", 1)
        stage = int(stage_s)
        step = self.model.replay.step_seconds
        onset = (onset_row - start_row) * step
        end = (end_row - start_row) * step
        # The fault is in the data: no synthetic effect (severity 0), healed by its type's row.
        inst = self._new_instance(ftype, stage, 0.0, onset, "replay", end_s=end, carrier=True)
        if inst is not None:
            self._replayed = (inst.uid, stage, int(round(onset / self.dt)),
                              int(round(end / self.dt)), ftype)

    # ------------------------------------------------------------------ instances, incidents
    def _new_instance(self, fault: str, stage: int, severity: float, onset: float, source: str,
                      parent_incident: int | None = None, end_s: float | None = None,
                      carrier: bool = False) -> FaultInstance | None:
        if len(self._faults) >= F_MAX or (parent_incident is None
                                          and len(self._incidents) >= I_MAX):
            self._dropped += 1
            return None
        self._uid += 1
        kind = CARRIER_KIND if carrier else SPEC_INDEX[fault]
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
        cascade = (onset + spec.cascade[1] if spec is not None and spec.cascade is not None
                   and not carrier else INF)
        inst = FaultInstance(self._uid, kind, fault, stage, 0.0 if carrier else severity, onset,
                             parent_incident, end_s, cascade)
        self._faults[inst.uid] = inst
        self._dirty = True
        return inst

    def _side_effect(self, name: str, stage: int, until: float) -> None:
        if len(self._faults) >= F_MAX:
            self._dropped += 1
            return
        self._uid += 1
        self._faults[self._uid] = FaultInstance(self._uid, SPEC_INDEX[name], name, stage, 1.0,
                                                self._t, -1, until)
        self._dirty = True

    def _clear(self, uid: int, by: str) -> float:
        """Remove a fault; returns the fast-resolution bonus earned (if any)."""
        inst = self._faults.pop(uid)
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
        src = np.minimum(np.arange(max(onset_k - (end_k - k), 0),
                                   max(onset_k - (end_k - k), 0) + end_k - k),
                         max(onset_k - 1, 0))
        self._base[k:end_k, stage, :] = self._base[src, stage, :]
        m = self.model
        zf, violated = base_z(m, self._base[k:end_k], self._clean_za, self._clean_zb)
        self._clean_z[k:end_k] = clip_z(m, zf).reshape(
            end_k - k, -1)
        self._clean_violation[k:end_k] = violated

    # ------------------------------------------------------------------ events
    def _next_event(self) -> float:
        t = INF
        for f in self._faults.values():
            t = min(t, f.end_s, f.cascade_s)
        if self._ev_next < len(self._events):
            t = min(t, self._events[self._ev_next].at_s)
        return min(t, self._done_s, self._esc_done_s)

    def _process_events(self) -> float:
        """Events due by now, in a fixed order: natural ends, the action's completion, the
        escalation's completion, cascades, new faults (each in creation order)."""
        t = self._t
        bonus = 0.0
        for inst in [f for f in self._faults.values() if f.end_s <= t]:
            bonus += self._clear(inst.uid, "natural")
        if self._done_s <= t and self._in_flight is not None:
            a, issued = self._in_flight, self._issued_s
            self._in_flight, self._done_s = None, INF
            bonus += self._complete(a, issued, HEAL_STREAM)
        if self._esc_done_s <= t:
            issued = self._esc_issued_s
            self._esc_done_s = INF
            bonus += self._complete(self.actions[-1], issued, ESCALATE_STREAM)
        for inst in [f for f in self._faults.values() if f.cascade_s <= t]:
            inst.cascade_s = INF
            child = BY_NAME[inst.name].cascade[0]  # type: ignore[index]
            self._new_instance(child, inst.stage, inst.severity, t, "cascade",
                               parent_incident=inst.incident)
        events = self._events
        while self._ev_next < len(events) and events[self._ev_next].at_s <= t:
            ev = events[self._ev_next]
            self._ev_next += 1
            self._new_instance(ev.fault, ev.stage, ev.severity, t, ev.source)
        self._next_event_s = self._next_event()
        self._mask_dirty = True
        return bonus

    # ------------------------------------------------------------------ actions
    def _refresh_mask(self) -> None:
        n = len(self.actions)
        S = self.n_stages
        mask = np.zeros(n, dtype=np.int8)
        mask[0] = 1
        if self._in_flight is None:
            mask[1:1 + S] = 1
            mask[1 + S:1 + 2 * S] = self._replicas < MAX_REPLICAS
            mask[1 + 2 * S:1 + 3 * S] = self._replicas > MIN_REPLICAS
            base = 1 + 3 * S
            mask[base] = self._model_version > 1  # rollback
            mask[base + 1] = 1  # retrain
            mask[base + 2] = 1  # backfill
            mask[base + 3] = not self._light
            mask[base + 4] = self._light
            mask[base + 5] = not self._shedding()
        mask[n - 1] = self._esc_done_s == INF  # escalate: unless a human is already paged
        budget = self.reward_cfg.cost_budget
        if budget is not None:
            remaining = budget - self._spent
            for a in self.actions[1:]:
                if act.KINDS[a.kind].cost > remaining:
                    mask[a.index] = 0
        mask.flags.writeable = False  # handed out in info without a copy
        self._mask = mask
        self._mask_dirty = False

    def _shedding(self) -> bool:
        return any(f.name == "_shedding" for f in self._faults.values())

    def _start(self, a: act.Action) -> float:
        kind = act.KINDS[a.kind]
        self._spent += kind.cost
        self._mask_dirty = True
        self._action_counts[a.name] = self._action_counts.get(a.name, 0) + 1
        self._last_action, self._last_action_t = a.index, self._t
        done = self._t + kind.duration_s
        if kind.name == "escalate":
            self._esc_done_s, self._esc_issued_s = done, self._t  # works alongside others
        else:
            self._in_flight, self._done_s, self._issued_s = a, done, self._t
        if kind.name == "restart":
            self._side_effect("_restarting", a.stage, done)
        self._next_event_s = min(self._next_event_s, done)
        return kind.cost

    def _complete(self, a: act.Action, issued_s: float, stream: int) -> float:
        """An action takes effect: it may heal the faults that were active when it was issued."""
        kind = act.KINDS[a.kind]
        bonus = 0.0
        healed_release = healed = False
        j = 0
        for inst in list(self._faults.values()):
            if (inst.incident < 0 or inst.onset_s > issued_s
                    or (a.stage >= 0 and inst.stage != a.stage)):
                continue
            p = self.healing[a.kind, self.model.fault_cols.get(inst.name,
                                                               self.model.fault_cols["unknown"])]
            u = float(crng.uniform(self._key, self._k, stream + j))
            j += 1
            if u < p:
                healed_release |= inst.name in RELEASE_FAULTS
                bonus += self._clear(inst.uid, a.name)
                healed = True
        if not healed:
            self._ineffective += 1  # it fixed nothing (whatever else it did)
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
            self._side_effect("_shedding", self.model_stage, self._t + act.SHED_SECONDS)
        return bonus

    def _undetected(self) -> bool:
        return any(i.detected_s is None and i.resolved_s is None for i in self._incidents)

    def _replicas_changed(self) -> None:
        self._replica_obs = self._replicas / MAX_REPLICAS
        self._replica_cost = float(self._replicas.sum()) * REPLICA_COST_PER_H
        self._dirty = True

    def _has_side(self, name: str) -> bool:
        return any(f.name == name and f.incident < 0 for f in self._faults.values())

    def _drop_side(self, name: str) -> None:
        for uid in [u for u, f in self._faults.items() if f.name == name and f.incident < 0]:
            self._faults.pop(uid)
            self._dirty = True

    # ------------------------------------------------------------------ dynamics
    def _effects(self) -> None:
        """Recompute fault effects only when they change (faults come, go, ramp or fade)."""
        m = self.model
        if self._dirty:
            self._fault_list = [(f.name, m.stages[f.stage]) for f in self._faults.values()
                                if f.incident >= 0]
            fs = [f for f in self._faults.values() if f.severity != 0.0]
            self._geometry = fault_geometry(
                np.fromiter((f.kind for f in fs), np.int64, len(fs)),
                np.fromiter((f.stage for f in fs), np.int64, len(fs)),
                np.fromiter((f.severity for f in fs), float, len(fs)),
                np.fromiter((f.onset_s for f in fs), float, len(fs)), m.hops, COMPILED,
            ) if fs else None
            self._dirty = False
            self._stable_until = -INF
        if self._t >= self._stable_until:
            if self._geometry is None:
                S = m.n_stages
                mult, add = np.zeros((S, len(METRICS))), np.zeros((S, len(METRICS)))
                ml, self._stable_until = np.zeros(len(ML_SIGNALS)), INF
            else:
                mult, add, ml, self._stable_until = effects_at(self._geometry, self._t)
            self._mult, self._add, self._ml = mult, add, ml
            self._factor = effect_factor(mult, self._replicas)
            self._clean = not (np.any(self._factor != 1.0) or np.any(add != 0.0))
            self._za, self._zb = affine(m, self._factor, add)
            acc, null, schema, stale = ml_signals(ml)
            self._ml_now = (float(acc), float(null), float(schema), float(stale),
                            float(ml[SHIFT]), max(1.0 + float(ml[COST]), 0.0))

    def _observe(self) -> tuple[np.ndarray, bool, bool]:
        """Observation at the current time; also returns (SLO violated, alarm)."""
        m = self.model
        self._effects()
        k = self._k
        obs = np.zeros(m.n_obs, dtype=np.float32)
        nz = 6 * m.n_stages
        if self._clean:
            obs[:nz] = self._clean_z[k]
            metric_violation = bool(self._clean_violation[k])
        else:
            zf = self._base[k] * self._za
            zf += self._zb
            metric_violation = bool(
                zf[m.model_stage, LAT] > m.lat_limit_z or zf[-1, THR] < m.thr_limit_z
                or (zf[:, ERR] > m.err_limit_z).any())
            obs[:nz] = clip_z(m, zf, out=zf).ravel()
        self._raw_cache = None
        accuracy, null_rate, schema, stale, shift, cost_mult = self._ml_now
        acc_est = min(max(accuracy + self._acc_noise[k], 0.0), 1.0)
        cost = self._replica_cost * cost_mult
        cost_factor = cost / m.base_cost
        self._cost_rate = cost
        if k % m.drift_every == 0:
            j = self._drift_idx[k // m.drift_every]
            if shift == 0.0:
                self._drift = (float(m.drift.healthy_ks[j]), float(m.drift.healthy_psi[j]))
            else:
                ks_a, psi_a = m.drift.scores(np.asarray(j), np.asarray(shift))
                self._drift = (float(ks_a[0]), float(psi_a[0]))
        ks_v, psi_v = self._drift
        slo = m.slo
        violated: bool = (
            metric_violation
            or accuracy < slo.accuracy_min
            or stale > slo.staleness_max_s
            or null_rate > slo.null_rate_max
            or schema > slo.schema_error_max
            or cost_factor > slo.cost_factor_max
        )
        pack_tail(obs, m.n_stages, self._replica_obs, (
            acc_est, ks_v, min(psi_v, 10.0), null_rate, schema, min(stale / 3600.0, 24.0),
            min(cost_factor, 10.0), min((self._t - self._last_action_t) / 3600.0, 1.0),
            float(self._in_flight is not None), float(self._light),
            float(self._model_version > 1),
        ), self._last_action)
        alarm = violated
        if not violated and self._watch:
            alarm = bool(np.abs(obs[:nz]).max() > DETECT_Z or psi_v > 0.25
                         or acc_est < BASE_ACCURACY - 0.05)
        self._accuracy = accuracy
        return obs, violated, alarm

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = int(action)
        if not 0 <= a < len(self.actions):
            raise gym.error.InvalidAction(
                f"action {action!r} is outside Discrete({len(self.actions)})")
        reward = 0.0
        invalid = not self._mask[a]
        if invalid:
            self._invalid += 1
            reward -= self.reward_cfg.invalid_action_penalty
        elif a != 0:
            reward -= self.reward_cfg.action_cost_weight * self._start(self.actions[a])
        self._k += 1
        self._t = self._k * self.dt
        if self._t >= self._next_event_s:
            reward += self._process_events()
        obs, violated, alarm = self._observe()
        if violated:
            self._downtime_s += self.dt
            reward -= self.reward_cfg.slo_violation_per_s * self.dt
        if self._cost_rate != self.model.base_cost:
            reward -= (self.reward_cfg.infra_cost_weight * (self._cost_rate - self.model.base_cost)
                       * self.dt / 3600.0)
        if alarm and self._watch:
            for inc in self._incidents:
                if inc.detected_s is None and inc.resolved_s is None and inc.onset_s <= self._t:
                    inc.detected_s = self._t
            self._watch = self._undetected()
        if self._mask_dirty:
            self._refresh_mask()
        self._total_reward += reward
        # The episode's replayed window ends: truncation (the registration's TimeLimit, at the
        # same default length, agrees; change both with episode_steps=N, max_episode_steps=N).
        truncated = self._k >= self._n
        if truncated:
            self._started = False
        info = self._info(final=truncated)
        info["slo_violated"] = violated
        if invalid:
            info["invalid_action"] = True
        return obs, float(reward), False, truncated, info

    # ------------------------------------------------------------------ reporting
    def _info(self, final: bool) -> dict[str, Any]:
        info: dict[str, Any] = {"action_mask": self._mask, "time_s": self._t,
                                "faults": self._fault_list}
        if final:
            info["episode_metrics"] = self.episode_metrics()
        return info

    def action_masks(self) -> np.ndarray:
        """The current action mask (for maskable-policy libraries)."""
        return self._mask.copy()

    def episode_metrics(self) -> dict[str, Any]:
        """Metrics of the episode so far: incidents with MTTR, downtime, uptime, actions."""
        return episode_metrics(self._t, [inc.as_dict() for inc in self._incidents],
                               self._downtime_s, dict(self._action_counts), self._spent,
                               self._invalid, self._total_reward, self._dropped,
                               self._ineffective)

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
        accuracy, null_rate, schema, stale, shift, _ = self._ml_now
        return {
            "accuracy": accuracy, "covariate_shift": shift, "null_rate": null_rate,
            "schema_error_rate": schema, "staleness_s": stale,
            "cost_factor": self._cost_rate / self.model.base_cost,
            "drift_ks": self._drift[0], "drift_psi": self._drift[1],
        }

    @property
    def raw_metrics(self) -> dict[str, dict[str, float]]:
        """The current raw (unnormalised) metrics per stage, for dashboards and analysis."""
        return {s: {m: float(self._raw[i, j]) for j, m in enumerate(METRICS)}
                for i, s in enumerate(self.stages)}


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
