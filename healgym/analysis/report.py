"""``healgym report``: one self-contained HTML file (plots inlined as PNG) and the same figures
as CSV, from a decision log.

    healgym report --log decisions.db --out report.html [--since 2026-11-01] [--until ...]
                   [--policy-version 3] [--target serve] [--top 5]

The CSVs go to ``<out stem>_data/`` beside the HTML (``report_data/`` for ``report.html``);
``summary.json`` there holds the headline numbers.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healgym.analysis import tables
from healgym.analysis.log import Filters, LogFrames, iso, load_log

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}th{background:#f4f4f4}
.kpi{display:inline-block;margin:0 1.5em .8em 0}.kpi b{display:block;font-size:1.4em}
.note{color:#666;font-size:.9em}.problem{color:#a33}img{max-width:100%}
"""


@dataclass
class ReportResult:
    html: Path
    data_dir: Path
    summary: dict[str, Any]
    problems: list[str]


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plots(frames: LogFrames, figs: dict[str, pd.DataFrame]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    a = figs["actions_over_time"]
    if len(a):
        fig, ax = plt.subplots(figsize=(10, 3.2))
        # stacked bars drawn by position (pandas' bar plot of a tz-aware datetime index drew
        # an empty axis with every tick label at 0)
        x = np.arange(len(a))
        bottom = np.zeros(len(a))
        for col in [c for c in a.columns if c != "period"]:
            h = a[col].to_numpy(dtype=float)
            ax.bar(x, h, bottom=bottom, width=0.9, label=str(col))
            bottom += h
        step = max(len(a) // 20, 1)
        ax.set_xticks(x[::step], [pd.Timestamp(t).strftime("%m-%d %H:%M")
                                  for t in a["period"][::step]],
                      rotation=45, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(a) - 0.4)
        ax.set_xlabel("period (UTC)")
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("executed actions")
        ax.legend(fontsize=7, ncol=4)
        out["actions_over_time"] = _png(fig)
    inc = frames.incidents
    if len(inc):
        fig, ax = plt.subplots(figsize=(10, 3.2))
        res = inc[inc["resolved"]]
        ax.scatter(res["start_time"], res["ttr_s"].astype(float), s=14, label="incident TTR")
        unres = inc[~inc["resolved"]]
        if len(unres):
            ax.scatter(unres["start_time"], [max(res["ttr_s"].max() if len(res) else 1, 1)]
                       * len(unres), marker="x", color="red", label="unresolved")
        t = figs["mttr_trend"]
        if len(t):
            ax.plot(pd.to_datetime(t["period"]), t["ttr_median_s"], "k_", markersize=14,
                    label="median per period")
            if t["overrides"].sum():
                ax2 = ax.twinx()
                ax2.plot(pd.to_datetime(t["period"]), t["override_rate"], color="tab:orange",
                         marker=".", label="override rate")
                ax2.set_ylabel("override rate", color="tab:orange")
                ax2.set_ylim(bottom=0)
        ax.set_ylabel("time to recover, s")
        # plain seconds: nearly equal TTRs made matplotlib label the axis "1e-6+2.0001"
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.legend(fontsize=7, loc="upper left")
        fig.autofmt_xdate()
        out["mttr_trend"] = _png(fig)
    o = figs["overrides_by_action"]
    if len(o) and o["reviewed"].sum():
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.bar(o["proposed_action"], o["override_rate"])
        ax.set_ylabel("override rate")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        out["overrides_by_action"] = _png(fig)
    op = figs["overrides_by_operator"]
    if len(op):
        fig, ax = plt.subplots(figsize=(6, 2.8))
        op.set_index("operator")[["approved", "rejected", "overridden"]].plot(
            kind="barh", stacked=True, ax=ax)
        ax.set_xlabel("verdicts")
        out["overrides_by_operator"] = _png(fig)
    m = figs["agreement"]
    if len(m):
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * m.shape[1], 1.0 + 0.45 * m.shape[0]))
        ax.imshow(m.to_numpy(), cmap="Blues")
        ax.set_xticks(range(m.shape[1]), m.columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(m.shape[0]), m.index, fontsize=7)
        for (i, j), v in pd.DataFrame(m.to_numpy()).stack().items():
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        ax.set_xlabel("human (final action)")
        ax.set_ylabel("policy (proposed)")
        out["agreement"] = _png(fig)
    g = figs["guard_blocks"]
    if len(g):
        fig, ax = plt.subplots(figsize=(6, 2.8))
        g.groupby("check")["blocked"].sum().sort_values().plot(kind="barh", ax=ax)
        ax.set_xlabel("blocked proposals")
        out["guard_blocks"] = _png(fig)
    return out


