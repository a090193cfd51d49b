"""Compiled per-env step of the vector env (numba).

The model's dynamics, written once: each function loops over the envs of a batch (the scalar env
is a batch of one) and runs one env's step: float64, no fast-math, so results do not depend on
the batch size or the thread split. Fault effects (:func:`healgym.sim.faults.accumulate`), ML
health (:func:`healgym.sim.model.ml_health`), drift scores and the episode draws are compiled
functions shared with the analysis tools. The state is one :class:`healgym.envs.state.State`
record of named group records, read and written by name; constants come packed in
:class:`healgym.envs.consts.KernelConsts`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from healgym.envs.state import (
    DRIFT_KS,
    DRIFT_PSI,
    INF,
    NATURAL,
    SP_FROM,
    SP_ONSET,
    SP_STAGE,
    SP_TO,
    UNRESOLVED,
    State,
)
from healgym.sim.actions import (
    ADD_REPLICA,
    LIGHT_OFF,
    LIGHT_ON,
    NEW_VERSION,
    PAGE,
    PREVIOUS_VERSION,
    REMOVE_REPLICA,
    RESTARTING,
    SHED,
    mask_row,
)
from healgym.sim.drift import shifted_scores
from healgym.sim.episode import fill_events, fill_rows, next_key, pick_window
from healgym.sim.faults import accumulate, capacity, factor
from healgym.sim.jit import compiled
from healgym.sim.layout import CONTEXT_INDEX, HISTORY_INDEX
from healgym.sim.model import (
    H_ACC,
    H_COST,
    H_NULL,
    H_PRED,
    H_SCHEMA,
    H_SHIFT,
    H_STALE,
    ml_health,
)
from healgym.sim.reward import action_reward, recovery_bonus, slo_violated_z, state_reward
from healgym.sim.rng import PRED_NOISE
from healgym.sim.rng import normal1 as normal
from healgym.sim.rng import uniform1 as uniform

# the context block's entries (healgym.sim.layout.CONTEXT); numba folds globals as constants
CX_ACCURACY, CX_KS, CX_PSI = (CONTEXT_INDEX[k] for k in ("accuracy", "drift_ks", "drift_psi"))
CX_NULL, CX_SCHEMA, CX_STALE = (CONTEXT_INDEX[k] for k in ("null_rate", "schema_error_rate",
                                                           "staleness_h"))
CX_COST, CX_SINCE, CX_IN_FLIGHT = (CONTEXT_INDEX[k] for k in ("cost_factor",
                                                              "since_last_action_h",
                                                              "action_in_flight"))
CX_LIGHT, CX_ROLLBACK = CONTEXT_INDEX["light_model"], CONTEXT_INDEX["can_rollback"]
CX_PAGED, CX_SHEDDING = CONTEXT_INDEX["escalation_in_flight"], CONTEXT_INDEX["shedding"]
CX_DEPLOY, CX_PRED = CONTEXT_INDEX["since_deploy_h"], CONTEXT_INDEX["pred_shift"]
#: the prediction-shift proxy's healthy floor and sampling spread (PSI units; 0.25 alarms)
PRED_FLOOR, PRED_SPREAD = 0.01, 0.03
HI_ALARM, HI_FIXED = (HISTORY_INDEX[k] for k in ("since_alarm_h", "last_done_fixed"))


# --------------------------------------------------------------------------- slots, incidents
@compiled(inline="always")
def write_slot(i, kind, col, stage, sev, onset, inc, end, cascade, sl):
    """Append a slot (the caller checked there is room), in creation order."""
    f = sl.n[i]
    sl.n[i] += 1
    sl.next_uid[i] += 1
    sl.uid[i, f] = sl.next_uid[i]
    sl.kind[i, f] = kind
    sl.fault[i, f] = col
    sl.stage[i, f] = stage
    sl.sev[i, f] = sev
    sl.onset[i, f] = onset
    sl.shown[i, f] = onset
    sl.inc[i, f] = inc
    sl.end[i, f] = end
    sl.cascade[i, f] = cascade
    sl.dirty[i] = True  # effects changed


@compiled(inline="always")
def add_instance(i, kind, stage, sev, onset, src, parent, end, col, carrier, s, c):
    """Append a fault instance (opening an incident unless ``parent`` >= 0); False if dropped."""
    sl, ic = s.slots, s.incidents
    if sl.n[i] >= sl.kind.shape[1] or (parent < 0 and ic.n[i] >= ic.fault.shape[1]):
        ic.dropped[i] += 1
        return False
    if parent < 0:
        inc = ic.n[i]
        ic.n[i] += 1
        ic.fault[i, inc] = col
        ic.stage[i, inc] = stage
        ic.src[i, inc] = src
        ic.onset[i, inc] = onset
    else:
        inc = parent
    if ic.nf[i, inc] < ic.faults.shape[2]:
        ic.faults[i, inc, ic.nf[i, inc]] = col
    ic.nf[i, inc] += 1
    ic.active[i, inc] += 1
    if np.isnan(ic.detected[i, inc]):
        ic.watch[i] = True
    if parent < 0 and col >= 0 and c.release[col] and src != c.src_replay:
        # a bad release is a deploy: a new model version, which replaces any older model the
        # pipeline ran (so rollback always has the last good version to go back to). A
        # replayed real incident is not: the data has no deploy event, and the incident is
        # registered at the episode's start, before its onset (a deploy time in the future
        # would tell the policy what is coming)
        s.pipeline.version[i] += 1
        s.pipeline.deploy_t[i] = onset
        drop_side(i, c.side_old, sl)
    write_slot(i, kind, col, stage, sev, onset, inc,
               onset + c.end_after[kind] if np.isnan(end) else end,
               INF if carrier else onset + c.cascade_after[kind], sl)
    return True


@compiled(inline="always")
def add_side(i, kind, stage, onset, until, s):
    """Append an action's side effect (no incident)."""
    sl = s.slots
    if sl.n[i] >= sl.kind.shape[1]:
        s.incidents.dropped[i] += 1
        return
    write_slot(i, kind, -1, stage, 1.0, onset, -1, until, INF, sl)


