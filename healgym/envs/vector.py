"""A natively batched ``healgym/PipelineHeal-v0``: N pipelines stepped with array operations.

``gymnasium.make_vec("healgym/PipelineHeal-v0", num_envs=N)`` returns a
:class:`PipelineHealVectorEnv`. It is the same model as the scalar env (:mod:`healgym.sim.model`,
the pure functions of :mod:`healgym.sim.faults`, :mod:`healgym.sim.replay`,
:mod:`healgym.sim.drift` and the counter-based draws of :mod:`healgym.sim.rng`), and sub-env
``i`` reset with ``seed=s`` is the scalar env reset with ``seed=s + i``: same observations,
rewards, truncations and episode metrics for the same actions (tested bit for bit).

State is one array per field, shape (N,) or (N, slots), rather than an (N, fields) matrix. Faults
and action side effects live in ``F_MAX`` slots per env, kept in creation order (as the scalar env
keeps its instances), incidents in ``I_MAX`` slots.

Autoreset mode: ``NEXT_STEP`` (a finished sub-env is reset by the following ``step`` call,
whose action for it is ignored, and returns its first observation with reward 0).

Info, each key with its ``_key`` mask: ``action_mask`` (N, A), ``time_s``, ``slo_violated``,
``invalid_action``, ``n_faults`` (active faults, the ground truth count), and on the last step of
a sub-env's episode ``episode_metrics`` (an object array of dicts, as the scalar env's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from healgym.envs.pipeline_heal import episode_metrics
from healgym.errors import ConfigError
from healgym.sim import actions as act
from healgym.sim import rng as crng
from healgym.sim.chaos import ChaosConfig, Scenario, draw_random_arrivals
from healgym.sim.faults import (
    ALL_SPECS,
    COMPILED,
    COST,
    CPU,
    FAULT_NAMES,
    INF,
    LAT,
    MAX_HOPS,
    METRICS,
    ML_SIGNALS,
    SHIFT,
    SPEC_INDEX,
    FaultGeometry,
    intensities,
    stable_until,
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
    SIDE_KINDS,
    affine,
    build_model,
    ml_signals,
    pick_replay_window,
)
from healgym.sim.replay import interpolate
from healgym.sim.reward import RewardConfig, SLOConfig
from healgym.telemetry.dataset import TelemetryDataset
from healgym.telemetry.schema import unix_seconds

SOURCES = ("chaos", "scenario", "cascade", "replay")
FAULT_CODE = {name: i for i, name in enumerate((*FAULT_NAMES, "unknown"))}
FAULT_LABEL = (*FAULT_NAMES, "unknown")
NATURAL, UNRESOLVED = -1, -2
SPEC_FAULT_COL = np.array([FAULT_CODE.get(s.name, -1) for s in ALL_SPECS])
CASCADE_AFTER = np.array([s.cascade[1] if s.cascade else INF for s in ALL_SPECS])
CASCADE_CHILD = np.array([SPEC_INDEX[s.cascade[0]] if s.cascade else -1 for s in ALL_SPECS])
END_AFTER = np.array([s.duration_s + s.fade_s for s in ALL_SPECS])
RESTART, SHED, LIGHT, OLD = (SIDE_KINDS[k] for k in ("_restarting", "_shedding", "_light_model",
                                                     "_old_model"))
N_FAULT_PER_INCIDENT = 4


class PipelineHealVectorEnv(VectorEnv):
    """N healgym pipelines stepped at once; see the module docstring and ``PipelineHealEnv``."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 360,
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
        render_mode: str | None = None,
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r}: must be >= 1")
        if render_mode is not None:
            raise ConfigError("the vector env does not render; use the scalar env's 'ansi' mode")
        # The episode is max_episode_steps long (make_vec passes the registration's); the scalar
        # env with episode_steps equal to it is the same model. Without a limit, the plan grows
        # by episode_steps at a time.
        self.model = m = build_model(
            dataset=dataset, stages=stages, step_seconds=step_seconds, chaos=chaos,
            scenario=scenario, replay_incidents=replay_incidents, reward=reward, slo=slo,
            healing_matrix=healing_matrix,
            episode_steps=int(max_episode_steps) if max_episode_steps else episode_steps,
            drift_period_s=drift_period_s)
        self.num_envs = N = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.render_mode = None
        self.single_observation_space = m.observation_space
        self.single_action_space = m.action_space
        self.observation_space = batch_space(m.observation_space, N)
        self.action_space = batch_space(m.action_space, N)
        self._gens: list[np.random.Generator] = []
        self._started = False
        S, M = m.n_stages, len(METRICS)
        A = len(m.actions)
        self._kinds = np.array([a.kind for a in m.actions])
        self._astage = np.array([a.stage for a in m.actions])
        self._acost = np.array([act.KINDS[a.kind].cost for a in m.actions])
        self._adur = np.array([act.KINDS[a.kind].duration_s for a in m.actions])
        self._escalate = A - 1
        kinds = [k.name for k in act.KINDS]
        self._k_idx = {name: kinds.index(name) for name in kinds}
        self._release = np.zeros(len(FAULT_CODE), dtype=bool)
        for name in RELEASE_FAULTS:
            self._release[FAULT_CODE[name]] = True
        self._clean_za, self._clean_zb = affine(m, np.ones((S, M)), np.zeros((S, M)))
        self._alloc(N, S, M, A)

    # ------------------------------------------------------------------ storage
    def _alloc(self, N: int, S: int, M: int, A: int) -> None:
        K = len(ML_SIGNALS)
        z = np.zeros
        self.k = z(N, np.int64)
        self.t = z(N)
        self.n_plan = z(N, np.int64)
        self.k0 = z(N, np.int64)
        self.rows = z((N, 2), np.int64)
        self.key = z(N, np.uint64)
        self.ev_t = np.full((N, 1), INF)
        self.ev_kind = z((N, 1), np.int64)
        self.ev_stage = z((N, 1), np.int64)
        self.ev_sev = z((N, 1))
        self.ev_src = z((N, 1), np.int64)
        self.ev_ptr = z(N, np.int64)
        self.random_chaos = np.ones(N, dtype=bool)
        # fault and side-effect slots, in creation order
        self.s_n = z(N, np.int64)
        self.s_kind = z((N, F_MAX), np.int64)
        self.s_fault = np.full((N, F_MAX), -1, np.int64)  # healing column (-1: side effect)
        self.s_stage = z((N, F_MAX), np.int64)
        self.s_sev = z((N, F_MAX))
        self.s_onset = z((N, F_MAX))
        self.s_end = np.full((N, F_MAX), INF)
        self.s_cascade = np.full((N, F_MAX), INF)
        self.s_inc = np.full((N, F_MAX), -1, np.int64)
        self.s_uid = z((N, F_MAX), np.int64)
        self.uid = z(N, np.int64)
        # incidents
        self.i_n = z(N, np.int64)
        self.i_fault = z((N, I_MAX), np.int64)
        self.i_stage = z((N, I_MAX), np.int64)
        self.i_src = z((N, I_MAX), np.int64)
        self.i_onset = z((N, I_MAX))
        self.i_detected = np.full((N, I_MAX), np.nan)
        self.i_resolved = np.full((N, I_MAX), np.nan)
        self.i_by = np.full((N, I_MAX), UNRESOLVED, np.int64)
        self.i_active = z((N, I_MAX), np.int64)
        self.i_faults = np.full((N, I_MAX, N_FAULT_PER_INCIDENT), -1, np.int64)
        self.i_nf = z((N, I_MAX), np.int64)
        self.dropped = z(N, np.int64)
        # actions and pipeline state
        self.fl_action = np.full(N, -1, np.int64)
        self.fl_done = np.full(N, INF)
        self.fl_issued = z(N)
        self.esc_done = np.full(N, INF)
        self.esc_issued = z(N)
        self.replicas = np.full((N, S), DEFAULT_REPLICAS, np.int64)
        self.version = np.full(N, 2, np.int64)
        self.light = z(N, dtype=bool)
        self.last_action = z(N, np.int64)
        self.last_action_t = z(N)
        self.spent = z(N)
        self.downtime = z(N)
        self.counts = z((N, A), np.int64)
        self.invalid = z(N, np.int64)
        self.total_reward = z(N)
        self.watch = z(N, dtype=bool)
        self.drift = z((N, 2))
        # effects cache
        self.dirty = np.ones(N, dtype=bool)
        self.stable = np.full(N, -INF)
        self.za = np.broadcast_to(self._clean_za, (N, S, M)).copy()
        self.zb = np.broadcast_to(self._clean_zb, (N, S, M)).copy()
        self.factor = np.ones((N, S, M))
        self.add = z((N, S, M))
        self.ml = z((N, K))
        self.ml_now = z((N, 6))
        self.splice = np.full((N, 4), -1, np.int64)  # stage, from_k, to_k, onset_k
        self._replayed_uid = np.full(N, -1, np.int64)
        self.mask = z((N, A), np.int8)
        self.prev_done = z(N, dtype=bool)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed if isinstance(seed, int) else None)
        N = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * N
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(N)]
        else:
            if len(seed) != N:
                raise ConfigError(f"reset(seed=...): {len(seed)} seeds for {N} envs")
            seeds = list(seed)
        if seed is not None or not self._gens:
            self._gens = [np.random.default_rng(s) for s in seeds]
        self._options = options
        self._reset_envs(np.arange(N))
        self.prev_done[:] = False
        self._started = True
        self._update_watch()
        self._refresh_mask()
        obs, _violated = self._observe()
        return obs, self._infos(np.zeros(N, dtype=bool), _violated, np.zeros(N, dtype=bool))

    def _reset_envs(self, idx: np.ndarray) -> None:
        m = self.model
        scenario = m.scenario_for(self._options)
        windows = {}
        for i in idx:
            rng = self._gens[i]
            window = pick_replay_window(m, rng) if m.replay_incidents else None
            windows[i] = window
            rows = m.replay.draw_rows(rng, m.episode_steps, m.dt,
                                      None if window is None else window[0])
            self._set_rows(i, rows, 0)
            self.n_plan[i] = m.episode_steps
            self.key[i] = np.uint64(crng.draw_key(rng))
            events = scenario.events(m.stages) if scenario is not None else []
            self.random_chaos[i] = scenario is None or scenario.random_chaos
            if self.random_chaos[i]:
                events += draw_random_arrivals(rng, m.chaos, m.stages, m.episode_steps * m.dt)
            events = sorted(events, key=lambda e: (e.at_s, e.fault, e.stage))
            self._set_events(i, events, keep=0)
        z = idx
        self.k[z], self.t[z] = 0, 0.0
        self.ev_ptr[z] = 0
        self.s_n[z], self.uid[z] = 0, 0
        self.s_end[z], self.s_cascade[z], self.s_inc[z], self.s_fault[z] = INF, INF, -1, -1
        self.s_sev[z] = 0.0
        self.i_n[z], self.i_active[z], self.i_nf[z] = 0, 0, 0
        self.i_detected[z], self.i_resolved[z], self.i_by[z] = np.nan, np.nan, UNRESOLVED
        self.i_faults[z] = -1
        self.dropped[z] = 0
        self.fl_action[z], self.fl_done[z], self.fl_issued[z] = -1, INF, 0.0
        self.esc_done[z], self.esc_issued[z] = INF, 0.0
        self.replicas[z] = DEFAULT_REPLICAS
        self.version[z], self.light[z] = 2, False
        self.last_action[z], self.last_action_t[z] = 0, 0.0
        self.spent[z], self.downtime[z], self.counts[z], self.invalid[z] = 0.0, 0.0, 0, 0
        self.total_reward[z] = 0.0
        self.watch[z] = False
        self.drift[z] = 0.0
        self.dirty[z], self.stable[z] = True, -INF
        self.splice[z] = -1
        self.za[z], self.zb[z] = self._clean_za, self._clean_zb
        self.factor[z], self.add[z] = 1.0, 0.0
        self._replayed_uid[z] = -1
        if m.replay_incidents:  # a replayed incident per env, from its drawn window
            for i in idx:
                w = windows[i]
                assert w is not None
                self._start_replayed(i, *w)

    def _set_rows(self, i: int, rows: np.ndarray, k0: int) -> None:
        if rows.size > self.rows.shape[1]:
            self.rows = np.pad(self.rows, ((0, 0), (0, rows.size - self.rows.shape[1])), "edge")
        self.rows[i, : rows.size] = rows
        self.rows[i, rows.size:] = rows[-1]
        self.k0[i] = k0

    def _set_events(self, i: int, events: list, keep: int) -> None:
        width = len(events) + keep + 1
        if width > self.ev_t.shape[1]:
            grow = width - self.ev_t.shape[1]
            self.ev_t = np.pad(self.ev_t, ((0, 0), (0, grow)), constant_values=INF)
            for name in ("ev_kind", "ev_stage", "ev_sev", "ev_src"):
                setattr(self, name, np.pad(getattr(self, name), ((0, 0), (0, grow))))
        self.ev_t[i, keep:] = INF
        for j, ev in enumerate(events):
            c = keep + j
            self.ev_t[i, c] = ev.at_s
            self.ev_kind[i, c] = SPEC_INDEX[ev.fault]
            self.ev_stage[i, c] = ev.stage
            self.ev_sev[i, c] = ev.severity
            self.ev_src[i, c] = SOURCES.index(ev.source)

    def _grow_plan(self, idx: np.ndarray) -> None:
        """Past the plan (only without a time limit, or one longer than ``episode_steps``)."""
        m = self.model
        for i in idx:
            rng = self._gens[i]
            start = self.n_plan[i] * m.dt
            rows = m.replay.draw_rows(rng, m.episode_steps, m.dt)
            self._set_rows(i, rows, int(self.n_plan[i]))
            self.n_plan[i] += m.episode_steps
            if self.random_chaos[i]:
                new = draw_random_arrivals(rng, m.chaos, m.stages, self.n_plan[i] * m.dt, start)
                p = int(self.ev_ptr[i])
                pending = [(self.ev_t[i, c], self.ev_kind[i, c], self.ev_stage[i, c],
                            self.ev_sev[i, c], self.ev_src[i, c])
                           for c in range(p, self.ev_t.shape[1]) if self.ev_t[i, c] < INF]
                merged = sorted(
                    [(e.at_s, ALL_SPECS[SPEC_INDEX[e.fault]].name, e.stage, e.severity,
                      SOURCES.index(e.source)) for e in new]
                    + [(t, ALL_SPECS[kd].name, st, sv, sc) for t, kd, st, sv, sc in pending],
                    key=lambda e: (e[0], e[1], e[2]))
                from healgym.sim.chaos import FaultEvent

                evs = [FaultEvent(float(t), name, int(st), float(sv), SOURCES[int(sc)])
                       for t, name, st, sv, sc in merged]
                self.ev_t[i, :p] = -INF  # consumed
                self._set_events(i, evs, keep=p)

    # ------------------------------------------------------------------ replayed incidents
    def _start_replayed(self, i: int, start_row: int, onset_row: int, end_row: int,
                        tag: str) -> None:
        stage_s, ftype = tag.split(":", 1)
        stage = int(stage_s)
        step = self.model.replay.step_seconds
        onset = (onset_row - start_row) * step
        end = (end_row - start_row) * step
        ok = self._add_instances(np.array([i]), np.array([CARRIER_KIND]), np.array([stage]),
                                 np.array([0.0]), np.array([onset]), SOURCES.index("replay"),
                                 parent=None, end=np.array([end]),
                                 fault_col=np.array([FAULT_CODE[ftype]]))
        if ok[0]:
            self.splice[i] = (stage, -1, int(round(end / self.model.dt)),
                              int(round(onset / self.model.dt)))
            self._replayed_uid[i] = self.uid[i]

    # ------------------------------------------------------------------ instances
    def _add_instances(self, idx: np.ndarray, kind: np.ndarray, stage: np.ndarray,
                       sev: np.ndarray, onset: np.ndarray, src: int | np.ndarray,
                       parent: np.ndarray | None, end: np.ndarray | None = None,
                       fault_col: np.ndarray | None = None) -> np.ndarray:
        """Append one fault instance to each env of ``idx`` (opening an incident unless
        ``parent`` gives one); returns which were added (the slot or incident caps drop)."""
        new_inc = parent is None
        ok = self.s_n[idx] < F_MAX
        if new_inc:
            ok &= self.i_n[idx] < I_MAX
        self.dropped[idx[~ok]] += 1
        idx, kind, stage, sev, onset = idx[ok], kind[ok], stage[ok], sev[ok], onset[ok]
        if idx.size == 0:
            return ok
        col = SPEC_FAULT_COL[kind] if fault_col is None else fault_col[ok]
        if new_inc:
            inc = self.i_n[idx].copy()
            self.i_n[idx] += 1
            self.i_fault[idx, inc] = col
            self.i_stage[idx, inc] = stage
            self.i_src[idx, inc] = src if np.ndim(src) == 0 else np.asarray(src)[ok]
            self.i_onset[idx, inc] = onset
        else:
            inc = np.asarray(parent)[ok]
        nf = self.i_nf[idx, inc]
        room = nf < N_FAULT_PER_INCIDENT
        self.i_faults[idx[room], inc[room], nf[room]] = col[room]
        self.i_nf[idx, inc] += 1
        self.i_active[idx, inc] += 1
        self.watch[idx] |= np.isnan(self.i_detected[idx, inc])
        slot = self.s_n[idx]
        self.s_n[idx] += 1
        self.uid[idx] += 1
        self.s_uid[idx, slot] = self.uid[idx]
        self.s_kind[idx, slot] = kind
        self.s_fault[idx, slot] = col
        self.s_stage[idx, slot] = stage
        self.s_sev[idx, slot] = sev
        self.s_onset[idx, slot] = onset
        self.s_inc[idx, slot] = inc
        self.s_end[idx, slot] = onset + END_AFTER[kind] if end is None else end[ok]
        carrier = kind == CARRIER_KIND
        self.s_cascade[idx, slot] = np.where(carrier, INF, onset + CASCADE_AFTER[kind])
        self.dirty[idx] = True
        return ok

    def _add_side(self, idx: np.ndarray, kind: int, stage: np.ndarray, until: np.ndarray) -> None:
        ok = self.s_n[idx] < F_MAX
        self.dropped[idx[~ok]] += 1
        idx, stage, until = idx[ok], stage[ok], until[ok]
        if idx.size == 0:
            return
        slot = self.s_n[idx]
        self.s_n[idx] += 1
        self.uid[idx] += 1
        self.s_uid[idx, slot] = self.uid[idx]
        self.s_kind[idx, slot] = kind
        self.s_fault[idx, slot] = -1
        self.s_stage[idx, slot] = stage
        self.s_sev[idx, slot] = 1.0
        self.s_onset[idx, slot] = self.t[idx]
        self.s_inc[idx, slot] = -1
        self.s_end[idx, slot] = until
        self.s_cascade[idx, slot] = INF
        self.dirty[idx] = True

    def _active(self) -> np.ndarray:
        return np.arange(F_MAX)[None, :] < self.s_n[:, None]

    def _remove(self, rm: np.ndarray) -> None:
        """Remove slots ``rm`` (N, F) and compact the rest, keeping creation order."""
        envs = np.flatnonzero(rm.any(axis=1))
        if envs.size == 0:
            return
        keep = ~rm[envs] & (np.arange(F_MAX)[None, :] < self.s_n[envs, None])
        order = np.argsort(~keep, axis=1, kind="stable")
        for name in ("s_kind", "s_fault", "s_stage", "s_sev", "s_onset", "s_end", "s_cascade",
                     "s_inc", "s_uid"):
            arr = getattr(self, name)
            arr[envs] = np.take_along_axis(arr[envs], order, axis=1)
        n_keep = keep.sum(axis=1)
        self.s_n[envs] = n_keep
        tail = np.arange(F_MAX)[None, :] >= n_keep[:, None]
        e2, f2 = np.nonzero(tail)
        self.s_end[envs[e2], f2] = INF
        self.s_cascade[envs[e2], f2] = INF
        self.s_sev[envs[e2], f2] = 0.0
        self.s_inc[envs[e2], f2] = -1
        self.s_fault[envs[e2], f2] = -1
        self.dirty[envs] = True

    def _clear(self, clr: np.ndarray, by: np.ndarray) -> np.ndarray:
        """Clear slots ``clr`` (N, F); ``by`` (N,) is the action index or NATURAL. Returns the
        fast-resolution bonus per env."""
        m = self.model
        bonus = np.zeros(self.num_envs)
        e, f = np.nonzero(clr & (self.s_inc >= 0))
        if e.size:
            inc = self.s_inc[e, f]
            healed = by[e] != NATURAL
            sp = healed & (self.s_uid[e, f] == self._replayed_uid[e])
            for i in e[sp]:
                self.splice[i, 1] = self.k[i]
            np.subtract.at(self.i_active, (e, inc), 1)
            done = (self.i_active[e, inc] == 0) & np.isnan(self.i_resolved[e, inc])
            de, di = e[done], inc[done]
            # (an env's incident may appear twice here; its first entry resolves it)
            uniq = np.unique(de * I_MAX + di, return_index=True)[1]
            de, di = de[uniq], di[uniq]
            self.i_resolved[de, di] = self.t[de]
            self.i_by[de, di] = by[de]
            noticed = np.isnan(self.i_detected[de, di]) & (by[de] != NATURAL)
            self.i_detected[de[noticed], di[noticed]] = self.t[de[noticed]]
            fast = self.t[de] - self.i_onset[de, di] <= m.reward.fast_resolution_s
            np.add.at(bonus, de[fast], m.reward.fast_resolution_bonus)
        self._remove(clr)
        return bonus

    # ------------------------------------------------------------------ events
    def _events(self, live: np.ndarray) -> np.ndarray:
        """Events due by now, in the scalar env's order: natural ends, the action's
        completion, the escalation's completion, cascades, new faults."""
        bonus = np.zeros(self.num_envs)
        t = self.t[:, None]
        ends = self._active() & (self.s_end <= t) & live[:, None]
        if ends.any():
            bonus += self._clear(ends, np.full(self.num_envs, NATURAL))
        due = np.flatnonzero(live & (self.fl_done <= self.t) & (self.fl_action >= 0))
        if due.size:
            a = self.fl_action[due]
            issued = self.fl_issued[due]
            self.fl_action[due], self.fl_done[due] = -1, INF
            bonus += self._complete(due, a, issued, HEAL_STREAM)
        due = np.flatnonzero(live & (self.esc_done <= self.t))
        if due.size:
            issued = self.esc_issued[due]
            self.esc_done[due] = INF
            bonus += self._complete(due, np.full(due.size, self._escalate), issued,
                                    ESCALATE_STREAM)
        casc = self._active() & (self.s_cascade <= t) & live[:, None]
        if casc.any():
            for f in range(F_MAX):
                envs = np.flatnonzero(casc[:, f])
                if envs.size == 0:
                    continue
                self.s_cascade[envs, f] = INF
                self._add_instances(envs, CASCADE_CHILD[self.s_kind[envs, f]],
                                    self.s_stage[envs, f], self.s_sev[envs, f], self.t[envs],
                                    SOURCES.index("cascade"), parent=self.s_inc[envs, f])
        n = np.arange(self.num_envs)
        while True:
            p = np.minimum(self.ev_ptr, self.ev_t.shape[1] - 1)
            envs = np.flatnonzero(live & (self.ev_t[n, p] <= self.t) & (self.ev_ptr <
                                                                        self.ev_t.shape[1]))
            if envs.size == 0:
                break
            c = self.ev_ptr[envs]
            self.ev_ptr[envs] += 1
            self._add_instances(envs, self.ev_kind[envs, c], self.ev_stage[envs, c],
                                self.ev_sev[envs, c], self.t[envs], self.ev_src[envs, c],
                                parent=None)
        return bonus

    def _complete(self, idx: np.ndarray, a: np.ndarray, issued: np.ndarray, stream: int
                  ) -> np.ndarray:
        m = self.model
        kind = self._kinds[a]
        astage = self._astage[a]
        active = self._active()[idx]
        target = (active & (self.s_inc[idx] >= 0) & (self.s_onset[idx] <= issued[:, None])
                  & ((astage[:, None] < 0) | (self.s_stage[idx] == astage[:, None])))
        j = np.cumsum(target, axis=1) - 1
        u = crng.uniform(self.key[idx][:, None], self.k[idx][:, None], stream + np.maximum(j, 0))
        p = m.healing[kind[:, None], np.maximum(self.s_fault[idx], 0)]
        heal = target & (u < p)
        healed_release = (heal & self._release[np.maximum(self.s_fault[idx], 0)]).any(axis=1)
        clr = np.zeros((self.num_envs, F_MAX), dtype=bool)
        clr[idx] = heal
        by = np.full(self.num_envs, NATURAL)
        by[idx] = a
        bonus = self._clear(clr, by) if heal.any() else np.zeros(self.num_envs)
        K = self._k_idx
        sel = kind == K["scale_up"]
        if sel.any():
            e, s = idx[sel], astage[sel]
            self.replicas[e, s] = np.minimum(self.replicas[e, s] + 1, MAX_REPLICAS)
            self.dirty[e] = True
        sel = kind == K["scale_down"]
        if sel.any():
            e, s = idx[sel], astage[sel]
            self.replicas[e, s] = np.maximum(self.replicas[e, s] - 1, MIN_REPLICAS)
            self.dirty[e] = True
        sel = kind == K["rollback"]
        if sel.any():
            e = idx[sel]
            self.version[e] -= 1
            has_old = (self._active()[e] & (self.s_kind[e] == OLD) & (self.s_inc[e] < 0)).any(1)
            add = e[~healed_release[sel] & ~has_old]
            self._add_side(add, OLD, np.full(add.size, m.model_stage), np.full(add.size, INF))
        sel = kind == K["retrain"]
        if sel.any():
            e = idx[sel]
            self.version[e] += 1
            self._drop_side(e, OLD)
        sel = kind == K["switch_light"]
        if sel.any():
            e = idx[sel]
            self.light[e] = True
            self._add_side(e, LIGHT, np.full(e.size, m.model_stage), np.full(e.size, INF))
        sel = kind == K["switch_back"]
        if sel.any():
            e = idx[sel]
            self.light[e] = False
            self._drop_side(e, LIGHT)
        sel = kind == K["shed_load"]
        if sel.any():
            e = idx[sel]
            self._add_side(e, SHED, np.full(e.size, m.model_stage), self.t[e] + act.SHED_SECONDS)
        return bonus

    def _drop_side(self, idx: np.ndarray, kind: int) -> None:
        rm = np.zeros((self.num_envs, F_MAX), dtype=bool)
        rm[idx] = self._active()[idx] & (self.s_kind[idx] == kind) & (self.s_inc[idx] < 0)
        self._remove(rm)

    # ------------------------------------------------------------------ dynamics
    def _effects(self) -> None:
        m = self.model
        idx = np.flatnonzero(self.dirty | (self.t >= self.stable))
        if idx.size == 0:
            return
        F = max(int(self.s_n[idx].max()), 1)  # slots are compact: only the first F can be live
        active = (np.arange(F)[None, :] < self.s_n[idx, None]) & (self.s_sev[idx, :F] != 0.0)
        kinds = self.s_kind[idx, :F]
        stages = self.s_stage[idx, :F]
        sev = np.where(active, self.s_sev[idx, :F], 0.0)
        h = m.hops[stages]  # (n, F, S)
        reach = (h >= 0) & active[:, :, None]
        hh = np.maximum(h, 0)
        T = COMPILED
        start = self.s_onset[idx, :F][:, :, None] + T.hop_lag_s[kinds][:, :, None] * hh
        atten = np.where(h > 0, T.atten_pow[kinds[:, :, None], np.minimum(hh, MAX_HOPS)], 1.0)
        scale = np.where(reach, sev[:, :, None] * atten, 0.0)
        g = FaultGeometry(
            start=start, reach=reach, own=(h == 0) & reach, scale=scale,
            ramp=T.ramp_s[kinds][:, :, None], dur=T.duration_s[kinds][:, :, None],
            fade=T.fade_s[kinds][:, :, None], mult=T.mult[kinds], add=T.add[kinds],
            prop_mult=T.prop_mult[kinds], prop_add=T.prop_add[kinds], ml=T.ml[kinds],
            breaks=np.empty(0))
        tt = self.t[idx][:, None, None]
        own, down = intensities(g, tt)
        S = m.n_stages
        mult = np.zeros((idx.size, S, len(METRICS)))
        add = np.zeros_like(mult)
        ml = np.zeros((idx.size, len(ML_SIGNALS)))
        for f in range(F):
            if not active[:, f].any():
                continue
            o, d = own[:, f, :, None], down[:, f, :, None]
            mult += o * g.mult[:, f, None, :] + d * g.prop_mult[:, f, None, :]
            add += o * g.add[:, f, None, :] + d * g.prop_add[:, f, None, :]
            ml += own[:, f].sum(axis=1)[:, None] * g.ml[:, f]
        self.stable[idx] = np.where(active.any(axis=1), stable_until(g, tt), INF)
        capacity = DEFAULT_REPLICAS / self.replicas[idx] - 1.0
        total = mult.copy()
        total[:, :, CPU] += capacity
        total[:, :, LAT] += 0.3 * capacity
        factor = np.maximum(1.0 + total, 0.0)
        self.factor[idx], self.add[idx], self.ml[idx] = factor, add, ml
        self.za[idx], self.zb[idx] = affine(m, factor, add)
        acc, null, schema, stale = ml_signals(ml)
        self.ml_now[idx] = np.stack([acc, null, schema, stale, ml[:, SHIFT],
                                     np.maximum(1.0 + ml[:, COST], 0.0)], axis=1)
        self.dirty[idx] = False

    def _base(self) -> np.ndarray:
        m = self.model
        rel = self.k - self.k0
        base = interpolate(m.replay.values, self.rows, rel, m.dt, m.replay.step_seconds)
        sp = np.flatnonzero((self.splice[:, 1] >= 0) & (self.k >= self.splice[:, 1])
                            & (self.k < self.splice[:, 2]))
        for i in sp:  # a healed replayed incident: pre-onset data for the rest of its window
            stage, frm, to, onset_k = self.splice[i]
            first = max(onset_k - (to - frm), 0)
            src = min(first + (self.k[i] - frm), max(onset_k - 1, 0))
            b = interpolate(m.replay.values, self.rows[i], np.array([src - self.k0[i]]), m.dt,
                            m.replay.step_seconds)
            base[i, stage] = b[0, stage]
        return base

    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        m = self.model
        self._effects()
        N, S = self.num_envs, m.n_stages
        nz = 6 * S
        base = self._base()
        zf = base * self.za + self.zb
        metric_violation = ((zf[:, m.model_stage, LAT] > m.lat_limit_z)
                            | (zf[:, -1, 4] < m.thr_limit_z)
                            | (zf[:, :, 1] > m.err_limit_z).any(axis=1))
        obs = np.zeros((N, m.n_obs), dtype=np.float32)
        obs[:, :nz] = np.minimum(np.maximum(zf, m.z_lo), m.z_hi).reshape(N, nz)
        acc, null, schema, stale, shift, cost_mult = self.ml_now.T
        acc_est = np.minimum(np.maximum(acc + ACC_NOISE_SD * crng.normal(self.key, self.k), 0.0),
                             1.0)
        cost = self.replicas.sum(axis=1) * REPLICA_COST_PER_H * cost_mult
        cost_factor = cost / m.base_cost
        self._cost = cost
        check = np.flatnonzero(self.k % m.drift_every == 0)
        if check.size:
            j = self.k[check] // m.drift_every
            pool = m.drift
            idx = (crng.uniform(self.key[check], j, crng.DRIFT_WINDOW)
                   * len(pool.windows)).astype(np.int64)
            self.drift[check, 0] = pool.healthy_ks[idx]
            self.drift[check, 1] = pool.healthy_psi[idx]
            for c, w in zip(check[shift[check] != 0.0], idx[shift[check] != 0.0], strict=True):
                ks, psi_v = pool.scores(np.asarray(w), np.asarray(shift[c]))
                self.drift[c] = (ks[0], psi_v[0])
        ks_v, psi_v = self.drift[:, 0], self.drift[:, 1]
        slo = m.slo
        violated = (metric_violation | (acc < slo.accuracy_min) | (stale > slo.staleness_max_s)
                    | (null > slo.null_rate_max) | (schema > slo.schema_error_max)
                    | (cost_factor > slo.cost_factor_max))
        i = 7 * S
        obs[:, 6 * S: 7 * S] = self.replicas / MAX_REPLICAS
        ctx = np.stack([
            acc_est, ks_v, np.minimum(psi_v, 10.0), null, schema,
            np.minimum(stale / 3600.0, 24.0), np.minimum(cost_factor, 10.0),
            np.minimum((self.t - self.last_action_t) / 3600.0, 1.0),
            (self.fl_action >= 0).astype(float), self.light.astype(float),
            (self.version > 1).astype(float)], axis=1)
        obs[:, i: i + 11] = ctx
        obs[np.arange(N), i + 11 + self.last_action] = 1.0
        alarm = violated | (np.abs(obs[:, :nz]).max(axis=1) > DETECT_Z) | (psi_v > 0.25) | (
            acc_est < BASE_ACCURACY - 0.05)
        self._alarm = alarm & self.watch
        return obs, violated

    def _refresh_mask(self) -> None:
        m = self.model
        S, A = m.n_stages, len(m.actions)
        free = self.fl_action < 0
        mask = np.zeros((self.num_envs, A), dtype=np.int8)
        mask[:, 0] = 1
        mask[:, 1:1 + S] = free[:, None]
        mask[:, 1 + S:1 + 2 * S] = free[:, None] & (self.replicas < MAX_REPLICAS)
        mask[:, 1 + 2 * S:1 + 3 * S] = free[:, None] & (self.replicas > MIN_REPLICAS)
        b = 1 + 3 * S
        shedding = (self._active() & (self.s_kind == SHED) & (self.s_inc < 0)).any(axis=1)
        mask[:, b] = free & (self.version > 1)
        mask[:, b + 1] = free
        mask[:, b + 2] = free
        mask[:, b + 3] = free & ~self.light
        mask[:, b + 4] = free & self.light
        mask[:, b + 5] = free & ~shedding
        mask[:, A - 1] = self.esc_done == INF
        budget = m.reward.cost_budget
        if budget is not None:
            mask &= (self._acost[None, :] <= (budget - self.spent)[:, None]) | (
                np.arange(A)[None, :] == 0)
        self.mask = mask

    # ------------------------------------------------------------------ step
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        m = self.model
        N = self.num_envs
        a = np.asarray(actions, dtype=np.int64).reshape(N)
        if (a < 0).any() or (a >= len(m.actions)).any():
            bad = a[(a < 0) | (a >= len(m.actions))][0]
            raise gym.error.InvalidAction(f"action {bad} is outside Discrete({len(m.actions)})")
        restart = self.prev_done.copy()
        if restart.any():
            self._reset_envs(np.flatnonzero(restart))
        live = ~restart
        grow = np.flatnonzero(live & (self.k >= self.n_plan))
        if grow.size:
            self._grow_plan(grow)
        reward = np.zeros(N)
        invalid = live & (self.mask[np.arange(N), a] == 0)
        self.invalid += invalid
        reward -= np.where(invalid, m.reward.invalid_action_penalty, 0.0)
        start = np.flatnonzero(live & ~invalid & (a != 0))
        if start.size:
            reward[start] -= m.reward.action_cost_weight * self._start(start, a[start])
        self.k[live] += 1
        self.t[:] = self.k * m.dt
        bonus = self._events(live)
        reward += bonus
        obs, violated = self._observe()
        violated &= live
        self.downtime += np.where(violated, m.dt, 0.0)
        reward -= np.where(violated, m.reward.slo_violation_per_s * m.dt, 0.0)
        extra = (self._cost != m.base_cost) & live
        reward -= np.where(extra, m.reward.infra_cost_weight * (self._cost - m.base_cost)
                           * m.dt / 3600.0, 0.0)
        det = np.flatnonzero(self._alarm & live)
        if det.size:
            open_ = (np.isnan(self.i_detected[det]) & np.isnan(self.i_resolved[det])
                     & (self.i_onset[det] <= self.t[det][:, None])
                     & (np.arange(I_MAX)[None, :] < self.i_n[det][:, None]))
            e, c = np.nonzero(open_)
            self.i_detected[det[e], c] = self.t[det[e]]
        self._update_watch()
        self._refresh_mask()
        reward[restart] = 0.0
        self.total_reward += np.where(live, reward, 0.0)
        truncated = live & (self.k >= self.max_episode_steps) if self.max_episode_steps else \
            np.zeros(N, dtype=bool)
        terminated = np.zeros(N, dtype=bool)
        self.prev_done = truncated.copy()
        infos = self._infos(truncated, violated, invalid)
        return obs, reward, terminated, truncated, infos

    def _start(self, idx: np.ndarray, a: np.ndarray) -> np.ndarray:
        cost = self._acost[a]
        self.spent[idx] += cost
        np.add.at(self.counts, (idx, a), 1)
        self.last_action[idx], self.last_action_t[idx] = a, self.t[idx]
        done = self.t[idx] + self._adur[a]
        esc = a == self._escalate
        self.esc_done[idx[esc]], self.esc_issued[idx[esc]] = done[esc], self.t[idx[esc]]
        e = idx[~esc]
        self.fl_action[e], self.fl_done[e], self.fl_issued[e] = a[~esc], done[~esc], self.t[e]
        rs = self._kinds[a] == self._k_idx["restart"]
        if rs.any():
            self._add_side(idx[rs], RESTART, self._astage[a[rs]], done[rs])
        return cost

    def _update_watch(self) -> None:
        open_ = (np.isnan(self.i_detected) & np.isnan(self.i_resolved)
                 & (np.arange(I_MAX)[None, :] < self.i_n[:, None]))
        self.watch = open_.any(axis=1)

    # ------------------------------------------------------------------ reporting
    def _infos(self, final: np.ndarray, violated: np.ndarray, invalid: np.ndarray
               ) -> dict[str, Any]:
        N = self.num_envs
        ones = np.ones(N, dtype=bool)
        infos: dict[str, Any] = {
            "action_mask": self.mask, "_action_mask": ones,
            "time_s": self.t.copy(), "_time_s": ones,
            "slo_violated": violated, "_slo_violated": ones,
            "invalid_action": invalid, "_invalid_action": ones,
            "n_faults": (self._active() & (self.s_inc >= 0)).sum(axis=1), "_n_faults": ones,
        }
        if final.any():
            em = np.empty(N, dtype=object)
            for i in np.flatnonzero(final):
                em[i] = self.episode_metrics(int(i))
            infos["episode_metrics"], infos["_episode_metrics"] = em, final.copy()
        return infos

    def episode_metrics(self, i: int) -> dict[str, Any]:
        """Sub-env ``i``'s episode metrics so far (the scalar env's dictionary)."""
        m = self.model
        incidents = []
        for c in range(int(self.i_n[i])):
            det, res = self.i_detected[i, c], self.i_resolved[i, c]
            onset = float(self.i_onset[i, c])
            by = int(self.i_by[i, c])
            incidents.append({
                "id": c, "fault": FAULT_LABEL[self.i_fault[i, c]],
                "stage": m.stages[self.i_stage[i, c]], "source": SOURCES[self.i_src[i, c]],
                "faults": [FAULT_LABEL[x] for x in self.i_faults[i, c, : self.i_nf[i, c]]],
                "onset_s": onset,
                "detected_s": None if np.isnan(det) else float(det),
                "resolved_s": None if np.isnan(res) else float(res),
                "resolved_by": None if by == UNRESOLVED else
                ("natural" if by == NATURAL else m.action_names[by]),
                "mttr_s": None if np.isnan(res) else float(res) - onset,
                "time_to_detect_s": None if np.isnan(det) else float(det) - onset,
            })
        taken = {m.action_names[j]: int(c) for j, c in enumerate(self.counts[i]) if c}
        return episode_metrics(float(self.t[i]), incidents, float(self.downtime[i]), taken,
                               float(self.spent[i]), int(self.invalid[i]),
                               float(self.total_reward[i]), int(self.dropped[i]))

    def faults(self, i: int) -> list[tuple[str, str]]:
        """Sub-env ``i``'s active faults (type, stage): the ground truth, for analysis."""
        out = []
        for f in range(int(self.s_n[i])):
            if self.s_inc[i, f] >= 0:
                out.append((FAULT_LABEL[self.s_fault[i, f]], self.model.stages[self.s_stage[i, f]]))
        return out


__all__ = ["PipelineHealVectorEnv", "unix_seconds"]
