"""Compiled per-env step of the vector env (numba).

The model's dynamics, written once: each function loops over the envs of a batch (the scalar env
is a batch of one) and runs one env's step: float64, no fast-math, so results do not depend on
the batch size or the thread split. Fault effects (:func:`healgym.sim.faults.accumulate`), ML
health (:func:`healgym.sim.model.ml_health`), drift scores and the episode draws are compiled
functions shared with the analysis tools. The state is the vector env's arrays (see
:mod:`healgym.envs.vector`); constants come packed in :class:`KernelConsts`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from healgym.sim.drift import shifted_scores
from healgym.sim.episode import fill_events, fill_rows, next_key, pick_window
from healgym.sim.faults import accumulate, capacity, factor
from healgym.sim.jit import compiled
from healgym.sim.model import ml_health
from healgym.sim.rng import normal1 as normal
from healgym.sim.rng import uniform1 as uniform

INF = np.inf
NATURAL = -1
UNRESOLVED = -2

# --------------------------------------------------------------------------- slots, incidents
@compiled(inline="always")
def write_slot(i, kind, col, stage, sev, onset, inc, end, cascade, st):
    """Append a slot (the caller checked there is room), in creation order."""
    s_n, uid = st[0], st[10]
    f = s_n[i]
    s_n[i] += 1
    uid[i] += 1
    st[9][i, f] = uid[i]
    st[1][i, f] = kind
    st[2][i, f] = col
    st[3][i, f] = stage
    st[4][i, f] = sev
    st[5][i, f] = onset
    st[8][i, f] = inc
    st[6][i, f] = end
    st[7][i, f] = cascade
    st[24][i] = True  # effects changed


@compiled(inline="always")
def add_instance(i, kind, stage, sev, onset, src, parent, end, col, carrier, st, c):
    """Append a fault instance (opening an incident unless ``parent`` >= 0); False if dropped."""
    s_n, s_kind = st[0], st[1]
    i_n, i_fault, i_stage, i_src, i_onset = st[11], st[12], st[13], st[14], st[15]
    i_detected, i_active, i_faults, i_nf, dropped, watch = (st[16], st[19], st[20], st[21],
                                                           st[22], st[23])
    if s_n[i] >= s_kind.shape[1] or (parent < 0 and i_n[i] >= i_fault.shape[1]):
        dropped[i] += 1
        return False
    if parent < 0:
        inc = i_n[i]
        i_n[i] += 1
        i_fault[i, inc] = col
        i_stage[i, inc] = stage
        i_src[i, inc] = src
        i_onset[i, inc] = onset
    else:
        inc = parent
    if i_nf[i, inc] < i_faults.shape[2]:
        i_faults[i, inc, i_nf[i, inc]] = col
    i_nf[i, inc] += 1
    i_active[i, inc] += 1
    if np.isnan(i_detected[i, inc]):
        watch[i] = True
    write_slot(i, kind, col, stage, sev, onset, inc,
               onset + c.end_after[kind] if np.isnan(end) else end,
               INF if carrier else onset + c.cascade_after[kind], st)
    return True


@compiled(inline="always")
def add_side(i, kind, stage, onset, until, st):
    """Append an action's side effect (no incident)."""
    if st[0][i] >= st[1].shape[1]:
        st[22][i] += 1
        return
    write_slot(i, kind, -1, stage, 1.0, onset, -1, until, INF, st)


@compiled(inline="always")
def compact(i, rm, st):
    """Remove the slots whose bits are set in ``rm``, keeping the rest in creation order."""
    s_n = st[0]
    s_kind = st[1]
    s_fault = st[2]
    s_stage = st[3]
    s_sev = st[4]
    s_onset = st[5]
    s_end = st[6]
    s_cascade = st[7]
    s_inc = st[8]
    s_uid = st[9]
    if rm == 0:
        return
    st[24][i] = True  # effects changed
    w = 0
    for f in range(s_n[i]):
        if (rm >> f) & 1:
            continue
        if w != f:
            s_kind[i, w] = s_kind[i, f]
            s_fault[i, w] = s_fault[i, f]
            s_stage[i, w] = s_stage[i, f]
            s_sev[i, w] = s_sev[i, f]
            s_onset[i, w] = s_onset[i, f]
            s_end[i, w] = s_end[i, f]
            s_cascade[i, w] = s_cascade[i, f]
            s_inc[i, w] = s_inc[i, f]
            s_uid[i, w] = s_uid[i, f]
        w += 1
    for f in range(w, s_n[i]):
        s_end[i, f] = INF
        s_cascade[i, f] = INF
        s_sev[i, f] = 0.0
        s_inc[i, f] = -1
        s_fault[i, f] = -1
    s_n[i] = w