@compiled(inline="always")
def compact(i, rm, sl):
    """Remove the slots whose bits are set in ``rm``, keeping the rest in creation order."""
    if rm == 0:
        return
    s_kind, s_fault, s_stage, s_sev, s_onset = sl.kind, sl.fault, sl.stage, sl.sev, sl.onset
    s_end, s_cascade, s_inc, s_uid, s_shown = sl.end, sl.cascade, sl.inc, sl.uid, sl.shown
    sl.dirty[i] = True  # effects changed
    w = 0
    for f in range(sl.n[i]):
        if (rm >> f) & 1:
            continue
        if w != f:
            s_kind[i, w] = s_kind[i, f]
            s_fault[i, w] = s_fault[i, f]
            s_stage[i, w] = s_stage[i, f]
            s_sev[i, w] = s_sev[i, f]
            s_onset[i, w] = s_onset[i, f]
            s_shown[i, w] = s_shown[i, f]
            s_end[i, w] = s_end[i, f]
            s_cascade[i, w] = s_cascade[i, f]
            s_inc[i, w] = s_inc[i, f]
            s_uid[i, w] = s_uid[i, f]
        w += 1
    for f in range(w, sl.n[i]):
        s_end[i, f] = INF
        s_cascade[i, f] = INF
        s_sev[i, f] = 0.0
        s_inc[i, f] = -1
        s_fault[i, f] = -1
    sl.n[i] = w


@compiled(inline="always")
def clear(i, f, by, t, k, s, c):
    """Clear slot ``f`` (the caller compacts); returns the recovery bonus (an action's
    resolution of the incident; a natural end earns none)."""
    sl, ic, pl = s.slots, s.incidents, s.pipeline
    inc = sl.inc[i, f]
    if inc < 0:
        return 0.0
    if by != NATURAL and sl.uid[i, f] == pl.replayed_uid[i]:
        pl.splice[i, SP_FROM] = k
    ic.active[i, inc] -= 1
    if ic.active[i, inc] > 0 or not np.isnan(ic.resolved[i, inc]):
        return 0.0
    ic.resolved[i, inc] = t
    ic.by[i, inc] = by
    if np.isnan(ic.detected[i, inc]) and by != NATURAL:
        ic.detected[i, inc] = t
    if by == NATURAL:
        return 0.0
    return recovery_bonus(t - ic.onset[i, inc], c.recovery_bonus, c.horizon_s)


