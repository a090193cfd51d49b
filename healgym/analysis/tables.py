"""The report's figures as tables: every plot in ``healgym report`` is drawn from one of these
DataFrames, and the same DataFrames are written as CSV.

Definitions (docs/analysis.md has the long form):

- an *executed* action is one an actuator was asked to carry out (``act_started``; an override
  of an action already taken is a second execution on the same decision);
- a *proposal* is a logged policy decision that reached the guardrails (status ``proposed`` or
  ``shadow``), noop included: an operator who acts where the policy waited overrides a noop;
- a *reviewed* decision has a human verdict (approve, reject, override); the *final action* is
  what the humans let stand (the proposal, the override's action, or noop after a rejection);
- an *incident* runs from the first observation violating the SLO to the first that does not;
  its time to recover (TTR) is that span; one that escalated past ``verify_deadline_s`` and
  never recovered inside the log is unresolved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from healgym.analysis.log import LogFrames, iso

FREQS = (("1min", 60), ("5min", 300), ("15min", 900), ("1h", 3600), ("6h", 21600),
         ("1D", 86400), ("7D", 604800))


def bucket_freq(span_s: float, max_buckets: int = 40) -> str:
    """The smallest of the usual periods that cuts ``span_s`` into at most ``max_buckets``."""
    for name, size in FREQS:
        if span_s / size <= max_buckets:
            return name
    return FREQS[-1][0]


def freq_of(frames: LogFrames) -> str:
    t = frames.decisions["created_at"]
    return bucket_freq(float(t.max() - t.min()) if len(t) else 0.0)


def _bucket(times: pd.Series, freq: str) -> pd.Series:
    return times.dt.floor(freq)


def actions_over_time(frames: LogFrames, freq: str | None = None) -> pd.DataFrame:
    """Actuator executions per period (rows: period start, columns: actions)."""
    d, acted = frames.decisions, frames.actions
    if acted.empty:
        return pd.DataFrame(columns=["period"])
    freq = freq or freq_of(frames)
    out = acted.groupby([_bucket(acted["time"], freq), "action"]).size() \
        .unstack(fill_value=0)
    span = _bucket(pd.concat([d["time"], acted["time"]]), freq)  # every period, quiet ones 0
    out = out.reindex(pd.date_range(span.min(), span.max(), freq=freq), fill_value=0)
    out.index.name = "period"
    out.columns.name = None
    return out.reset_index()


def mttr_trend(frames: LogFrames, freq: str | None = None) -> pd.DataFrame:
    """Is it getting better? Per period: incidents started, resolved, unresolved, median and
    mean TTR, and the humans' disagreement: proposals, overrides and the override rate."""
    inc, p = frames.incidents, proposals(frames)
    cols = ["period", "incidents", "resolved", "unresolved", "ttr_median_s", "ttr_mean_s",
            "proposals", "overrides", "override_rate"]
    if inc.empty and p.empty:
        return pd.DataFrame(columns=cols)
    freq = freq or freq_of(frames)
    by_inc = dict(list(inc.groupby(_bucket(inc["start_time"], freq)))) if len(inc) else {}
    by_p = dict(list(p.groupby(_bucket(p["time"], freq)))) if len(p) else {}
    rows = []
    for period in sorted(set(by_inc) | set(by_p)):
        g = by_inc.get(period, inc.iloc[0:0])
        q = by_p.get(period, p.iloc[0:0])
        ttr = g.loc[g["resolved"], "ttr_s"].astype(float)
        n_over = int((q["human_verdict"] == "override").sum())
        rows.append({"period": period, "incidents": len(g), "resolved": int(g["resolved"].sum()),
                     "unresolved": int((~g["resolved"]).sum()),
                     "ttr_median_s": float(ttr.median()) if len(ttr) else np.nan,
                     "ttr_mean_s": float(ttr.mean()) if len(ttr) else np.nan,
                     "proposals": len(q), "overrides": n_over,
                     "override_rate": n_over / len(q) if len(q) else np.nan})
    return pd.DataFrame(rows, columns=cols)


def proposals(frames: LogFrames) -> pd.DataFrame:
    d = frames.decisions
    return d[d["status"].isin(["proposed", "shadow"]) & d["proposed_action"].notna()
             & (d["policy"] != "adapter")]


def _verdicts(g: Any) -> dict[str, pd.Series]:
    """Approvals, rejections and overrides per group of decisions."""
    return {column: g["human_verdict"].apply(lambda s, v=verdict: int((s == v).sum()))
            for verdict, column in (("approve", "approved"), ("reject", "rejected"),
                                    ("override", "overridden"))}