def _table(df: pd.DataFrame, max_rows: int = 50) -> str:
    if df.empty:
        return '<p class="note">none</p>'
    more = f'<p class="note">{len(df) - max_rows} more rows in the CSV</p>' \
        if len(df) > max_rows else ""
    return df.head(max_rows).to_html(index=False, na_rep="", float_format=lambda x: f"{x:.3g}",
                                     escape=True, border=0) + more


def build(frames: LogFrames, top: int = 5) -> dict[str, pd.DataFrame]:
    slow, trail = tables.slowest_incidents(frames, top)
    return {
        "actions_over_time": tables.actions_over_time(frames),
        "mttr_trend": tables.mttr_trend(frames),
        "incidents": tables.incidents_table(frames),
        "overrides_by_action": tables.overrides_by_action(frames),
        "overrides_by_operator": tables.overrides_by_operator(frames),
        "agreement": tables.agreement(frames),
        "override_outcomes": tables.override_outcomes(frames),
        "guard_blocks": tables.guard_blocks(frames),
        "diagnoses": tables.diagnoses(frames),
        "slowest_incidents": slow,
        "slowest_incident_trails": trail,
        "actions": frames.actions.assign(time=frames.actions["time"].map(
            lambda t: t.isoformat())),
        "decisions": frames.decisions.drop(columns=["observation"]).assign(
            time=frames.decisions["time"].map(lambda t: t.isoformat())),
    }


def write_report(log: str, out: str | Path, filters: Filters | None = None, top: int = 5
                 ) -> ReportResult:
    frames = load_log(log, filters)
    figs = build(frames, top)
    summ = tables.summary(frames)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = out.with_name(f"{out.stem}_data")
    data.mkdir(parents=True, exist_ok=True)
    for name, df in figs.items():
        df.to_csv(data / f"{name}.csv", index=name == "agreement")
    (data / "summary.json").write_text(json.dumps(
        {**summ, "log": frames.source, "filters": frames.filters.describe(),
         "problems": frames.problems}, indent=2, default=str) + "\n")
    out.write_text(render_html(frames, figs, summ, data))
    return ReportResult(out, data, summ, frames.problems)


def _kpis(s: dict[str, Any]) -> str:
    def f(v: Any, unit: str = "", pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.1f} %" if pct else f"{v:.0f}{unit}" if isinstance(v, float) else \
            f"{v}{unit}"

    items = [("decisions", f(s["decisions"])), ("executed actions", f(s["executed_actions"])),
             ("incidents", f"{s['resolved']} / {s['incidents']} resolved"),
             ("median TTR", f(s["ttr_median_s"], " s")), ("p95 TTR", f(s["ttr_p95_s"], " s")),
             ("overrides", f(s["overrides"])), ("override rate", f(s["override_rate"],
                                                                      pct=True)),
             ("policy-human agreement", f(s["agreement_rate"], pct=True)),
             ("guardrail blocks", f(s["blocked"])),
             ("actuator failures", f(s["actuator_failures"])),
             ("interrupted actions", f(s.get("interrupted_actions", 0)))]
    return "".join(f'<span class="kpi">{html.escape(k)}<b>{html.escape(v)}</b></span>'
                   for k, v in items)