# --------------------------------------------------------------------------- actions, events
@compiled(inline="always")
def complete(i, a, issued, stream, t, k, key, s, c):
    """An action takes effect: it may heal the faults that were active when it was issued.

    State matters (FaultSpec): a fault whose ``blocks`` names the action's kind, showing on a
    target stage when the action was issued, makes it heal nothing; a fault that
    ``heals_after_ramp`` by it heals only if its ramp was over when the action was issued; a
    fault it only ``relieves`` (and does not heal) loses its symptom until ``relapse_s`` later.
    """
    sl, pl = s.slots, s.pipeline
    kind = c.a_kind[a]
    astage = c.a_stage[a]
    rm = 0
    bonus = 0.0
    healed_release = False
    relieved = False
    blocked = False
    for f in range(sl.n[i]):
        if (sl.inc[i, f] >= 0 and sl.shown[i, f] <= issued
                and (astage < 0 or sl.stage[i, f] == astage)
                and c.blocks[kind, sl.fault[i, f]]):
            blocked = True
    j = 0
    for f in range(sl.n[i]):
        if sl.inc[i, f] < 0 or sl.onset[i, f] > issued or (astage >= 0
                                                          and sl.stage[i, f] != astage):
            continue
        col = sl.fault[i, f]
        p = c.healing[kind, col]
        if blocked or (c.after_ramp[kind, col]
                       and issued - sl.shown[i, f] < c.t_ramp[sl.kind[i, f]]):
            p = 0.0
        u = uniform(key, k, stream + j)  # drawn whatever p is: outcomes keep their streams
        j += 1
        if u < p:
            healed_release = healed_release or c.release[col]
            bonus += clear(i, f, a, t, k, s, c)
            rm |= 1 << f
        elif c.relieve[kind, col] and not blocked:
            relieved = True
            sl.shown[i, f] = t + c.relapse_s[col]
            if sl.cascade[i, f] != INF:  # a leak's crash is due again from the new start
                sl.cascade[i, f] = sl.shown[i, f] + c.cascade_after[sl.kind[i, f]]
            sl.dirty[i] = True  # effects changed
    if rm == 0:
        s.actions.ineffective[i] += 1  # it fixed nothing (relieving is not fixing)
    s.actions.completed[i] = a
    # what an operator sees: the target recovered (healed, or relieved for now)
    s.actions.completed_fixed[i] = rm != 0 or relieved
    compact(i, rm, sl)
    eff = c.a_effect[a]
    if eff == ADD_REPLICA:
        pl.replicas[i, astage] = min(pl.replicas[i, astage] + 1, c.max_replicas)
        sl.dirty[i] = True  # capacity changed
    elif eff == REMOVE_REPLICA:
        pl.replicas[i, astage] = max(pl.replicas[i, astage] - 1, c.min_replicas)
        sl.dirty[i] = True
    elif eff == PREVIOUS_VERSION:
        pl.version[i] -= 1
        pl.deploy_t[i] = t
        has_old = False
        for f in range(sl.n[i]):
            if sl.kind[i, f] == c.side_old and sl.inc[i, f] < 0:
                has_old = True
        if not healed_release and not has_old:
            add_side(i, c.side_old, c.model_stage, t, INF, s)
    elif eff == NEW_VERSION:
        pl.version[i] += 1
        pl.deploy_t[i] = t
        drop_side(i, c.side_old, sl)
    elif eff == LIGHT_ON:
        pl.light[i] = True
        add_side(i, c.side_light, c.model_stage, t, INF, s)
    elif eff == LIGHT_OFF:
        pl.light[i] = False
        drop_side(i, c.side_light, sl)
    elif eff == SHED:
        add_side(i, c.side_shed, c.model_stage, t, t + c.shed_s, s)
    return bonus


@compiled(inline="always")
def drop_side(i, kind, sl):
    rm = 0
    for f in range(sl.n[i]):
        if sl.kind[i, f] == kind and sl.inc[i, f] < 0:
            rm |= 1 << f
    compact(i, rm, sl)