@compiled(inline="always")
def clear(i, f, by, t, k, st, splice, replayed_uid, fast_s, fast_bonus):
    """Clear slot ``f`` (the caller compacts); returns the fast-resolution bonus."""
    s_inc = st[8]
    s_uid = st[9]
    i_onset = st[15]
    i_detected = st[16]
    i_resolved = st[17]
    i_by = st[18]
    i_active = st[19]
    inc = s_inc[i, f]
    if inc < 0:
        return 0.0
    if by != NATURAL and s_uid[i, f] == replayed_uid[i]:
        splice[i, 1] = k
    i_active[i, inc] -= 1
    if i_active[i, inc] > 0 or not np.isnan(i_resolved[i, inc]):
        return 0.0
    i_resolved[i, inc] = t
    i_by[i, inc] = by
    if np.isnan(i_detected[i, inc]) and by != NATURAL:
        i_detected[i, inc] = t
    if t - i_onset[i, inc] <= fast_s:
        return fast_bonus
    return 0.0


# --------------------------------------------------------------------------- actions, events
@compiled(inline="always")
def complete(i, a, issued, stream, t, k, key, st, rs, c):
    """An action takes effect: it may heal the faults that were active when it was issued."""
    s_n = st[0]
    s_kind = st[1]
    s_fault = st[2]
    s_stage = st[3]
    s_onset = st[5]
    s_inc = st[8]
    replicas, version, light, splice, replayed_uid = rs[0], rs[1], rs[2], rs[3], rs[4]
    kind = c.a_kind[a]
    astage = c.a_stage[a]
    rm = 0
    bonus = 0.0
    healed_release = False
    j = 0
    for f in range(s_n[i]):
        if s_inc[i, f] < 0 or s_onset[i, f] > issued or (astage >= 0 and s_stage[i, f] != astage):
            continue
        p = c.healing[kind, s_fault[i, f]]
        u = uniform(key, k, stream + j)
        j += 1
        if u < p:
            healed_release = healed_release or c.release[s_fault[i, f]]
            bonus += clear(i, f, a, t, k, st, splice, replayed_uid, c.fast_s, c.fast_bonus)
            rm |= 1 << f
    if rm == 0:
        rs[5][i] += 1  # ineffective: it fixed nothing
    compact(i, rm, st)
    if kind == c.k_scale_up:
        replicas[i, astage] = min(replicas[i, astage] + 1, c.max_replicas)
        st[24][i] = True  # capacity changed
    elif kind == c.k_scale_down:
        replicas[i, astage] = max(replicas[i, astage] - 1, c.min_replicas)
        st[24][i] = True
    elif kind == c.k_rollback:
        version[i] -= 1
        has_old = False
        for f in range(s_n[i]):
            if s_kind[i, f] == c.side_old and s_inc[i, f] < 0:
                has_old = True
        if not healed_release and not has_old:
            add_side(i, c.side_old, c.model_stage, t, INF, st)
    elif kind == c.k_retrain:
        version[i] += 1
        drop_side(i, c.side_old, st)
    elif kind == c.k_switch_light:
        light[i] = True
        add_side(i, c.side_light, c.model_stage, t, INF, st)
    elif kind == c.k_switch_back:
        light[i] = False
        drop_side(i, c.side_light, st)
    elif kind == c.k_shed_load:
        add_side(i, c.side_shed, c.model_stage, t, t + c.shed_s, st)
    return bonus