def overrides_by_action(frames: LogFrames) -> pd.DataFrame:
    """Per proposed action: proposals, human verdicts and the override rate (overrides /
    proposals)."""
    p = proposals(frames)
    cols = ["proposed_action", "proposals", "reviewed", "approved", "rejected", "overridden",
            "override_rate"]
    if p.empty:
        return pd.DataFrame(columns=cols)
    g = p.groupby("proposed_action")
    out = pd.DataFrame({
        "proposals": g.size(), "reviewed": g["human_verdict"].count(), **_verdicts(g)})
    out["override_rate"] = out["overridden"] / out["proposals"]
    return out.reset_index().sort_values(["overridden", "proposals"], ascending=False,
                                         ignore_index=True)[cols]


def overrides_by_operator(frames: LogFrames) -> pd.DataFrame:
    """Per operator: verdicts, the share of them that were overrides, and the median time from
    the decision to the human's answer."""
    d = frames.decisions
    h = d[d["human_verdict"].notna()]
    cols = ["operator", "verdicts", "approved", "rejected", "overridden", "override_share",
            "median_response_s"]
    if h.empty:
        return pd.DataFrame(columns=cols)
    g = h.groupby("operator")
    out = pd.DataFrame({
        "verdicts": g.size(), **_verdicts(g),
        "median_response_s": g.apply(lambda x: float((x["human_at"].astype(float)
                                                      - x["created_at"]).median()),
                                     include_groups=False)})
    out["override_share"] = out["overridden"] / out["verdicts"]
    return out.reset_index().sort_values("verdicts", ascending=False, ignore_index=True)[cols]


def agreement(frames: LogFrames) -> pd.DataFrame:
    """Reviewed decisions: the policy's proposal (rows) against the humans' final action
    (columns); the diagonal is agreement."""
    p = proposals(frames)
    r = p[p["human_verdict"].notna()]
    if r.empty:
        return pd.DataFrame()
    m = pd.crosstab(r["proposed_action"], r["final_action"])
    m.index.name, m.columns.name = "policy", "human"
    return m


def agreement_rate(frames: LogFrames) -> float:
    p = proposals(frames)
    r = p[p["human_verdict"].notna()]
    return float((r["proposed_action"] == r["final_action"]).mean()) if len(r) else np.nan


def guard_blocks(frames: LogFrames) -> pd.DataFrame:
    """Blocked proposals per guardrail check and action."""
    d = frames.decisions
    b = d[d["blocked"] & (d["blocked_checks"] != "")]
    cols = ["check", "proposed_action", "blocked"]
    if b.empty:
        return pd.DataFrame(columns=cols)
    e = b.assign(check=b["blocked_checks"].str.split(",")).explode("check")
    return e.groupby(["check", "proposed_action"]).size().rename("blocked").reset_index() \
        .sort_values("blocked", ascending=False, ignore_index=True)


def incidents_table(frames: LogFrames) -> pd.DataFrame:
    inc = frames.incidents.drop(columns=["trail"])
    return inc.assign(start_time=inc["start_time"].map(lambda t: t.isoformat()))