@compiled(nogil=True)
def act_and_events(live, chosen, s, c, reward, invalid_out, lo, hi):
    """Phase A for each live env: start the chosen action, advance the clock, apply due
    events."""
    sl, ac, ev, ck = s.slots, s.actions, s.events, s.clock
    k, t, key, mask = ck.k, ck.t, ck.key, ac.mask
    for i in range(lo, hi):
        if not live[i]:
            continue
        a = chosen[i]
        r = 0.0
        n0, e0 = sl.n[i], ev.ptr[i]
        touched = False  # an action started or completed
        if mask[i, a] == 0:
            ac.invalid[i] += 1
            invalid_out[i] = True
            r = action_reward(True, 0.0, c.invalid_penalty, c.cost_weight)
        elif a != 0:
            touched = True
            cost = c.a_cost[a]
            ac.spent[i] += cost
            ac.counts[i, a] += 1
            ac.last[i] = a
            ac.last_t[i] = t[i]
            done = t[i] + c.a_dur[a]
            if c.a_effect[a] == PAGE:  # a human works beside the action in flight
                ac.esc_done[i] = done
                ac.esc_issued[i] = t[i]
            else:
                ac.in_flight[i] = a
                ac.done[i] = done
                ac.issued[i] = t[i]
            if c.a_effect[a] == RESTARTING:
                add_side(i, c.side_restart, c.a_stage[a], t[i], done, s)
            r = action_reward(False, cost, c.invalid_penalty, c.cost_weight)
        k[i] += 1
        t[i] = k[i] * c.dt
        now = t[i]
        bonus = 0.0
        # natural ends
        rm = 0
        for f in range(sl.n[i]):
            if sl.end[i, f] <= now:
                bonus += clear(i, f, NATURAL, now, k[i], s, c)
                rm |= 1 << f
        if rm:
            compact(i, rm, sl)
        if ac.done[i] <= now and ac.in_flight[i] >= 0:
            aa, issued = ac.in_flight[i], ac.issued[i]
            ac.in_flight[i] = -1
            ac.done[i] = INF
            touched = True
            bonus += complete(i, aa, issued, c.heal_stream, now, k[i], key[i], s, c)
        if ac.esc_done[i] <= now:
            issued = ac.esc_issued[i]
            ac.esc_done[i] = INF
            touched = True
            bonus += complete(i, c.escalate, issued, c.escalate_stream, now, k[i], key[i], s, c)
        n_now = sl.n[i]
        for f in range(n_now):
            if sl.cascade[i, f] <= now:
                sl.cascade[i, f] = INF
                kd = sl.kind[i, f]
                child = c.cascade_child[kd]
                add_instance(i, child, sl.stage[i, f], sl.sev[i, f], now, c.src_cascade,
                             sl.inc[i, f], np.nan, c.spec_fault_col[child], False, s, c)
        while ev.ptr[i] < ev.t.shape[1] and ev.t[i, ev.ptr[i]] <= now:
            p = ev.ptr[i]
            ev.ptr[i] += 1
            kd = ev.kind[i, p]
            add_instance(i, kd, ev.stage[i, p], ev.sev[i, p], now, ev.src[i, p], -1, np.nan,
                         c.spec_fault_col[kd], False, s, c)
        reward[i] = r + bonus
        if touched or sl.n[i] != n0 or ev.ptr[i] != e0 or rm:
            ac.mask_dirty[i] = True  # the mask and the fault count may have changed


# --------------------------------------------------------------------------- effects, observe
@compiled(nogil=True)
def effects(s, c, mult, add, ml, lo, hi):
    """Fault and capacity effects of every env at its current time (:func:`accumulate`,
    :func:`factor`, :func:`ml_health`), folded into the affine map ``z = base * za + zb``. An
    env's effects are recomputed only when its faults or replicas changed (``slots.dirty``) or a
    ramp, fade or onset makes them move (``effects.stable``, the time until which they hold).

    ``mult``, ``add`` (S*M,) and ``ml`` (K,): the calling thread's scratch."""
    sl, ef, t, replicas = s.slots, s.effects, s.clock.t, s.pipeline.replicas
    dirty, stable = sl.dirty, ef.stable
    S, M = c.n_stages, c.n_metrics
    for i in range(lo, hi):
        now = t[i]
        if not dirty[i] and now < stable[i]:
            continue
        dirty[i] = False
        stable[i] = accumulate(sl.kind[i], sl.stage[i], sl.sev[i], sl.shown[i], sl.n[i], now,
                               c.hops, c.t_mult, c.t_add, c.t_pmult, c.t_padd, c.t_ml, c.t_ramp,
                               c.t_dur, c.t_fade, c.t_lag, c.atten_pow, mult, add, ml)
        zai, zbi = ef.za[i], ef.zb[i]
        for d in range(S):
            cap = capacity(c.default_replicas, replicas[i, d])
            for m in range(M):
                j = d * M + m
                zai[j] = factor(mult[j], m, cap) * c.inv[j]
                zbi[j] = (add[j] - c.median[j]) * c.inv[j]
        ml_health(ml, ef.ml_now[i])


@compiled(nogil=True)
def drift_checks(s, c, lo, hi):
    """Drift-monitor scores at check steps: the pool's healthy scores, or the shifted window
    scored by :func:`healgym.sim.drift.shifted_scores`."""
    k, key, ml_now, drift = s.clock.k, s.clock.key, s.effects.ml_now, s.pipeline.drift
    for i in range(lo, hi):
        j = np.int64(k[i] * c.inv_drift_every + 0.5)  # k / drift_every, if it divides
        if j * c.drift_every != k[i]:
            continue
        w = np.int64(uniform(key[i], j, 3) * c.pool_size)
        shift = ml_now[i, H_SHIFT]
        if shift != 0.0:
            ks, psi = shifted_scores(c.ref_sorted, c.ref_edges, c.ref_frac, c.pool_windows[w],
                                     shift)
            drift[i, DRIFT_KS] = ks
            drift[i, DRIFT_PSI] = psi
        else:
            drift[i, DRIFT_KS] = c.healthy_ks[w]
            drift[i, DRIFT_PSI] = c.healthy_psi[w]


