"""An episode's set-up draws: replay rows, chaos arrivals and the replayed incident's window.

Everything an episode draws is a pure function of its 64-bit key (:mod:`healgym.sim.rng`):
these compiled functions make the set-up from ``(key, plan chunk)``; the env's kernel calls them
for every sub-env that resets (the scalar env is a batch of one), so a batch resets without a
Python loop or a Generator per sub-env, and an episode does not depend on the batch it ran in.

Keys: ``reset(seed=s)`` gives the episode key :func:`seed_key` ``(s)``; each following
episode's key is :func:`next_key` of the previous one (a SplitMix64 step). A vector env reset
with ``seed=s`` gives sub-env ``i`` the scalar env's episodes for ``seed=s + i``.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from healgym.sim.chaos import ChaosConfig, FaultEvent, Scenario, stage_choices
from healgym.sim.faults import ALL_SPECS, FAULT_NAMES, LIBRARY, SPEC_INDEX
from healgym.sim.jit import compiled
from healgym.sim.rng import _GAMMA, _mix, mix1
from healgym.sim.rng import uniform1 as _u

#: Where a fault instance came from (the code the arrays store).
SOURCES = ("chaos", "scenario", "cascade", "replay")
CHAOS, SCENARIO = 0, 1
#: Set-up draws use the episode key xor this salt, so they never meet the in-episode draws.
SALT = np.uint64(0xD1B54A32D192ED03)
ROWS_SEGMENT, ROWS_OFFSET, WINDOW, COUNT, EV_TIME, EV_STAGE, EV_SEVERITY = 1, 2, 3, 4, 5, 6, 7
POISSON_PIECE = 30.0  # Poisson(lam) as a sum of Poisson(<= 30): exp(-lam) stays a normal float
#: A fault name's rank in alphabetical order: events at the same time sort by name, then stage.
NAME_RANK = np.array([sorted(s.name for s in ALL_SPECS).index(s.name) for s in ALL_SPECS],
                     dtype=np.int64)


@compiled()
def next_key(key):  # type: ignore[no-untyped-def]
    """The key of the episode after the one with ``key``."""
    return mix1(np.uint64(key) + _GAMMA)


def seed_key(seed: int | np.ndarray) -> Any:
    """The first episode's key after ``reset(seed=seed)`` (vectorised over an array of seeds)."""
    s = np.asarray(seed).astype(np.uint64)
    with np.errstate(over="ignore"):
        return _mix(_mix(s * _GAMMA + _GAMMA) ^ SALT)


# --------------------------------------------------------------------------- replay rows
@compiled(nogil=True)
def fill_rows(key, plan, seg_start, seg_end, rows_needed, start_row, out):  # type: ignore[no-untyped-def]
    """Dataset rows for one plan chunk (``rows_needed`` of them) into ``out``.

    The first window starts at ``start_row`` (if >= 0) or a random offset; more windows are
    appended, at random offsets inside runs of real data (a run long enough for the rest if
    there is one, else any, in proportion to their lengths), while the chunk needs them."""
    skey = np.uint64(key) ^ SALT
    nseg = seg_start.size
    longest = 0
    for s in range(nseg):
        longest = max(longest, seg_end[s] - seg_start[s])
    have = 0
    j = 0
    while have < rows_needed:
        remaining = rows_needed - have
        counter = (plan << 12) + j
        if j == 0 and start_row >= 0:
            k = nseg - 1
            for s in range(nseg):
                if seg_end[s] > start_row:
                    k = s
                    break
            off = min(max(start_row, seg_start[k]), seg_end[k] - 1)
        else:
            k = 0
            if nseg > 1:
                need = min(remaining, longest)
                total = 0.0
                for s in range(nseg):
                    if seg_end[s] - seg_start[s] >= need:
                        total += float(seg_end[s] - seg_start[s])
                u = _u(skey, counter, ROWS_SEGMENT) * total
                acc = 0.0
                k = nseg - 1
                for s in range(nseg):
                    if seg_end[s] - seg_start[s] >= need:
                        acc += float(seg_end[s] - seg_start[s])
                        if acc > u:
                            k = s
                            break
            hi = max(seg_end[k] - min(remaining, seg_end[k] - seg_start[k]), seg_start[k])
            off = seg_start[k] + np.int64(_u(skey, counter, ROWS_OFFSET)
                                          * (hi - seg_start[k] + 1))
        end = min(off + remaining, seg_end[k])
        for r in range(off, end):
            out[have + r - off] = r
        have += end - off
        j += 1


# --------------------------------------------------------------------------- fault schedule
@compiled()
def _poisson(lam, u):  # type: ignore[no-untyped-def]
    """Poisson(lam) by inversion of one uniform (lam <= POISSON_PIECE)."""
    p = np.exp(-lam)
    s = p
    x = 0
    while u > s and p > 0.0:
        x += 1
        p *= lam / x
        s += p
    return x