@compiled(inline="always")
def drop_side(i, kind, st):
    s_n, s_kind, s_inc = st[0], st[1], st[8]
    rm = 0
    for f in range(s_n[i]):
        if s_kind[i, f] == kind and s_inc[i, f] < 0:
            rm |= 1 << f
    compact(i, rm, st)


@compiled(nogil=True)
def act_and_events(live, actions, mask, k, t, key, st, acts, rs, ev, c, reward, invalid_out,
                   lo, hi):
    """Phase A for each live env: start the action, advance the clock, apply due events."""
    (s_n, s_kind, s_fault, s_stage, s_sev, s_onset, s_end, s_cascade, s_inc, s_uid, uid,
     i_n, i_fault, i_stage, i_src, i_onset, i_detected, i_resolved, i_by, i_active, i_faults,
     i_nf, dropped, watch, dirty) = st
    (fl_action, fl_done, fl_issued, esc_done, esc_issued, spent, counts, last_action,
     last_action_t, invalid) = acts
    splice, replayed_uid = rs[3], rs[4]
    ev_t, ev_kind, ev_stage, ev_sev, ev_src, ev_ptr = ev
    for i in range(lo, hi):
        if not live[i]:
            continue
        a = actions[i]
        r = 0.0
        n0, e0 = s_n[i], ev_ptr[i]
        touched = False  # an action started or completed
        if mask[i, a] == 0:
            invalid[i] += 1
            invalid_out[i] = True
            r -= c.invalid_penalty
        elif a != 0:
            touched = True
            cost = c.a_cost[a]
            spent[i] += cost
            counts[i, a] += 1
            last_action[i] = a
            last_action_t[i] = t[i]
            done = t[i] + c.a_dur[a]
            if a == c.escalate:
                esc_done[i] = done
                esc_issued[i] = t[i]
            else:
                fl_action[i] = a
                fl_done[i] = done
                fl_issued[i] = t[i]
            if c.a_kind[a] == c.k_restart:
                add_side(i, c.side_restart, c.a_stage[a], t[i], done, st)
            r -= c.cost_weight * cost
        k[i] += 1
        t[i] = k[i] * c.dt
        now = t[i]
        bonus = 0.0
        # natural ends
        rm = 0
        for f in range(s_n[i]):
            if s_end[i, f] <= now:
                bonus += clear(i, f, NATURAL, now, k[i], st, splice, replayed_uid, c.fast_s,
                               c.fast_bonus)
                rm |= 1 << f
        if rm:
            compact(i, rm, st)
        if fl_done[i] <= now and fl_action[i] >= 0:
            aa, issued = fl_action[i], fl_issued[i]
            fl_action[i] = -1
            fl_done[i] = INF
            touched = True
            bonus += complete(i, aa, issued, c.heal_stream, now, k[i], key[i], st, rs, c)
        if esc_done[i] <= now:
            issued = esc_issued[i]
            esc_done[i] = INF
            touched = True
            bonus += complete(i, c.escalate, issued, c.escalate_stream, now, k[i], key[i], st,
                              rs, c)
        n_now = s_n[i]
        for f in range(n_now):
            if s_cascade[i, f] <= now:
                s_cascade[i, f] = INF
                kd = s_kind[i, f]
                child = c.cascade_child[kd]
                add_instance(i, child, s_stage[i, f], s_sev[i, f], now, c.src_cascade,
                             s_inc[i, f], np.nan, c.spec_fault_col[child], False, st, c)
        while ev_ptr[i] < ev_t.shape[1] and ev_t[i, ev_ptr[i]] <= now:
            p = ev_ptr[i]
            ev_ptr[i] += 1
            kd = ev_kind[i, p]
            add_instance(i, kd, ev_stage[i, p], ev_sev[i, p], now, ev_src[i, p], -1, np.nan,
                         c.spec_fault_col[kd], False, st, c)
        reward[i] = r + bonus
        if touched or s_n[i] != n0 or ev_ptr[i] != e0 or rm:
            rs[6][i] = True  # the mask and the fault count may have changed