@compiled(nogil=True)
def observe(live, s, values, c, obs, reward, violated_out, zf, lo, hi):
    """Phase B: observation, SLO, reward, detection and action mask of every env.

    ``values``: the replay table (T, S*M); ``zf``: the calling thread's (S*M,) scratch; ``obs``
    comes zeroed (only the last action's one-hot entry is written)."""
    ck, sl, ic, ac, pl, ef = s.clock, s.slots, s.incidents, s.actions, s.pipeline, s.effects
    k, k0, t, key, rows = ck.k, ck.k0, ck.t, ck.key, ck.rows
    za, zb, ml_now, drift, replicas = ef.za, ef.zb, ef.ml_now, pl.drift, pl.replicas
    version, light, splice = pl.version, pl.light, pl.splice
    mask_dirty, mask = ac.mask_dirty, ac.mask
    i_detected, i_resolved, i_onset, watch = ic.detected, ic.resolved, ic.onset, ic.watch
    S, M = c.n_stages, c.n_metrics
    SM = S * M
    R = rows.shape[1]
    o_rep, b = c.o_replicas, c.o_context
    z_lo, z_hi = c.z_lo, c.z_hi
    for i in range(lo, hi):
        zai, zbi, out = za[i], zb[i], obs[i]
        rel = k[i] - k0[i]
        pos = rel * c.dt / c.step_seconds
        i0 = min(np.int64(np.floor(pos)), R - 2)
        w = pos - i0
        v0 = values[rows[i, i0]]
        if w == 0.0:  # on a row: (1 - w) * v0 + w * v1 is v0 (the metrics are finite)
            for j in range(SM):
                zf[j] = v0[j] * zai[j] + zbi[j]
            for j in range(SM):
                out[j] = np.float32(min(max(zf[j], z_lo[j]), z_hi[j]))
        else:
            v1 = values[rows[i, i0 + 1]]
            for j in range(SM):
                zf[j] = (v0[j] * (1.0 - w) + v1[j] * w) * zai[j] + zbi[j]
            for j in range(SM):
                out[j] = np.float32(min(max(zf[j], z_lo[j]), z_hi[j]))
        if splice[i, SP_FROM] >= 0 and splice[i, SP_FROM] <= k[i] < splice[i, SP_TO]:
            sd, frm, to = splice[i, SP_STAGE], splice[i, SP_FROM], splice[i, SP_TO]
            onset_k = splice[i, SP_ONSET]
            first = max(onset_k - (to - frm), 0)
            src = min(first + (k[i] - frm), max(onset_k - 1, 0))
            pos2 = (src - k0[i]) * c.dt / c.step_seconds
            j0 = min(np.int64(np.floor(pos2)), R - 2)
            w2 = pos2 - j0
            q0, q1 = values[rows[i, j0]], values[rows[i, j0 + 1]]
            for m in range(M):
                j = sd * M + m
                zf[j] = (q0[j] * (1.0 - w2) + q1[j] * w2) * zai[j] + zbi[j]
                out[j] = np.float32(min(max(zf[j], z_lo[j]), z_hi[j]))
        if c.gap_p > 0.0:  # scrape gaps: a failed scrape shows the stage's previous metrics
            zs = ef.z_seen[i]
            if ef.z_seen_ok[i]:
                for d in range(S):
                    if uniform(key[i], k[i], c.gap_stream + d) < c.gap_p:
                        for m in range(M):
                            out[d * M + m] = zs[d * M + m]
            for j in range(SM):
                zs[j] = out[j]
            ef.z_seen_ok[i] = True
        if c.metric_lag > 0:  # delayed metrics: show the row scraped lag steps ago, keep this one
            ring = ef.z_ring[i]
            if ef.z_ring_n[i] == 0:  # the episode's first observation: no older row yet
                for r in range(c.metric_lag):
                    for j in range(SM):
                        ring[r * SM + j] = out[j]
            base = (ef.z_ring_n[i] % c.metric_lag) * SM
            for j in range(SM):
                old = ring[base + j]
                ring[base + j] = out[j]
                out[j] = old
            ef.z_ring_n[i] += 1
        acc, null, schema = ml_now[i, H_ACC], ml_now[i, H_NULL], ml_now[i, H_SCHEMA]
        stale, cost_mult = ml_now[i, H_STALE], ml_now[i, H_COST]
        # labels arrive late: the estimate follows the true accuracy with a first-order lag
        # (time constant label_lag_s), once per step of a live episode
        if live[i]:
            pl.acc_seen[i] += (acc - pl.acc_seen[i]) * c.label_alpha
        acc_est = min(max(pl.acc_seen[i] + c.acc_noise_sd * normal(key[i], k[i]), 0.0), 1.0)
        rsum = 0
        for d in range(S):
            rsum += replicas[i, d]
        cost = float(rsum) * c.replica_cost * cost_mult
        cost_factor = cost / c.base_cost
        ks_v, psi_v = drift[i, DRIFT_KS], drift[i, DRIFT_PSI]
        # the prediction distribution's PSI against the model's reference: a proxy that moves
        # as soon as the served model (or its inputs) change, before any label; its healthy
        # floor is the sampling noise of a window of scored traffic
        pred_v = ml_now[i, H_PRED] + PRED_FLOOR + \
            PRED_SPREAD * uniform(key[i], k[i], PRED_NOISE)
        violated = slo_violated_z(zf, S, M, c.model_stage, c.lat, c.thr, c.err, c.lat_limit_z,
                                  c.thr_limit_z, c.err_limit_z, acc, stale, null, schema,
                                  cost_factor, c.slo_acc, c.slo_stale, c.slo_null, c.slo_schema,
                                  c.slo_cost)
        for d in range(S):
            out[o_rep + d] = replicas[i, d] / c.max_replicas
        out[b + CX_ACCURACY] = acc_est
        out[b + CX_KS] = ks_v
        out[b + CX_PSI] = min(psi_v, 10.0)
        out[b + CX_NULL] = null
        out[b + CX_SCHEMA] = schema
        out[b + CX_STALE] = min(stale / 3600.0, 24.0)
        out[b + CX_COST] = min(cost_factor, 10.0)
        out[b + CX_SINCE] = min((t[i] - ac.last_t[i]) / 3600.0, 1.0)
        out[b + CX_IN_FLIGHT] = 1.0 if ac.in_flight[i] >= 0 else 0.0
        out[b + CX_LIGHT] = 1.0 if light[i] else 0.0
        out[b + CX_ROLLBACK] = 1.0 if version[i] > 1 else 0.0
        shedding = False
        for f in range(sl.n[i]):
            if sl.kind[i, f] == c.side_shed and sl.inc[i, f] < 0:
                shedding = True
        out[b + CX_PAGED] = 1.0 if ac.esc_done[i] != INF else 0.0
        out[b + CX_SHEDDING] = 1.0 if shedding else 0.0
        out[b + CX_DEPLOY] = min((t[i] - pl.deploy_t[i]) / 3600.0, 1.0)
        out[b + CX_PRED] = min(pred_v, 10.0)
        out[c.o_last + ac.last[i]] = 1.0
        if c.has_history:
            zp = ef.z_prev[i]
            if ef.z_prev_ok[i]:
                for j in range(SM):
                    out[c.o_dz + j] = out[j] - zp[j]
            for j in range(SM):
                zp[j] = out[j]
            ef.z_prev_ok[i] = True
            first = INF
            for q in range(ic.n[i]):
                if np.isnan(i_resolved[i, q]) and not np.isnan(i_detected[i, q]):
                    first = min(first, i_detected[i, q])
            out[c.o_hist + HI_ALARM] = min((t[i] - first) / 3600.0, 1.0) if first < INF else 0.0
            out[c.o_hist + HI_FIXED] = 1.0 if ac.completed_fixed[i] else 0.0
            out[c.o_done + ac.completed[i]] = 1.0
        if live[i]:
            if violated:
                pl.downtime[i] += c.dt
            r = state_reward(reward[i], violated, c.shed_share if shedding else 0.0, c.dt,
                             cost, c.base_cost, c.slo_per_s,
                             c.infra_weight)
            reward[i] = r
            pl.total_reward[i] += r
            violated_out[i] = violated
            # detection: an incident is open and undetected, and the monitors alarm
            # ``watch``: an incident may be open and undetected (set where incidents gain a
            # fault, cleared here when the scan finds none)
            wt = False
            if watch[i]:
                for q in range(ic.n[i]):
                    if np.isnan(i_detected[i, q]) and np.isnan(i_resolved[i, q]):
                        wt = True
                        break
                watch[i] = wt
            if wt:
                alarm = violated or psi_v > 0.25 or pred_v > 0.25 or \
                    acc_est < c.base_accuracy - 0.05
                if not alarm:
                    for j in range(SM):
                        if abs(out[j]) > c.detect_z:
                            alarm = True
                            break
                if alarm:
                    for q in range(ic.n[i]):
                        if (np.isnan(i_detected[i, q]) and np.isnan(i_resolved[i, q])
                                and i_onset[i, q] <= t[i]):
                            i_detected[i, q] = t[i]
        # action mask, and the ground-truth fault count: they change only with the slots,
        # an action's start or completion (``mask_dirty``, set by phase A and resets)
        if not mask_dirty[i]:
            continue
        mask_dirty[i] = False
        nf = 0
        for f in range(sl.n[i]):
            if sl.inc[i, f] >= 0:
                nf += 1
        pl.n_faults[i] = nf
        mask_row(mask[i], c.a_rule, c.a_stage, c.a_cost, ac.in_flight[i] < 0,
                 ac.esc_done[i] != INF, replicas[i], version[i] > 1, light[i], shedding,
                 c.budget - ac.spent[i] if c.has_budget else INF, c.max_replicas,
                 c.min_replicas)


