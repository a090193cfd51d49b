"""A natively batched ``healgym/PipelineHeal-v0``: N pipelines stepped with array operations.

``gymnasium.make_vec("healgym/PipelineHeal-v0", num_envs=N)`` returns a
:class:`PipelineHealVectorEnv`. The scalar env is this env with one pipeline (one model, one
implementation of its dynamics), and sub-env ``i`` reset with ``seed=s`` is the scalar env reset
with ``seed=s + i``, episode after episode: same observations, rewards, truncations and episode
metrics for the same actions (tested bit for bit: batch size and threads change nothing).

A step is one compiled call (:mod:`healgym.envs._kernel`): autoresets, actions and events, fault
effects, drift checks, observations, rewards and masks of a range of envs. With
``num_threads`` > 1 and at least 256 envs a range, ranges run on numba's threads (OpenMP where
the system has libgomp). Envs are independent, so threads never change a result.

Threads are opt-in: ``num_threads=None`` means ``HEALGYM_NUM_THREADS`` if set, else 1. Measured
on this project's 2-core machines, two threads step an idle machine's 4096 envs ~1.8x faster,
but with one other busy process (an RLlib learner, torch, a second env) a two-thread step waits
for the descheduled thread at every barrier and runs several times slower than one thread
(``make bench``'s ``threads`` figures). One thread is never the bad case, so it is the default;
ask for threads where the cores are free (``num_threads=2``, or ``HEALGYM_NUM_THREADS=2``).

State is one array per field (:mod:`healgym.envs.state`), shape (N,) or (N, slots). Faults
and action side effects live in ``F_MAX`` slots per env, kept in creation order, incidents in
``I_MAX`` slots.

Autoreset mode: ``NEXT_STEP`` (a finished sub-env is reset by the following ``step`` call,
whose action for it is ignored, and returns its first observation with reward 0).

Info, each key with its ``_key`` mask: ``action_mask`` (N, A), ``time_s``, ``slo_violated``,
``invalid_action``, ``n_faults`` (active faults, the ground truth count), and on the last step of
a sub-env's episode ``episode_metrics`` (an object array of the scalar env's dictionaries, each
built when first read: :class:`EpisodeMetrics`).
"""

from __future__ import annotations

import dataclasses
import os
from collections import namedtuple
from collections.abc import Iterator, Mapping
from typing import Any

import gymnasium as gym
import numba
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from healgym.envs import _kernel as K
from healgym.envs.state import (
    FIELDS,
    METRIC_FIELDS,
    NATURAL,
    UNRESOLVED,
    State,
    allocate,
    dims,
)
from healgym.envs.state import get as get_field
from healgym.envs.state import replace as replace_field
from healgym.errors import ConfigError
from healgym.sim import actions as act
from healgym.sim.episode import (
    NAME_RANK,
    SOURCES,
    draw_schedule,
    episode_consts,
    fill_rows,
    seed_key,
)
from healgym.sim.faults import (
    ALL_SPECS,
    COMPILED,
    FAULT_NAMES,
    INF,
    LAT,
    METRICS,
    ML_SIGNALS,
    SPEC_INDEX,
)
from healgym.sim.jit import entry_point, signature
from healgym.sim.model import (
    ACC_NOISE_SD,
    BASE_ACCURACY,
    CARRIER_KIND,
    DEFAULT_REPLICAS,
    DETECT_Z,
    ESCALATE_STREAM,
    HEAL_STREAM,
    MAX_REPLICAS,
    MIN_REPLICAS,
    RELEASE_FAULTS,
    REPLICA_COST_PER_H,
    SIDE_KINDS,
    PipelineConfig,
    PipelineModel,
    affine,
    build_model,
)