# --------------------------------------------------------------------------- effects, observe
@compiled(nogil=True)
def effects(st, replicas, t, c, za, zb, ml_now, stable, mult, add, ml, lo, hi):
    """Fault and capacity effects of every env at its current time (:func:`accumulate`,
    :func:`factor`, :func:`ml_health`), folded into the affine map ``z = base * za + zb``. An
    env's effects are recomputed only when its faults or replicas changed (``dirty``) or a
    ramp, fade or onset makes them move (``stable``, the time until which they hold).

    ``za``, ``zb``: (N, S*M); ``mult``, ``add`` (S*M,) and ``ml`` (K,): the calling thread's
    scratch."""
    s_n, s_kind, s_stage, s_sev, s_onset = st[0], st[1], st[3], st[4], st[5]
    dirty = st[24]
    S, M = c.n_stages, c.n_metrics
    for i in range(lo, hi):
        now = t[i]
        if not dirty[i] and now < stable[i]:
            continue
        dirty[i] = False
        stable[i] = accumulate(s_kind[i], s_stage[i], s_sev[i], s_onset[i], s_n[i], now, c.hops,
                               c.t_mult, c.t_add, c.t_pmult, c.t_padd, c.t_ml, c.t_ramp,
                               c.t_dur, c.t_fade, c.t_lag, c.atten_pow, mult, add, ml)
        zai, zbi = za[i], zb[i]
        for d in range(S):
            cap = capacity(c.default_replicas, replicas[i, d])
            for m in range(M):
                j = d * M + m
                zai[j] = factor(mult[j], m, cap) * c.inv[j]
                zbi[j] = (add[j] - c.median[j]) * c.inv[j]
        ml_health(ml, ml_now[i])


@compiled(nogil=True)
def drift_checks(k, key, ml_now, c, drift, lo, hi):
    """Drift-monitor scores at check steps: the pool's healthy scores, or the shifted window
    scored by :func:`healgym.sim.drift.shifted_scores`."""
    for i in range(lo, hi):
        j = np.int64(k[i] * c.inv_drift_every + 0.5)  # k / drift_every, if it divides
        if j * c.drift_every != k[i]:
            continue
        w = np.int64(uniform(key[i], j, 3) * c.pool_size)
        shift = ml_now[i, 4]
        if shift != 0.0:
            ks, psi = shifted_scores(c.ref_sorted, c.ref_edges, c.ref_frac, c.pool_windows[w],
                                     shift)
            drift[i, 0] = ks
            drift[i, 1] = psi
        else:
            drift[i, 0] = c.healthy_ks[w]
            drift[i, 1] = c.healthy_psi[w]