# --------------------------------------------------------------------------- reset
@compiled(nogil=True)
def reset_range(todo, advance, s, ec, c, lo, hi):
    """Start a new episode in every env ``i`` of [lo, hi) with ``todo[i]``: its key (the next
    one if ``advance``), the set-up draws of :mod:`healgym.sim.episode`, the start values of
    :data:`healgym.envs.state.FIELDS` (tested against the table), and the replayed incident if
    the model replays them."""
    ck, ev, sl, ic, ac, pl, ef = (s.clock, s.events, s.slots, s.incidents, s.actions,
                                  s.pipeline, s.effects)
    key, rows = ck.key, ck.rows
    n_ev = ec.n_events
    R = rows.shape[1]
    for i in range(lo, hi):
        if not todo[i]:
            continue
        if advance:
            key[i] = next_key(key[i])
        kk = key[i]
        start_row = -1
        w = 0
        if ec.replay_on:
            w = pick_window(kk, ec.win.shape[0])
            start_row = ec.win[w, 0]
        row = rows[i]
        fill_rows(kk, 0, ec.seg_start, ec.seg_end, ec.rows_needed, start_row, row)
        for r in range(ec.rows_needed, R):
            row[r] = row[ec.rows_needed - 1]
        ck.k0[i] = 0
        ck.n_plan[i] = c.episode_steps
        n, lost = fill_events(kk, 0, ec.random_chaos, ec.rates, ec.choices, ec.n_choices,
                              ec.sev_lo, ec.sev_hi, ec.lo_s, ec.horizon_s, ec.sc_t, ec.sc_kind,
                              ec.sc_stage, ec.sc_sev, ec.rank, ev.t[i, :n_ev], ev.kind[i, :n_ev],
                              ev.stage[i, :n_ev], ev.sev[i, :n_ev], ev.src[i, :n_ev])
        for j in range(n, ev.t.shape[1]):
            ev.t[i, j] = INF
        ev.ptr[i] = 0
        ck.k[i] = 0
        ck.t[i] = 0.0
        for f in range(sl.kind.shape[1]):
            sl.end[i, f] = INF
            sl.cascade[i, f] = INF
            sl.inc[i, f] = -1
            sl.fault[i, f] = -1
            sl.sev[i, f] = 0.0
        sl.n[i] = 0
        sl.next_uid[i] = 0
        for q in range(ic.n[i]):
            ic.detected[i, q] = np.nan
            ic.resolved[i, q] = np.nan
            ic.by[i, q] = UNRESOLVED
            ic.active[i, q] = 0
            ic.nf[i, q] = 0
            for x in range(ic.faults.shape[2]):
                ic.faults[i, q, x] = -1
        ic.n[i] = 0
        ic.dropped[i] = lost
        ac.in_flight[i] = -1
        ac.done[i] = INF
        ac.issued[i] = 0.0
        ac.esc_done[i] = INF
        ac.esc_issued[i] = 0.0
        for d in range(pl.replicas.shape[1]):
            pl.replicas[i, d] = c.default_replicas
        pl.version[i] = 2
        pl.light[i] = False
        ac.last[i] = 0
        ac.last_t[i] = 0.0
        ac.completed[i] = 0
        ac.completed_fixed[i] = False
        pl.deploy_t[i] = -INF
        pl.acc_seen[i] = c.base_accuracy
        s.effects.z_prev_ok[i] = False
        s.effects.z_seen_ok[i] = False
        s.effects.z_ring_n[i] = 0
        ac.spent[i] = 0.0
        pl.downtime[i] = 0.0
        pl.total_reward[i] = 0.0
        for a in range(ac.counts.shape[1]):
            ac.counts[i, a] = 0
        ac.invalid[i] = 0
        ac.ineffective[i] = 0
        ic.watch[i] = False
        for x in range(pl.drift.shape[1]):
            pl.drift[i, x] = 0.0
        sl.dirty[i] = True
        ef.stable[i] = -INF
        for x in range(pl.splice.shape[1]):
            pl.splice[i, x] = -1
        pl.replayed_uid[i] = -1
        ac.mask_dirty[i] = True
        if ec.replay_on:  # the labelled window's fault: no synthetic effect, healed by its type
            onset = (ec.win[w, 1] - ec.win[w, 0]) * ec.replay_step
            end = (ec.win[w, 2] - ec.win[w, 0]) * ec.replay_step
            if add_instance(i, c.carrier_kind, ec.win[w, 3], 0.0, onset, c.src_replay, -1, end,
                            ec.win[w, 4], True, s, c):
                pl.splice[i, SP_STAGE] = ec.win[w, 3]
                pl.splice[i, SP_TO] = np.int64(np.rint(end / c.dt))
                pl.splice[i, SP_ONSET] = np.int64(np.rint(onset / c.dt))
                pl.replayed_uid[i] = sl.next_uid[i]