def render_html(frames: LogFrames, figs: dict[str, pd.DataFrame], s: dict[str, Any],
                data: Path) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>healgym decision-log "
             f"report</title><style>{CSS}</style></head><body>",
             "<h1>Decision-log report</h1>",
             f"<p>Log <code>{e(frames.source)}</code>; {e(s['from'])} to {e(s['to'])} UTC; "
             f"filters: {e(frames.filters.describe())}; policies: "
             f"{e(', '.join(s['policies']) or '-')}. Figures as CSV in <code>{e(data.name)}/"
             "</code>.</p>"]
    if frames.problems:
        items = "".join(f"<li>{e(p)}</li>" for p in frames.problems[:50])
        parts.append(f"<h2 class='problem'>Problems reading the log ({len(frames.problems)})"
                     f"</h2><p class='note'>These rows were read as far as possible; everything "
                     f"else is in the report.</p><ul class='problem'>{items}</ul>")
    if not len(frames.decisions):
        parts.append("<p><b>No decisions in this log" + (" with these filters"
                                                         if frames.filters.describe() != "none"
                                                         else "") + ".</b> Nothing to report: "
                     "check the path (decision_log: in the serve config) and the filters.</p>")
        return "".join(parts) + "</body></html>"
    plots = _plots(frames, figs)
    parts.append(f"<div>{_kpis(s)}</div>")
    parts.append("<h2>Actions over time</h2>" + plots.get("actions_over_time",
                                                          "<p class='note'>no actions</p>"))
    parts.append("<h2>Incidents and time to recover: is it getting better?</h2>"
                 "<p class='note'>An incident runs from the first observation that violates the "
                 "SLO to the first that does not; the orange line is the share of the policy's "
                 "proposals that humans overrode, per period.</p>"
                 + plots.get("mttr_trend", "") + _table(figs["mttr_trend"]))
    ov = s.get("ttr_median_overridden_s"), s.get("ttr_median_not_overridden_s")
    parts.append("<h2>Humans and the policy</h2>"
                 f"<p>Median TTR of resolved incidents with an override: "
                 f"{'-' if ov[0] is None else f'{ov[0]:.0f} s'}; without: "
                 f"{'-' if ov[1] is None else f'{ov[1]:.0f} s'} (incidents differ: compare "
                 "like with like with <code>healgym replay</code>).</p>"
                 "<h3>Override rate per proposed action</h3>"
                 + plots.get("overrides_by_action", "") + _table(figs["overrides_by_action"])
                 + "<h3>Per operator</h3>" + plots.get("overrides_by_operator", "")
                 + _table(figs["overrides_by_operator"])
                 + "<h3>Agreement matrix (reviewed decisions)</h3>" + plots.get("agreement", "")
                 + (figs["agreement"].to_html(border=0) if len(figs["agreement"])
                    else "<p class='note'>no reviewed decisions</p>")
                 + "<h3>Overrides and what followed</h3>" + _table(figs["override_outcomes"]))
    parts.append("<h2>Guardrail blocks</h2>" + plots.get("guard_blocks", "")
                 + _table(figs["guard_blocks"]))
    if len(figs["diagnoses"]):
        parts.append("<h2>Diagnoses: what the router thought, and whether the fix matched</h2>"
                     "<p class='note'>Decisions of policies that diagnose (router + "
                     "specialists), per diagnosis: the specialist that acted, hand-overs "
                     "between specialists, executed actions, how many of them are ones that "
                     "heal the diagnosed fault (the env's healing matrix), how many were "
                     "verified to have healed, and human overrides.</p>"
                     + _table(figs["diagnoses"]))
    parts.append("<h2>Slowest incidents</h2>" + _table(figs["slowest_incidents"]))
    trail = figs["slowest_incident_trails"]
    for iid, g in (trail.groupby("incident_id", sort=False) if len(trail) else []):
        parts.append(f"<h3>Incident {e(str(iid))[:8]}: decision trail</h3>"
                     + _table(g.drop(columns=["incident_id"]), max_rows=200))
    now = iso(pd.Timestamp.now("UTC").timestamp())
    parts.append(f"<p class='note'>Generated by healgym report at {now} UTC.</p></body></html>")
    return "".join(parts)