@compiled(nogil=True)
def observe(live, k, k0, t, key, rows, values, za, zb, ml_now, drift, replicas, st, acts, rs,
            c, obs, reward, violated_out, downtime, total_reward, mask, n_faults, zf, lo, hi):
    """Phase B: observation, SLO, reward, detection and action mask of every env.

    ``values``: the replay table (T, S*M); ``za``, ``zb``: (N, S*M); ``zf``: the calling
    thread's (S*M,) scratch; ``obs`` comes zeroed (only the last action's one-hot entry is
    written)."""
    (s_n, s_kind, s_fault, s_stage, s_sev, s_onset, s_end, s_cascade, s_inc, s_uid, uid,
     i_n, i_fault, i_stage, i_src, i_onset, i_detected, i_resolved, i_by, i_active, i_faults,
     i_nf, dropped, watch, dirty) = st
    (fl_action, fl_done, fl_issued, esc_done, esc_issued, spent, counts, last_action,
     last_action_t, invalid) = acts
    version, light, splice, mask_dirty = rs[1], rs[2], rs[3], rs[6]
    S, M = c.n_stages, c.n_metrics
    SM = S * M
    R = rows.shape[1]
    n_act = mask.shape[1]
    nz = 6 * S
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
        if splice[i, 1] >= 0 and splice[i, 1] <= k[i] < splice[i, 2]:
            sd, frm, to, onset_k = splice[i, 0], splice[i, 1], splice[i, 2], splice[i, 3]
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
        metric_violation = (zf[c.model_stage * M + c.lat] > c.lat_limit_z
                            or zf[(S - 1) * M + c.thr] < c.thr_limit_z)
        for d in range(S):
            if zf[d * M + c.err] > c.err_limit_z[d]:
                metric_violation = True
        acc, null, schema, stale, cost_mult = (ml_now[i, 0], ml_now[i, 1], ml_now[i, 2],
                                               ml_now[i, 3], ml_now[i, 5])
        acc_est = min(max(acc + c.acc_noise_sd * normal(key[i], k[i]), 0.0), 1.0)
        rsum = 0
        for d in range(S):
            rsum += replicas[i, d]
        cost = float(rsum) * c.replica_cost * cost_mult
        cost_factor = cost / c.base_cost
        ks_v, psi_v = drift[i, 0], drift[i, 1]
        violated = (metric_violation or acc < c.slo_acc or stale > c.slo_stale
                    or null > c.slo_null or schema > c.slo_schema or cost_factor > c.slo_cost)
        for d in range(S):
            out[nz + d] = replicas[i, d] / c.max_replicas
        b = 7 * S
        out[b] = acc_est
        out[b + 1] = ks_v
        out[b + 2] = min(psi_v, 10.0)
        out[b + 3] = null
        out[b + 4] = schema
        out[b + 5] = min(stale / 3600.0, 24.0)
        out[b + 6] = min(cost_factor, 10.0)
        out[b + 7] = min((t[i] - last_action_t[i]) / 3600.0, 1.0)
        out[b + 8] = 1.0 if fl_action[i] >= 0 else 0.0
        out[b + 9] = 1.0 if light[i] else 0.0
        out[b + 10] = 1.0 if version[i] > 1 else 0.0
        out[b + 11 + last_action[i]] = 1.0
        if live[i]:
            r = reward[i]
            if violated:
                downtime[i] += c.dt
                r -= c.slo_per_s * c.dt
            if cost != c.base_cost:
                r -= c.infra_weight * (cost - c.base_cost) * c.dt / 3600.0
            reward[i] = r
            total_reward[i] += r
            violated_out[i] = violated
            # detection: an incident is open and undetected, and the monitors alarm
            # ``watch``: an incident may be open and undetected (set where incidents gain a
            # fault, cleared here when the scan finds none)
            wt = False
            if watch[i]:
                for q in range(i_n[i]):
                    if np.isnan(i_detected[i, q]) and np.isnan(i_resolved[i, q]):
                        wt = True
                        break
                watch[i] = wt
            if wt:
                alarm = violated or psi_v > 0.25 or acc_est < c.base_accuracy - 0.05
                if not alarm:
                    for j in range(SM):
                        if abs(out[j]) > c.detect_z:
                            alarm = True
                            break
                if alarm:
                    for q in range(i_n[i]):
                        if (np.isnan(i_detected[i, q]) and np.isnan(i_resolved[i, q])
                                and i_onset[i, q] <= t[i]):
                            i_detected[i, q] = t[i]
        # action mask, and the ground-truth fault count: they change only with the slots,
        # an action's start or completion (``mask_dirty``, set by phase A and resets)
        if not mask_dirty[i]:
            continue
        mask_dirty[i] = False
        free = fl_action[i] < 0
        mask[i, 0] = 1
        for d in range(S):
            mask[i, 1 + d] = 1 if free else 0
            mask[i, 1 + S + d] = 1 if free and replicas[i, d] < c.max_replicas else 0
            mask[i, 1 + 2 * S + d] = 1 if free and replicas[i, d] > c.min_replicas else 0
        bb = 1 + 3 * S
        shedding = False
        nf = 0
        for f in range(s_n[i]):
            if s_inc[i, f] >= 0:
                nf += 1
            elif s_kind[i, f] == c.side_shed:
                shedding = True
        n_faults[i] = nf
        mask[i, bb] = 1 if free and version[i] > 1 else 0
        mask[i, bb + 1] = 1 if free else 0
        mask[i, bb + 2] = 1 if free else 0
        mask[i, bb + 3] = 1 if free and not light[i] else 0
        mask[i, bb + 4] = 1 if free and light[i] else 0
        mask[i, bb + 5] = 1 if free and not shedding else 0
        mask[i, n_act - 1] = 1 if esc_done[i] == INF else 0
        if c.has_budget:
            remaining = c.budget - spent[i]
            for q in range(1, n_act):
                if c.a_cost[q] > remaining:
                    mask[i, q] = 0