# --------------------------------------------------------------------------- one call per step
@compiled(nogil=True)
def observe_range(live, s, values, c, obs, reward, violated_out, mult, add, ml, zf, lo, hi):
    """Effects, drift checks and phase B for envs [lo, hi): one compiled call (argument
    unboxing costs a call as much as a thousand envs' arithmetic)."""
    effects(s, c, mult, add, ml, lo, hi)
    drift_checks(s, c, lo, hi)
    observe(live, s, values, c, obs, reward, violated_out, zf, lo, hi)


@compiled(nogil=True)
def step_range(restart, live, chosen, invalid_out, ec, s, values, c, obs, reward, violated_out,
               mult, add, ml, zf, lo, hi):
    """A whole step for envs [lo, hi): the autoreset of the envs that are not ``live`` (their
    episode ended at the previous step), phase A, then :func:`observe_range`."""
    reset_range(restart, True, s, ec, c, lo, hi)
    act_and_events(live, chosen, s, c, reward, invalid_out, lo, hi)
    observe_range(live, s, values, c, obs, reward, violated_out, mult, add, ml, zf, lo, hi)


# --------------------------------------------------------------------------- the threads
# One range per thread, scheduled by numba's threading layer (OpenMP where the system has
# libgomp: a hand-off costs microseconds, a ThreadPoolExecutor's tens). Each range has its
# own scratch rows, and envs are independent: the split never changes a result. A parallel
# loop's arguments cannot be records of records (numba's gufunc wrapper takes one level of
# tuples), so these take the state's groups, and a compiled helper called in the loop rebuilds
# the State (rebuilding it in the loop body itself measured ~20 % slower at 4096 envs, on a
# noisy machine: docs/performance.md).
@compiled(nogil=True)
def _step_groups(restart, live, chosen, invalid_out, ec, clock, events, slots, incidents,
                 actions, pipeline, effects_, values, c, obs, reward, violated_out, mult, add,
                 ml, zf, lo, hi):
    step_range(restart, live, chosen, invalid_out, ec,
               State(clock, events, slots, incidents, actions, pipeline, effects_), values, c,
               obs, reward, violated_out, mult, add, ml, zf, lo, hi)