@compiled(nogil=True)
def fill_events(key, plan, random_chaos, rates, choices, n_choices, sev_lo, sev_hi, lo_s,
                horizon_s, sc_t, sc_kind, sc_stage, sc_sev, rank, out_t, out_kind, out_stage,
                out_sev, out_src):  # type: ignore[no-untyped-def]
    """An episode's fault schedule into the ``out_*`` arrays, sorted by (time, fault name,
    stage), scenario entries first among equals; returns (events written, events dropped for
    want of room).

    The scenario's entries (``sc_*``), then if ``random_chaos`` Poisson arrivals of every
    library fault (``rates`` per second, stage from ``choices``, severity uniform in
    [sev_lo, sev_hi]) in (lo_s, horizon_s]: a Poisson count per fault, then uniform times,
    stages and severities, the same distribution as exponential gaps."""
    skey = np.uint64(key) ^ SALT
    cap = out_t.size
    n = 0
    dropped = 0
    for q in range(sc_t.size):
        if n < cap:
            out_t[n], out_kind[n], out_stage[n] = sc_t[q], sc_kind[q], sc_stage[q]
            out_sev[n], out_src[n] = sc_sev[q], SCENARIO
            n += 1
        else:
            dropped += 1
    span = horizon_s - lo_s
    if random_chaos and span > 0:
        e = 0
        for f in range(rates.size):
            lam = rates[f] * span
            count = 0
            piece = 0
            while lam > 0.0:
                part = min(lam, POISSON_PIECE)
                count += _poisson(part, _u(skey, (plan << 20) + (f << 8) + piece, COUNT))
                lam -= part
                piece += 1
            nc = n_choices[f]
            for _ in range(count):
                counter = (plan << 32) + e
                e += 1
                at = lo_s + span * _u(skey, counter, EV_TIME)
                stage = choices[f, min(np.int64(_u(skey, counter, EV_STAGE) * nc), nc - 1)]
                sev = sev_lo + (sev_hi - sev_lo) * _u(skey, counter, EV_SEVERITY)
                if n < cap:
                    out_t[n], out_kind[n], out_stage[n] = at, f, stage
                    out_sev[n], out_src[n] = sev, CHAOS
                    n += 1
                else:
                    dropped += 1
    # stable insertion sort by (time, name, stage): schedules are short
    for a in range(1, n):
        t_, k_, s_, v_, c_ = out_t[a], out_kind[a], out_stage[a], out_sev[a], out_src[a]
        b = a - 1
        while b >= 0 and (out_t[b] > t_ or (out_t[b] == t_ and (
                rank[out_kind[b]] > rank[k_] or (rank[out_kind[b]] == rank[k_]
                                                 and out_stage[b] > s_)))):
            out_t[b + 1], out_kind[b + 1], out_stage[b + 1] = out_t[b], out_kind[b], out_stage[b]
            out_sev[b + 1], out_src[b + 1] = out_sev[b], out_src[b]
            b -= 1
        out_t[b + 1], out_kind[b + 1], out_stage[b + 1], out_sev[b + 1], out_src[b + 1] = (
            t_, k_, s_, v_, c_)
    return n, dropped


@compiled()
def pick_window(key, n_windows):  # type: ignore[no-untyped-def]
    """Which labelled fault window an episode replays."""
    return min(np.int64(_u(np.uint64(key) ^ SALT, 0, WINDOW) * n_windows), n_windows - 1)


# --------------------------------------------------------------------------- the constants
#: The set-up's constants, in order (a module-level namedtuple: numba's cache knows its type).
EPISODE_FIELDS = ("seg_start", "seg_end", "rows_needed", "random_chaos", "rates", "choices",
                  "n_choices", "sev_lo", "sev_hi", "lo_s", "horizon_s", "sc_t", "sc_kind",
                  "sc_stage", "sc_sev", "rank", "n_events", "replay_on", "win", "replay_step")
EpisodeConsts = namedtuple("EpisodeConsts", EPISODE_FIELDS)  # type: ignore[misc]


def chaos_tables(cfg: ChaosConfig, stages: list[str]) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """(rates per second, stage choices (F, S) padded, number of choices) per library fault."""
    S = len(stages)
    rates = np.array([cfg.rate(f.name) / 3600.0 if cfg.enabled else 0.0 for f in LIBRARY])
    choices = np.zeros((len(LIBRARY), S), dtype=np.int64)
    n_choices = np.zeros(len(LIBRARY), dtype=np.int64)
    for i, f in enumerate(LIBRARY):
        ch = stage_choices(f.name, stages)
        choices[i, : len(ch)] = ch
        n_choices[i] = len(ch)
    return rates, choices, n_choices


def schedule_room(rates: np.ndarray, span_s: float, n_scenario: int) -> int:
    """Room for an episode's schedule: the scenario's entries and the chaos arrivals' mean plus
    ten standard deviations (a fuller schedule drops the rest, counted as dropped faults)."""
    mean = float(rates.sum()) * max(span_s, 0.0)
    return n_scenario + 16 + int(np.ceil(mean + 10.0 * np.sqrt(mean)))