# --------------------------------------------------------------------------- reset
@compiled(nogil=True)
def reset_range(todo, advance, key, rows, k0, n_plan, k, t, ev, st, acts, rs, stable, drift,
                downtime, total_reward, ec, c, lo, hi):
    """Start a new episode in every env ``i`` of [lo, hi) with ``todo[i]``: its key (the next
    one if ``advance``), the set-up draws of :mod:`healgym.sim.episode`, a clean state, and the
    replayed incident if the model replays them."""
    (s_n, s_kind, s_fault, s_stage, s_sev, s_onset, s_end, s_cascade, s_inc, s_uid, uid,
     i_n, i_fault, i_stage, i_src, i_onset, i_detected, i_resolved, i_by, i_active, i_faults,
     i_nf, dropped, watch, dirty) = st
    (fl_action, fl_done, fl_issued, esc_done, esc_issued, spent, counts, last_action,
     last_action_t, invalid) = acts
    replicas, version, light, splice, replayed_uid, ineffective, mask_dirty = rs
    ev_t, ev_kind, ev_stage, ev_sev, ev_src, ev_ptr = ev
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
        k0[i] = 0
        n_plan[i] = c.episode_steps
        n, lost = fill_events(kk, 0, ec.random_chaos, ec.rates, ec.choices, ec.n_choices,
                              ec.sev_lo, ec.sev_hi, ec.lo_s, ec.horizon_s, ec.sc_t, ec.sc_kind,
                              ec.sc_stage, ec.sc_sev, ec.rank, ev_t[i, :n_ev], ev_kind[i, :n_ev],
                              ev_stage[i, :n_ev], ev_sev[i, :n_ev], ev_src[i, :n_ev])
        for j in range(n, ev_t.shape[1]):
            ev_t[i, j] = INF
        ev_ptr[i] = 0
        k[i] = 0
        t[i] = 0.0
        for f in range(s_kind.shape[1]):
            s_end[i, f] = INF
            s_cascade[i, f] = INF
            s_inc[i, f] = -1
            s_fault[i, f] = -1
            s_sev[i, f] = 0.0
        s_n[i] = 0
        uid[i] = 0
        for q in range(i_n[i]):
            i_detected[i, q] = np.nan
            i_resolved[i, q] = np.nan
            i_by[i, q] = UNRESOLVED
            i_active[i, q] = 0
            i_nf[i, q] = 0
            for x in range(i_faults.shape[2]):
                i_faults[i, q, x] = -1
        i_n[i] = 0
        dropped[i] = lost
        fl_action[i] = -1
        fl_done[i] = INF
        fl_issued[i] = 0.0
        esc_done[i] = INF
        esc_issued[i] = 0.0
        for d in range(replicas.shape[1]):
            replicas[i, d] = c.default_replicas
        version[i] = 2
        light[i] = False
        last_action[i] = 0
        last_action_t[i] = 0.0
        spent[i] = 0.0
        downtime[i] = 0.0
        total_reward[i] = 0.0
        for a in range(counts.shape[1]):
            counts[i, a] = 0
        invalid[i] = 0
        ineffective[i] = 0
        watch[i] = False
        drift[i, 0] = 0.0
        drift[i, 1] = 0.0
        dirty[i] = True
        stable[i] = -INF
        for x in range(4):
            splice[i, x] = -1
        replayed_uid[i] = -1
        mask_dirty[i] = True
        if ec.replay_on:  # the labelled window's fault: no synthetic effect, healed by its type
            onset = (ec.win[w, 1] - ec.win[w, 0]) * ec.replay_step
            end = (ec.win[w, 2] - ec.win[w, 0]) * ec.replay_step
            if add_instance(i, c.carrier_kind, ec.win[w, 3], 0.0, onset, c.src_replay, -1, end,
                            ec.win[w, 4], True, st, c):
                splice[i, 0] = ec.win[w, 3]
                splice[i, 2] = np.int64(np.rint(end / c.dt))
                splice[i, 3] = np.int64(np.rint(onset / c.dt))
                replayed_uid[i] = uid[i]