@njit(cache=True, parallel=True)
def step_threads(bounds, mult, add, ml, zf, restart, live, chosen, invalid_out, ec, clock, events,
                 slots, incidents, actions, pipeline, effects_, values, c, obs, reward,
                 violated_out):
    for r in prange(bounds.size - 1):
        _step_groups(restart, live, chosen, invalid_out, ec, clock, events, slots, incidents,
                     actions, pipeline, effects_, values, c, obs, reward, violated_out, mult[r],
                     add[r], ml[r], zf[r], bounds[r], bounds[r + 1])


@njit(cache=True, parallel=True)
def observe_threads(bounds, mult, add, ml, zf, live, clock, events, slots, incidents, actions,
                    pipeline, effects_, values, c, obs, reward, violated_out):
    for r in prange(bounds.size - 1):
        s = State(clock, events, slots, incidents, actions, pipeline, effects_)
        observe_range(live, s, values, c, obs, reward, violated_out, mult[r], add[r], ml[r],
                      zf[r], bounds[r], bounds[r + 1])


@njit(cache=True, parallel=True)
def reset_threads(bounds, todo, advance, clock, events, slots, incidents, actions, pipeline,
                  effects_, ec, c):
    for r in prange(bounds.size - 1):
        s = State(clock, events, slots, incidents, actions, pipeline, effects_)
        reset_range(todo, advance, s, ec, c, bounds[r], bounds[r + 1])