FAULT_CODE = {name: i for i, name in enumerate((*FAULT_NAMES, "unknown"))}
FAULT_LABEL = (*FAULT_NAMES, "unknown")
SPEC_FAULT_COL = np.array([FAULT_CODE.get(s.name, -1) for s in ALL_SPECS])
CASCADE_AFTER = np.array([s.cascade[1] if s.cascade else INF for s in ALL_SPECS])
CASCADE_CHILD = np.array([SPEC_INDEX[s.cascade[0]] if s.cascade else -1 for s in ALL_SPECS])
END_AFTER = np.array([s.duration_s + s.fade_s for s in ALL_SPECS])
RESTART, SHED, LIGHT, OLD = (SIDE_KINDS[k] for k in ("_restarting", "_shedding", "_light_model",
                                                     "_old_model"))
#: Check the argument types of every kernel call against the cached entry point (tests).
CHECK_DISPATCH = os.environ.get("HEALGYM_CHECK_DISPATCH", "") not in ("", "0")


def default_threads() -> int:
    """``HEALGYM_NUM_THREADS`` if set (an int >= 1), else 1: see the module docstring."""
    raw = os.environ.get("HEALGYM_NUM_THREADS", "").strip()
    if not raw:
        return 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"HEALGYM_NUM_THREADS={raw!r}: give a whole number of threads >= 1 "
                          "(unset it for the default, one thread)")
    return n