# --------------------------------------------------------------------------- one call per step
@compiled(nogil=True)
def observe_range(live, k, k0, t, key, rows, values, st, acts, rs, c, za, zb, ml_now, stable,
                  drift, obs, reward, violated_out, downtime, total_reward, mask, n_faults,
                  mult, add, ml, zf, lo, hi):
    """Effects, drift checks and phase B for envs [lo, hi): one compiled call (argument
    unboxing costs a call as much as a thousand envs' arithmetic)."""
    replicas = rs[0]
    effects(st, replicas, t, c, za, zb, ml_now, stable, mult, add, ml, lo, hi)
    drift_checks(k, key, ml_now, c, drift, lo, hi)
    observe(live, k, k0, t, key, rows, values, za, zb, ml_now, drift, replicas, st, acts, rs, c,
            obs, reward, violated_out, downtime, total_reward, mask, n_faults, zf, lo, hi)


@compiled(nogil=True)
def step_range(restart, live, actions, invalid_out, ev, n_plan, ec, k, k0, t, key, rows, values, st,
               acts, rs, c, za, zb, ml_now, stable, drift, obs, reward, violated_out, downtime,
               total_reward, mask, n_faults, mult, add, ml, zf, lo, hi):
    """A whole step for envs [lo, hi): the autoreset of the envs that are not ``live`` (their
    episode ended at the previous step), phase A, then :func:`observe_range`."""
    reset_range(restart, True, key, rows, k0, n_plan, k, t, ev, st, acts, rs, stable, drift,
                downtime, total_reward, ec, c, lo, hi)
    act_and_events(live, actions, mask, k, t, key, st, acts, rs, ev, c, reward, invalid_out,
                   lo, hi)
    observe_range(live, k, k0, t, key, rows, values, st, acts, rs, c, za, zb, ml_now, stable,
                  drift, obs, reward, violated_out, downtime, total_reward, mask, n_faults,
                  mult, add, ml, zf, lo, hi)


# --------------------------------------------------------------------------- the threads
# One range per thread, scheduled by numba's threading layer (OpenMP where the system has
# libgomp: a hand-off costs microseconds, a ThreadPoolExecutor's tens). Each range has its
# own scratch rows, and envs are independent: the split never changes a result.
@njit(cache=True, parallel=True)
def step_threads(bounds, mult, add, ml, zf, restart, live, actions, invalid_out, ev, n_plan, ec,
                 k, k0, t, key, rows, values, st, acts, rs, c, za, zb, ml_now, stable, drift,
                 obs, reward, violated_out, downtime, total_reward, mask, n_faults):
    for r in prange(bounds.size - 1):
        step_range(restart, live, actions, invalid_out, ev, n_plan, ec, k, k0, t, key, rows,
                   values, st, acts, rs, c, za, zb, ml_now, stable, drift, obs, reward,
                   violated_out, downtime, total_reward, mask, n_faults, mult[r], add[r], ml[r],
                   zf[r], bounds[r], bounds[r + 1])


@njit(cache=True, parallel=True)
def observe_threads(bounds, mult, add, ml, zf, live, k, k0, t, key, rows, values, st, acts, rs,
                    c, za, zb, ml_now, stable, drift, obs, reward, violated_out, downtime,
                    total_reward, mask, n_faults):
    for r in prange(bounds.size - 1):
        observe_range(live, k, k0, t, key, rows, values, st, acts, rs, c, za, zb, ml_now,
                      stable, drift, obs, reward, violated_out, downtime, total_reward, mask,
                      n_faults, mult[r], add[r], ml[r], zf[r], bounds[r], bounds[r + 1])


@njit(cache=True, parallel=True)
def reset_threads(bounds, todo, advance, key, rows, k0, n_plan, k, t, ev, st, acts, rs, stable,
                  drift, downtime, total_reward, ec, c):
    for r in prange(bounds.size - 1):
        reset_range(todo, advance, key, rows, k0, n_plan, k, t, ev, st, acts, rs, stable,
                    drift, downtime, total_reward, ec, c, bounds[r], bounds[r + 1])