def slowest_incidents(frames: LogFrames, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` slowest incidents (unresolved first, by how long they were open in the log),
    and the full decision trail of each."""
    inc = frames.incidents
    if inc.empty:
        return inc.drop(columns=["trail"]), pd.DataFrame()
    end = float(frames.decisions["created_at"].max()) if len(frames.decisions) else 0.0
    open_for = np.where(inc["resolved"], inc["ttr_s"].astype(float), end - inc["start"])
    order = inc.assign(open_s=open_for).sort_values(["resolved", "open_s"],
                                                    ascending=[True, False])
    top = order.head(n)
    d = frames.decisions.set_index("id")
    trail_rows = []
    for _, row in top.iterrows():
        for did in row["trail"]:
            if did not in d.index:
                continue
            x = d.loc[did]
            trail_rows.append({
                "incident_id": row["incident_id"], "decision_id": did,
                "time": iso(float(x["created_at"])),
                "t_plus_s": float(x["created_at"]) - float(row["start"]),
                "proposed": x["proposed_action"], "blocked_by": x["blocked_checks"] or None,
                "human": (f"{x['human_verdict']} by {x['operator']}"
                          + (f" -> {x['human_action']}" if x["human_action"] else "")
                          if x["human_verdict"] else None),
                "human_reason": x["human_reason"], "executed": x["executed_action"],
                "actuator_ok": x["actuator_ok"], "state": x["state"]})
    return top.drop(columns=["trail"]), pd.DataFrame(trail_rows)


def override_outcomes(frames: LogFrames) -> pd.DataFrame:
    """Who was right: every override, with what happened to its incident afterwards (resolved,
    seconds from the override to recovery)."""
    d = frames.decisions
    o = d[d["human_verdict"] == "override"]
    cols = ["decision_id", "time", "operator", "policy_proposed", "human_action", "reason",
            "incident_id", "incident_resolved", "recovered_after_s"]
    if o.empty:
        return pd.DataFrame(columns=cols)
    inc = frames.incidents.set_index("incident_id") if len(frames.incidents) else None
    rows = []
    for _, x in o.iterrows():
        i = x["incident_id"]
        known = inc is not None and isinstance(i, str) and i in inc.index
        resolved = bool(inc.loc[i, "resolved"]) if inc is not None and known else None
        end = inc.loc[i, "end"] if inc is not None and known else None
        at = float(x["human_at"]) if x["human_at"] is not None else float(x["created_at"])
        rows.append({"decision_id": x["id"], "time": iso(float(x["created_at"])),
                     "operator": x["operator"], "policy_proposed": x["proposed_action"],
                     "human_action": x["human_action"], "reason": x["human_reason"],
                     "incident_id": i if known else None, "incident_resolved": resolved,
                     "recovered_after_s": (float(end) - at) if resolved and end is not None
                     else None})
    return pd.DataFrame(rows, columns=cols)


def summary(frames: LogFrames) -> dict[str, Any]:
    d, inc = frames.decisions, frames.incidents
    p = proposals(frames)
    ttr = inc.loc[inc["resolved"], "ttr_s"].astype(float) if len(inc) else pd.Series([])
    with_o = inc[inc["overridden"] & inc["resolved"]]["ttr_s"].astype(float) if len(inc) \
        else pd.Series([])
    without = inc[~inc["overridden"] & inc["resolved"]]["ttr_s"].astype(float) if len(inc) \
        else pd.Series([])

    def med(s: pd.Series) -> float | None:
        return float(s.median()) if len(s) else None

    return {
        "decisions": len(d), "from": iso(float(d["created_at"].min())) if len(d) else "-",
        "to": iso(float(d["created_at"].max())) if len(d) else "-",
        "policies": sorted({f"{a} {b}".strip() for a, b in zip(d["policy"], d["policy_version"],
                                                                strict=True)
                            if a != "adapter"}),
        "skipped": int((d["status"] == "skipped").sum()),
        "executed_actions": len(frames.actions),
        "actuator_failures": int((frames.actions["status"] == "failed").sum()),
        "interrupted_actions": int((frames.actions["status"] == "interrupted").sum()),
        "proposals": len(p),
        "reviewed": int(p["human_verdict"].notna().sum()),
        "overrides": int((d["human_verdict"] == "override").sum()),
        "override_rate": float((p["human_verdict"] == "override").mean()) if len(p) else None,
        "agreement_rate": None if np.isnan(r := agreement_rate(frames)) else r,
        "blocked": int(d["blocked"].sum()),
        "incidents": len(inc), "resolved": int(inc["resolved"].sum()) if len(inc) else 0,
        "ttr_median_s": med(ttr), "ttr_p95_s": float(ttr.quantile(0.95)) if len(ttr) else None,
        "ttr_median_overridden_s": med(with_o), "ttr_median_not_overridden_s": med(without),
        "problems": len(frames.problems),
    }


def diagnoses(frames: LogFrames) -> pd.DataFrame:
    """For policies that diagnose: per diagnosis the router gave, how often, how sure, which
    specialist acted, the hand-overs, the actions executed, whether each executed action is
    one that heals the diagnosed fault (the healing matrix: ``fix_matches``), how many were
    verified to have healed, and how often humans overrode. Empty for other policies."""
    from healgym.sim.actions import DEFAULT_HEALING

    d = frames.decisions
    d = d[d["diagnosis"].notna()] if "diagnosis" in d else d.iloc[0:0]
    cols = ["diagnosis", "family", "decisions", "median_score", "specialists", "handovers",
            "executed", "fix_matches", "verified", "not_verified", "overridden"]
    if d.empty:
        return pd.DataFrame(columns=cols)

    def kind(action: Any) -> str | None:
        if not isinstance(action, str) or action == "noop":
            return None
        for k in ("restart", "scale_up", "scale_down"):
            if action.startswith(k + "_"):
                return k
        return action

    rows = []
    for diag, g in d.groupby("diagnosis", sort=False):
        fault = str(diag).split("@", 1)[0]
        heals = DEFAULT_HEALING.get(fault, {})
        ex = g["executed_action"].map(kind).dropna()
        rows.append({
            "diagnosis": diag, "family": ", ".join(sorted(g["family"].dropna().unique())),
            "decisions": len(g), "median_score": float(g["diagnosis_score"].median()),
            "specialists": ", ".join(sorted(g["specialist"].dropna().astype(str).unique()))
            or "-", "handovers": int(g["handover"].fillna(False).astype(bool).sum()),
            "executed": len(ex), "fix_matches": int(ex.isin(list(heals)).sum()),
            "verified": int((g["verified"] == True).sum()),  # noqa: E712 (None: not checked)
            "not_verified": int((g["verified"] == False).sum()),  # noqa: E712
            "overridden": int((g["human_verdict"] == "override").sum())})
    return pd.DataFrame(rows, columns=cols).sort_values("decisions", ascending=False)