def _same_arrays(a: Any, b: Any) -> bool:
    """Whether two (nested) argument tuples hold the same array buffers (views compare by
    their base)."""
    if isinstance(a, tuple):
        return (isinstance(b, tuple) and len(a) == len(b)
                and all(_same_arrays(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and (a.base if a.base is not None else a)
                is (b.base if b.base is not None else b))
    return a is b or a == b


class PipelineHealVectorEnv(VectorEnv):
    """N healgym pipelines stepped at once; see the module docstring and ``PipelineHealEnv``."""

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = 360,
        render_mode: str | None = None,
        num_threads: int | None = None,
        config: PipelineConfig | None = None,
        **pipeline: Any,
    ) -> None:
        """``pipeline``: the fields of :class:`healgym.sim.model.PipelineConfig` (the scalar
        env's arguments), or all of them as ``config``."""
        if num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r}: must be >= 1")
        if render_mode is not None:
            raise ConfigError("the vector env does not render; use the scalar env's 'ansi' mode")
        cfg = PipelineConfig.make(config, "PipelineHealVectorEnv", **pipeline)
        # The episode is max_episode_steps long (make_vec passes the registration's); the scalar
        # env with episode_steps equal to it is the same model. Without a limit, the plan grows
        # by episode_steps at a time.
        if max_episode_steps:
            cfg = dataclasses.replace(cfg, episode_steps=int(max_episode_steps))
        self.config = cfg
        self.model = m = build_model(cfg)
        self.num_envs = N = int(num_envs)
        self.max_episode_steps = max_episode_steps
        self.render_mode = None
        self.single_observation_space = m.observation_space
        self.single_action_space = m.action_space
        self.observation_space = batch_space(m.observation_space, N)
        self.action_space = batch_space(m.action_space, N)
        self._ec: Any = None
        self._default_ec: Any = None
        self._started = False
        S, M = m.n_stages, len(METRICS)
        A = len(m.actions)
        self._release = np.zeros(len(FAULT_CODE), dtype=bool)
        for name in RELEASE_FAULTS:
            self._release[FAULT_CODE[name]] = True
        self._clean_za, self._clean_zb = affine(m, np.ones((S, M)), np.zeros((S, M)))
        self._c = kernel_consts(m, self._release)
        self._values = np.ascontiguousarray(m.replay.values.reshape(len(m.replay.values), -1))
        # One env range per thread (ranges of at least 256 envs: below, a hand-off costs more
        # than it saves); num_threads=None: HEALGYM_NUM_THREADS, else 1 (module docstring).
        threads = default_threads() if num_threads is None else int(num_threads)
        if threads < 1:
            raise ConfigError(f"num_threads={num_threads!r}: must be >= 1")
        threads = min(threads, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        workers = max(1, min(threads, N // 256))
        self._bounds = np.linspace(0, N, workers + 1).round().astype(np.int64)
        # each range's scratch rows: mult, add (S*M,), ML effects (K,), z (S*M,)
        self._scratch = (np.zeros((workers, S * M)), np.zeros((workers, S * M)),
                         np.zeros((workers, len(ML_SIGNALS))), np.zeros((workers, S * M)))
        self._scratch0 = tuple(a[0] for a in self._scratch)  # the one range's rows
        self._n_obs = m.n_obs
        self._state_cache: tuple[int, tuple] | None = None
        self._entry: dict[Any, tuple[int, Any, tuple]] = {}
        self._layout = 0
        self._calls = 0
        self._layout_ec: Any = None
        self._alloc(N, S, M, A)

    # ------------------------------------------------------------------ storage
    def _alloc(self, N: int, S: int, M: int, A: int) -> None:
        """The state, from :data:`healgym.envs.state.FIELDS`."""
        self.state = allocate(dims(N, S, M, A))
        ef = self.state.effects
        ef.za[:] = self._clean_za.ravel()
        ef.zb[:] = self._clean_zb.ravel()
        self._keyed = False
        self.prev_done = np.zeros(N, dtype=bool)

    def _replace(self, path: str, array: np.ndarray) -> None:
        """Replace a state field (a wider plan): a new dispatch layout."""
        self._layout += 1
        self.state = replace_field(self.state, path, array)

    def last_z(self) -> np.ndarray:
        """The unclipped z-scores (S*M,) the last step computed for the batch's last env (a
        batch of one: its only env; the scalar env's raw metrics come from them)."""
        return self._scratch0[3]

    # read-only views of the state most callers want (the whole state: ``state``)
    mask = property(lambda self: self.state.actions.mask, doc="Action masks (N, A), live.")
    time_s = property(lambda self: self.state.clock.t, doc="Each env's clock, s (live).")

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        N = self.num_envs
        keys: np.ndarray | None = None
        if seed is None:
            if not self._keyed:
                keys = self.np_random.integers(0, 2**63 - 1, size=N).astype(np.uint64)
        elif isinstance(seed, (int, np.integer)):
            keys = seed_key(int(seed) + np.arange(N))
        else:
            if len(seed) != N:
                raise ConfigError(f"reset(seed=...): {len(seed)} seeds for {N} envs")
            keys = seed_key(np.asarray(seed, dtype=np.int64))
        obs, violated = self.start(keys, options)
        return obs, self._infos(np.zeros(N, dtype=bool), violated, np.zeros(N, dtype=bool))

    def start(self, keys: np.ndarray | None, options: dict[str, Any] | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Start every env's episode: from ``keys``, or (None) each env's next key. Returns the
        first observations and SLO flags."""
        N = self.num_envs
        if keys is not None:
            self.state.clock.key[:] = keys
        advance = keys is None
        self._keyed = True
        scenario = self.model.scenario_for(options)
        if options and "scenario" in options:
            self._ec = episode_consts(self.model, scenario)
        elif self._default_ec is None:
            self._ec = self._default_ec = episode_consts(self.model, scenario)
        else:
            self._ec = self._default_ec
        self._fit_plan_arrays()
        self._run(K.reset_range, K.reset_threads, np.ones(N, dtype=bool), advance, self.state,
                  self._ec, self._c, scratch=False)
        self.prev_done[:] = False
        self._started = True
        return self._observe(np.zeros(N, dtype=bool), np.zeros(N))

    def _fit_plan_arrays(self) -> None:
        """Make the rows and the event arrays wide enough for an episode's set-up."""
        ec = self._ec
        if ec is not self._layout_ec:  # new episode constants (a scenario in the options)
            self._layout += 1
            self._layout_ec = ec
        if ec.rows_needed > self.state.clock.rows.shape[1]:
            self._replace("clock.rows", np.zeros((self.num_envs, ec.rows_needed), np.int64))
        self._widen_events(ec.n_events + 1)

    def _widen_events(self, width: int) -> None:
        ev = self.state.events
        if width > ev.t.shape[1]:
            grow = width - ev.t.shape[1]
            for f in FIELDS:
                if f.group == "events" and len(f.shape) == 2:
                    self._replace(f"events.{f.name}", np.pad(
                        getattr(ev, f.name), ((0, 0), (0, grow)), constant_values=f.init))

    def _grow_plan(self, idx: np.ndarray) -> None:
        """Past the plan (only without a time limit, or one longer than ``episode_steps``): the
        next chunk of replay rows and chaos arrivals, drawn from the episode key."""
        m, ec = self.model, self._ec
        for i in idx:
            ck = self.state.clock
            plan = int(ck.n_plan[i] // m.episode_steps)
            start = ck.n_plan[i] * m.dt
            rows = np.empty(ec.rows_needed, np.int64)
            fill_rows(ck.key[i], plan, ec.seg_start, ec.seg_end, ec.rows_needed, -1, rows)
            if rows.size > ck.rows.shape[1]:
                self._replace("clock.rows", np.pad(
                    ck.rows, ((0, 0), (0, rows.size - ck.rows.shape[1])), "edge"))
                ck = self.state.clock
            ck.rows[i, : rows.size] = rows
            ck.rows[i, rows.size:] = rows[-1]
            ck.k0[i] = ck.n_plan[i]
            ck.n_plan[i] += m.episode_steps
            if not ec.random_chaos:
                continue
            new, lost = draw_schedule(ec, int(ck.key[i]), plan=plan,
                                      lo_s=max(m.chaos.warmup_s, start),
                                      horizon_s=ck.n_plan[i] * m.dt, scenario=False)
            self.state.incidents.dropped[i] += lost
            ev = self.state.events
            p = int(ev.ptr[i])
            pending = [(ev.t[i, c], int(ev.kind[i, c]), int(ev.stage[i, c]), ev.sev[i, c],
                        int(ev.src[i, c])) for c in range(p, ev.t.shape[1]) if ev.t[i, c] < INF]
            merged = sorted(pending + [(e.at_s, SPEC_INDEX[e.fault], e.stage, e.severity,
                                        SOURCES.index(e.source)) for e in new],
                            key=lambda e: (e[0], NAME_RANK[e[1]], e[2]))
            self._widen_events(p + len(merged) + 1)
            ev = self.state.events
            ev.t[i, p:] = INF
            for j, (at, kd, st, sv, sc) in enumerate(merged):
                c = p + j
                ev.t[i, c], ev.kind[i, c], ev.stage[i, c] = at, kd, st
                ev.sev[i, c], ev.src[i, c] = sv, sc

    # ------------------------------------------------------------------ step
    def _run(self, serial: Any, threaded: Any, *args: Any, scratch: bool = True) -> None:
        """Run a kernel over all envs: ``serial`` on this thread for one range, else
        ``threaded``, which runs ``serial`` on each range on numba's threads (each range with
        its scratch rows; envs are independent, so the split does not change the result)."""
        if len(self._bounds) == 2:
            extra = self._scratch0 if scratch else ()
            self._call(serial, (*args, *extra, 0, self.num_envs))
        else:  # the parallel kernels take the state's groups (see _kernel's threads)
            flat = [x for a in args for x in (a if isinstance(a, State) else (a,))]
            self._call(threaded, (self._bounds, *(self._scratch if scratch else ()), *flat))

    def _call(self, kernel: Any, args: tuple) -> None:
        """``kernel(*args)`` without numba's per-call type resolution of ~150 arguments (half
        a one-env step): the compiled entry point is looked up once per kernel and state
        layout. ``_layout`` changes whenever a state array is replaced (its dtype or shape may
        differ); with ``HEALGYM_CHECK_DISPATCH=1`` (the tests) every 16th call checks the
        types."""
        hit = self._entry.get(kernel)
        if hit is not None and hit[0] == self._layout:
            self._calls += 1
            if CHECK_DISPATCH and self._calls % 16 == 0:  # typing every call: ~0.7 ms
                sig = signature(kernel, args)
                assert sig == hit[2], (
                    f"{kernel.__name__}: argument types changed without a new _layout")
            hit[1](*args)
            return
        kernel(*args)  # numba resolves the types (compiles if needed)
        fn, sig = entry_point(kernel, args)
        if fn is not None:
            self._entry[kernel] = (self._layout, fn, sig)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the compiled entry points (rebuilt on the first call)."""
        state = self.__dict__.copy()
        state["_entry"], state["_state_cache"] = {}, None
        return state

    def _kernel_state(self) -> tuple:
        """The state and constants every step kernel takes, built once per layout (rebuilt
        only when ``_layout`` says an array was replaced)."""
        hit = self._state_cache
        if hit is not None and hit[0] == self._layout and not CHECK_DISPATCH:
            return hit[1]
        state = (self.state, self._values, self._c)
        if hit is not None and hit[0] == self._layout:  # CHECK_DISPATCH: the cache is current
            assert _same_arrays(hit[1], state), "a state array was replaced without a new _layout"
            return hit[1]
        self._state_cache = (self._layout, state)
        return state

    def _observe(self, live: np.ndarray, reward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs = np.zeros((self.num_envs, self._n_obs), dtype=np.float32)
        violated = np.zeros(self.num_envs, dtype=bool)
        self._run(K.observe_range, K.observe_threads, live, *self._kernel_state(), obs, reward,
                  violated)
        return obs, violated

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        N = self.num_envs
        a = np.require(actions, np.int64, ["C", "W"]).reshape(N)  # the kernels' layout
        n_act = len(self.model.actions)
        if (a < 0).any() or (a >= n_act).any():
            bad = a[(a < 0) | (a >= n_act)][0]
            raise gym.error.InvalidAction(f"action {bad} is outside Discrete({n_act})")
        obs, reward, violated, invalid, truncated = self.advance(a)
        return obs, reward, np.zeros(N, dtype=bool), truncated, self._infos(truncated, violated,
                                                                            invalid)

    def advance(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray]:
        """One step of every env with valid int64 actions ``a``: (observations, rewards, SLO
        flags, invalid-action flags, truncations)."""
        N = self.num_envs
        restart = self.prev_done
        live = ~restart
        ck = self.state.clock
        if not self.max_episode_steps:  # with a limit, the plan covers the episode
            grow = np.flatnonzero(live & (ck.k >= ck.n_plan))
            if grow.size:
                self._grow_plan(grow)
        reward = np.zeros(N)
        invalid = np.zeros(N, dtype=bool)
        obs = np.zeros((N, self._n_obs), dtype=np.float32)
        violated = np.zeros(N, dtype=bool)
        self._run(K.step_range, K.step_threads, restart, live, a, invalid, self._ec,
                  *self._kernel_state(), obs, reward, violated)
        if self.max_episode_steps:
            truncated = live & (ck.k >= self.max_episode_steps)
        else:
            truncated = np.zeros(N, dtype=bool)
        self.prev_done = truncated.copy()
        return obs, reward, violated, invalid, truncated

    # ------------------------------------------------------------------ reporting
    def _infos(self, final: np.ndarray, violated: np.ndarray, invalid: np.ndarray
               ) -> dict[str, Any]:
        N = self.num_envs
        ones = np.ones(N, dtype=bool)
        infos: dict[str, Any] = {
            "action_mask": self.state.actions.mask, "_action_mask": ones,
            "time_s": self.state.clock.t.copy(), "_time_s": ones,
            "slo_violated": violated, "_slo_violated": ones,
            "invalid_action": invalid, "_invalid_action": ones,
            "n_faults": self.state.pipeline.n_faults.copy(), "_n_faults": ones,
        }
        if final.any():
            idx = np.flatnonzero(final)
            snap = {path: get_field(self.state, path)[idx] for path in METRIC_FIELDS}
            em = np.empty(N, dtype=object)
            for j, i in enumerate(idx.tolist()):  # one by one: a list would be read as rows
                em[i] = EpisodeMetrics(self.model, snap, j)
            infos["episode_metrics"], infos["_episode_metrics"] = em, final.copy()
        return infos

    def episode_metrics(self, i: int) -> dict[str, Any]:
        """Sub-env ``i``'s episode metrics so far (the scalar env's dictionary)."""
        return metrics_dict(self.model, {p: get_field(self.state, p) for p in METRIC_FIELDS},
                            int(i))

    def faults(self, i: int) -> list[tuple[str, str]]:
        """Sub-env ``i``'s active faults (type, stage): the ground truth, for analysis."""
        sl = self.state.slots
        n = int(sl.n[i])
        return [(FAULT_LABEL[f], self.model.stages[s]) for f, s, inc in zip(
            sl.fault[i, :n].tolist(), sl.stage[i, :n].tolist(), sl.inc[i, :n].tolist(),
            strict=True) if inc >= 0]


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


__all__ = ["EpisodeMetrics", "PipelineHealVectorEnv"]

#: The kernels' constants, in order. A module-level namedtuple, so numba's on-disk cache
#: recognises its type in every process (a class made per call recompiles every kernel).
KERNEL_CONST_FIELDS = (
    "a_kind", "a_stage", "a_cost", "a_dur", "a_rule", "a_effect", "escalate", "o_replicas",
    "o_context", "o_last", "side_restart",
    "side_old", "side_light", "side_shed", "model_stage", "shed_s", "max_replicas", "min_replicas",
    "default_replicas", "healing", "release", "fast_s", "fast_bonus", "invalid_penalty",
    "cost_weight", "slo_per_s", "infra_weight", "has_budget", "budget", "dt", "step_seconds",
    "heal_stream", "escalate_stream", "cascade_child", "spec_fault_col", "src_cascade",
    "end_after", "cascade_after", "median", "inv", "t_mult", "t_add", "t_pmult", "t_padd", "t_ml",
    "t_ramp", "t_dur", "t_fade", "t_lag", "atten_pow", "hops", "lat", "thr", "err", "n_stages",
    "n_metrics", "episode_steps", "carrier_kind", "src_replay", "base_accuracy", "acc_noise_sd",
    "drift_every", "inv_drift_every", "pool_size", "healthy_ks", "healthy_psi", "pool_windows",
    "ref_sorted", "ref_edges", "ref_frac", "lat_limit_z", "thr_limit_z",
    "err_limit_z", "z_lo", "z_hi", "replica_cost", "base_cost", "slo_acc", "slo_stale", "slo_null",
    "slo_schema", "slo_cost", "detect_z",
)
KernelConsts = namedtuple("KernelConsts", KERNEL_CONST_FIELDS)  # type: ignore[misc]


def escalate_index(m: PipelineModel) -> int:
    """The paging action's index: it runs beside the action in flight, in its own slot."""
    pages = [a.index for a in m.actions if m.kinds[a.kind].effect == act.PAGE]
    if len(pages) != 1:
        raise ConfigError(f"the action table needs exactly one paging action, has {len(pages)}")
    return pages[0]


def kernel_consts(m: PipelineModel, release: np.ndarray) -> Any:
    """The model's constants as a namedtuple the compiled kernels take."""
    from healgym.sim import faults as flt

    T = COMPILED
    r, slo = m.reward, m.slo
    arrays = act.action_arrays(m.actions, m.kinds)
    fields: dict[str, Any] = {
        "a_kind": arrays["kind"], "a_stage": arrays["stage"], "a_cost": arrays["cost"],
        "a_dur": arrays["duration"], "a_rule": arrays["rule"], "a_effect": arrays["effect"],
        "escalate": escalate_index(m),
        "o_replicas": m.layout.replicas.start, "o_context": m.layout.context.start,
        "o_last": m.layout.last.start,
        "side_restart": RESTART, "side_old": OLD, "side_light": LIGHT, "side_shed": SHED,
        "model_stage": m.model_stage, "shed_s": float(act.SHED_SECONDS),
        "max_replicas": MAX_REPLICAS, "min_replicas": MIN_REPLICAS,
        "default_replicas": DEFAULT_REPLICAS,
        "healing": np.ascontiguousarray(m.healing, dtype=np.float64),
        "release": release.astype(np.bool_),
        "fast_s": float(r.fast_resolution_s), "fast_bonus": float(r.fast_resolution_bonus),
        "invalid_penalty": float(r.invalid_action_penalty),
        "cost_weight": float(r.action_cost_weight), "slo_per_s": float(r.slo_violation_per_s),
        "infra_weight": float(r.infra_cost_weight),
        "has_budget": r.cost_budget is not None,
        "budget": float(r.cost_budget) if r.cost_budget is not None else 0.0,
        "dt": float(m.dt), "step_seconds": float(m.replay.step_seconds),
        "heal_stream": HEAL_STREAM, "escalate_stream": ESCALATE_STREAM,
        "cascade_child": CASCADE_CHILD.astype(np.int64),
        "spec_fault_col": SPEC_FAULT_COL.astype(np.int64),
        "src_cascade": SOURCES.index("cascade"),
        "end_after": END_AFTER.astype(np.float64),
        "cascade_after": CASCADE_AFTER.astype(np.float64),
        "n_stages": m.n_stages, "n_metrics": len(METRICS), "episode_steps": m.episode_steps,
        "carrier_kind": CARRIER_KIND, "src_replay": SOURCES.index("replay"),
        "median": m.median.ravel().copy(), "inv": m.inv_scale.ravel().copy(),
        "t_mult": T.mult, "t_add": T.add, "t_pmult": T.prop_mult, "t_padd": T.prop_add,
        "t_ml": T.ml, "t_ramp": T.ramp_s, "t_dur": T.duration_s, "t_fade": T.fade_s,
        "t_lag": T.hop_lag_s, "atten_pow": T.atten_pow,
        "hops": np.ascontiguousarray(m.hops, dtype=np.int64),
        "lat": LAT, "thr": flt.THR, "err": flt.ERR,
        "base_accuracy": BASE_ACCURACY, "acc_noise_sd": ACC_NOISE_SD,
        "drift_every": m.drift_every, "inv_drift_every": 1.0 / m.drift_every,
        "pool_size": len(m.drift.windows),
        "healthy_ks": m.drift.healthy_ks, "healthy_psi": m.drift.healthy_psi,
        "pool_windows": m.drift.windows, "ref_sorted": m.drift.reference.sorted_ref,
        "ref_edges": m.drift.reference.edges, "ref_frac": m.drift.reference.ref_frac,
        "lat_limit_z": float(m.lat_limit_z), "thr_limit_z": float(m.thr_limit_z),
        "err_limit_z": np.ascontiguousarray(m.err_limit_z, dtype=np.float64),
        "z_lo": m.z_lo.ravel().copy(), "z_hi": m.z_hi.ravel().copy(),
        "replica_cost": REPLICA_COST_PER_H, "base_cost": float(m.base_cost),
        "slo_acc": float(slo.accuracy_min), "slo_stale": float(slo.staleness_max_s),
        "slo_null": float(slo.null_rate_max), "slo_schema": float(slo.schema_error_max),
        "slo_cost": float(slo.cost_factor_max), "detect_z": DETECT_Z,
    }
    return KernelConsts(**fields)