def incident_windows(m: Any) -> np.ndarray:
    """The labelled fault windows an episode can replay: (n, 5) rows of (start row, onset row,
    end row, stage, healing column), the episode starting a tenth of an episode before the
    onset (the scalar env and the vector env pick among the same rows)."""
    from healgym.telemetry.schema import unix_seconds

    fw = m.replay.fault_windows
    if fw.empty:
        return np.zeros((0, 5), dtype=np.int64)
    times, step = m.replay.times, m.replay.step_seconds
    start = unix_seconds(fw["start"])
    end = unix_seconds(fw["end"])
    lead_rows = max(1, int(0.1 * m.episode_steps * m.dt / step))
    cols = {name: i for i, name in enumerate((*FAULT_NAMES, "unknown"))}
    out = []
    for i in np.flatnonzero((start >= times[0]) & (end <= times[-1])):
        onset_row = int(np.searchsorted(times, start[i]))
        end_row = int(np.searchsorted(times, end[i]))
        stage = m.replay.entities.index(fw["entity"].iloc[i])
        ftype = fw["fault_type"].iloc[i]
        col = cols[ftype] if isinstance(ftype, str) and ftype in FAULT_NAMES else cols["unknown"]
        out.append((max(onset_row - lead_rows, 0), onset_row, max(end_row, onset_row + 1),
                    stage, col))
    return np.array(out, dtype=np.int64).reshape(-1, 5)


def episode_consts(m: Any, scenario: Scenario | None) -> Any:
    """The set-up constants of model ``m`` with ``scenario`` (None: chaos only)."""
    from healgym.errors import ConfigError

    rates, choices, n_choices = chaos_tables(m.chaos, m.stages)
    events = scenario.events(m.stages) if scenario is not None else []
    random_chaos = scenario is None or scenario.random_chaos
    horizon = m.episode_steps * m.dt
    lo = max(m.chaos.warmup_s, 0.0)
    win = incident_windows(m) if m.replay_incidents else np.zeros((0, 5), dtype=np.int64)
    if m.replay_incidents and len(win) == 0:
        raise ConfigError("replay_incidents=True, but no labelled fault window lies inside "
                          "the replayable span of the chosen stages")
    seg = np.array(m.replay.segments, dtype=np.int64).reshape(-1, 2)
    fields: dict[str, Any] = dict(
        seg_start=seg[:, 0].copy(), seg_end=seg[:, 1].copy(),
        rows_needed=int(np.ceil(m.episode_steps * m.dt / m.replay.step_seconds)) + 2,
        random_chaos=bool(random_chaos), rates=rates, choices=choices, n_choices=n_choices,
        sev_lo=float(m.chaos.severity[0]), sev_hi=float(m.chaos.severity[1]),
        lo_s=lo, horizon_s=float(horizon),
        sc_t=np.array([e.at_s for e in events], dtype=np.float64),
        sc_kind=np.array([SPEC_INDEX[e.fault] for e in events], dtype=np.int64),
        sc_stage=np.array([e.stage for e in events], dtype=np.int64),
        sc_sev=np.array([e.severity for e in events], dtype=np.float64),
        rank=NAME_RANK,
        n_events=schedule_room(rates if random_chaos else rates * 0.0, horizon - lo,
                               len(events)),
        replay_on=bool(m.replay_incidents), win=win,
        replay_step=float(m.replay.step_seconds))
    return EpisodeConsts(**fields)


def draw_schedule(ec: Any, key: int, plan: int = 0, lo_s: float | None = None,
                  horizon_s: float | None = None, scenario: bool = True
                  ) -> tuple[list[FaultEvent], int]:
    """(The fault schedule as events, how many were dropped for want of room): the arrays of
    :func:`fill_events` for one episode, as events (for later plan chunks and for tests)."""
    cap = ec.n_events
    t, kind, stage = np.empty(cap), np.empty(cap, np.int64), np.empty(cap, np.int64)
    sev, src = np.empty(cap), np.empty(cap, np.int64)
    none_f, none_i = np.empty(0), np.empty(0, np.int64)
    n, dropped = fill_events(
        np.uint64(key), plan, ec.random_chaos, ec.rates, ec.choices, ec.n_choices, ec.sev_lo,
        ec.sev_hi, ec.lo_s if lo_s is None else lo_s,
        ec.horizon_s if horizon_s is None else horizon_s,
        ec.sc_t if scenario else none_f, ec.sc_kind if scenario else none_i,
        ec.sc_stage if scenario else none_i, ec.sc_sev if scenario else none_f, ec.rank,
        t, kind, stage, sev, src)
    events = [FaultEvent(float(t[j]), ALL_SPECS[int(kind[j])].name, int(stage[j]),
                         float(sev[j]), SOURCES[int(src[j])]) for j in range(n)]
    return events, int(dropped)
