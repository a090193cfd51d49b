"""The batch core: N pipelines' state and the compiled step, with no Gymnasium in it.

:class:`BatchCore` owns the state arrays (:mod:`healgym.envs.state`), the kernel constants, the
episode plan and the dispatch cache; its public API is :meth:`~BatchCore.start`,
:meth:`~BatchCore.advance`, :attr:`~BatchCore.state` (named views), :meth:`~BatchCore.last_z`,
:meth:`~BatchCore.faults` and :meth:`~BatchCore.episode_metrics`. Both env classes are thin
Gymnasium adapters over it: :class:`healgym.envs.vector.PipelineHealVectorEnv` (N pipelines) and
:class:`healgym.envs.pipeline_heal.PipelineHealEnv` (a core of one).

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

State is one array per field, shape (N,) or (N, slots). Faults and action side effects live in
``F_MAX`` slots per env, kept in creation order, incidents in ``I_MAX`` slots.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np

from healgym.envs import _kernel as K
from healgym.envs.consts import FAULT_LABEL, kernel_consts
from healgym.envs.metrics import metrics_dict
from healgym.envs.state import (
    FIELDS,
    METRIC_FIELDS,
    State,
    allocate,
    dims,
)
from healgym.envs.state import get as get_field
from healgym.envs.state import replace as replace_field
from healgym.errors import ConfigError
from healgym.sim.episode import (
    NAME_RANK,
    SOURCES,
    draw_schedule,
    episode_consts,
    fill_rows,
)
from healgym.sim.faults import (
    INF,
    ML_SIGNALS,
    SPEC_INDEX,
)
from healgym.sim.jit import entry_point, signature
from healgym.sim.model import PipelineModel, affine

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


class BatchCore:
    """N pipelines of one :class:`~healgym.sim.model.PipelineModel`: their state and step."""

    def __init__(self, model: PipelineModel, num_envs: int = 1,
                 num_threads: int | None = None) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r}: must be >= 1")
        self.model = m = model
        self.num_envs = N = int(num_envs)
        self._ec: Any = None
        self._default_ec: Any = None
        self.started = False
        S, M = m.n_stages, m.n_metrics
        A = len(m.actions)
        self._clean_za, self._clean_zb = affine(m, np.ones((S, M)), np.zeros((S, M)))
        self._c = kernel_consts(m)
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
        self.state = allocate(dims(N, S, M, A, lag=self.model.metric_lag_steps))
        ef = self.state.effects
        ef.za[:] = self._clean_za.ravel()
        ef.zb[:] = self._clean_zb.ravel()
        self.keyed = False
        self.prev_done = np.zeros(N, dtype=bool)

    def _replace(self, path: str, array: np.ndarray) -> None:
        """Replace a state field (a wider plan): a new dispatch layout."""
        self._layout += 1
        self.state = replace_field(self.state, path, array)

    def last_z(self) -> np.ndarray:
        """The unclipped z-scores (S*M,) the last step computed for the batch's last env (a
        batch of one: its only env; the scalar env's raw metrics come from them)."""
        return self._scratch0[3]

    # ------------------------------------------------------------------ episodes
    def start(self, keys: np.ndarray | None, options: dict[str, Any] | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Start every env's episode: from ``keys``, or (None) each env's next key. Returns the
        first observations and SLO flags."""
        N = self.num_envs
        if keys is not None:
            self.state.clock.key[:] = keys
        advance = keys is None
        self.keyed = True
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
        self.started = True
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

    def advance(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray]:
        """One step of every env with valid int64 actions ``a``: (observations, rewards, SLO
        flags, invalid-action flags, truncations)."""
        N, m = self.num_envs, self.model
        restart = self.prev_done
        live = ~restart
        ck = self.state.clock
        if not m.time_limit:  # with a limit, the plan covers the episode
            grow = np.flatnonzero(live & (ck.k >= ck.n_plan))
            if grow.size:
                self._grow_plan(grow)
        reward = np.zeros(N)
        invalid = np.zeros(N, dtype=bool)
        obs = np.zeros((N, self._n_obs), dtype=np.float32)
        violated = np.zeros(N, dtype=bool)
        self._run(K.step_range, K.step_threads, restart, live, a, invalid, self._ec,
                  *self._kernel_state(), obs, reward, violated)
        if m.time_limit:
            truncated = live & (ck.k >= m.episode_steps)
        else:
            truncated = np.zeros(N, dtype=bool)
        self.prev_done = truncated.copy()
        return obs, reward, violated, invalid, truncated

    # ------------------------------------------------------------------ reporting
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

    def fault_states(self, i: int) -> list[dict[str, Any]]:
        """Sub-env ``i``'s active faults with their timing: type, stage, onset, the start of
        the symptom now showing (later than the onset once an action relieved it) and the ramp
        (the oracle reads these to know which fixes can work now)."""
        from healgym.sim.faults import ALL_SPECS

        sl = self.state.slots
        n = int(sl.n[i])
        return [{"fault": FAULT_LABEL[int(sl.fault[i, f])], "stage": self.model.stages[
                    int(sl.stage[i, f])], "onset_s": float(sl.onset[i, f]),
                 "shown_s": float(sl.shown[i, f]),
                 "ramp_s": float(ALL_SPECS[int(sl.kind[i, f])].ramp_s)}
                for f in range(n) if sl.inc[i, f] >= 0]


__all__ = ["BatchCore", "default_threads"]
