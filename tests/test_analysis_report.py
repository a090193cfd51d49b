"""healgym report: renders on real logs, on empty and damaged ones, and its figures match counts
taken straight from the log's tables."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from agents.runbook import RunbookAgent
from healgym.analysis.log import Filters, LogError, load_log
from healgym.analysis.report import write_report
from healgym.cli import main
from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.serving.decision_log import DecisionLog
from healgym.serving.sim import OracleOperator, sim_conf, simulate_serving

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_790_000_000.0


@pytest.fixture(scope="module")
def simlog(tmp_path_factory) -> Path:
    """Three simulated episodes of the classic runbook (and an eager rule) behind the adapter,
    an oracle operator overriding it, a cooldown that blocks some proposals; two policy versions."""
    path = tmp_path_factory.mktemp("log") / "decisions.db"
    env = PipelineHealEnv(episode_steps=240)
    log = DecisionLog(f"sqlite:///{path}")
    op = OracleOperator(env, name="olivia")
    # the classic rules, after an eager one with no cooldown of its own: the adapter's
    # cooldown then has proposals to block
    classic = yaml.safe_load((ROOT / "configs/runbooks/classic.yaml").read_text())
    eager = {**classic, "cooldown_s": 0, "rules": [
        # a restart under a surge heals nothing (docs/environment.md 4b): the surge stays,
        # and this rule asks again inside the adapter's cooldown
        {"name": "slow-serve", "signal": "serve.latency_p95_ms_ratio", "op": ">",
         "threshold": 1.5, "action": "restart_serve"},
        {"name": "hot-serve", "signal": "serve.cpu_pct_ratio", "op": ">", "threshold": 1.3,
         "action": "scale_up_serve"}, *classic["rules"]]}
    for i, sc in enumerate([None, "bad_deploy_then_surge.yaml", "leak_cascade.yaml"]):
        conf = sim_conf(env.model, guard={"cooldown_s": 600.0, "rate_limit": 2})
        simulate_serving(env, RunbookAgent(env, eager), log,
                         seed=i, options={"scenario": str(ROOT / "configs/scenarios" / sc)}
                         if sc else None, operator=op, conf=conf, start=T0 + i * 3600,
                         policy_version=f"v{1 + i // 2}")
    return path


def raw(path: Path) -> tuple[list[dict], list[dict]]:
    c = sqlite3.connect(path)
    c.row_factory = sqlite3.Row
    d = [dict(r) for r in c.execute("select * from decisions")]
    e = [dict(r) for r in c.execute("select * from events order by seq")]
    c.close()
    return d, e


def test_report_figures_match_direct_counts(simlog, tmp_path):
    r = write_report(str(simlog), tmp_path / "report.html")
    html = r.html.read_text()
    assert html.startswith("<!doctype html>") and "data:image/png;base64," in html
    assert "Slowest incidents" in html and "Agreement matrix" in html
    dec, ev = raw(simlog)
    data = r.data_dir
    # actions over time: every actuator execution, by action
    started = Counter(json.loads(e["payload"])["action"] for e in ev if e["kind"] == "act_started")
    a = pd.read_csv(data / "actions_over_time.csv")
    assert {k: int(a[k].sum()) for k in a.columns if k != "period"} == dict(started)
    assert r.summary["executed_actions"] == sum(started.values()) > 0
    # overrides, per operator and per action
    human = [(e["decision_id"], json.loads(e["payload"])) for e in ev if e["kind"] == "human"]
    overrides = [h for h in human if h[1]["verdict"] == "override"]
    assert r.summary["overrides"] == len(overrides) > 0
    ops = pd.read_csv(data / "overrides_by_operator.csv")
    assert ops.set_index("operator").loc["olivia", "overridden"] == len(overrides)
    proposed = {d["id"]: d["proposed_action"] for d in dec}
    by_action = pd.read_csv(data / "overrides_by_action.csv").set_index("proposed_action")
    for act, n in Counter(proposed[did] for did, _ in overrides).items():
        assert by_action.loc[act, "overridden"] == n
    n_prop = Counter(d["proposed_action"] for d in dec if d["status"] == "proposed"
                     and d["proposed_action"] and d["policy"] != "adapter")
    assert by_action["proposals"].to_dict() == dict(n_prop)
    # the agreement matrix: reviewed decisions, policy's proposal x human's final action
    m = pd.read_csv(data / "agreement.csv", index_col=0)
    want = Counter((proposed[did], h["action"] if h["verdict"] == "override" else
                    proposed[did] if h["verdict"] == "approve" else "noop") for did, h in human)
    assert {(i, j): int(m.loc[i, j]) for i in m.index for j in m.columns if m.loc[i, j]} == \
        dict(want)
    # guardrail blocks
    blocked = Counter(v["check"] for d in dec for v in json.loads(d["guard"] or "{}")
                      .get("verdicts", []) if not v["ok"])
    g = pd.read_csv(data / "guard_blocks.csv")
    assert g.groupby("check")["blocked"].sum().to_dict() == dict(blocked)
    assert sum(blocked.values()) > 0  # the cooldown did block some proposals
    # incidents and MTTR
    incs = [json.loads(e["payload"]) for e in ev if e["kind"] == "incident"]
    last = {p["start"]: p for p in incs}  # an escalated incident that later resolved: last
    inc = pd.read_csv(data / "incidents.csv")
    assert len(inc) == len(last) == r.summary["incidents"] > 0
    ttrs = sorted(p["ttr_s"] for p in last.values() if p["resolved"])
    assert r.summary["ttr_median_s"] == pytest.approx(float(pd.Series(ttrs).median()))
    trend = pd.read_csv(data / "mttr_trend.csv")
    assert trend["incidents"].sum() == len(last)
    assert trend["overrides"].sum() == len(overrides)
    assert trend["proposals"].sum() == sum(n_prop.values())
    # the slowest incident's trail is every decision it took, in order
    slow = pd.read_csv(data / "slowest_incidents.csv")
    trails = pd.read_csv(data / "slowest_incident_trails.csv")
    first = slow.iloc[0]
    assert first["n_decisions"] == (trails["incident_id"] == first["incident_id"]).sum()
    assert bool(first["resolved"]) is False or first["ttr_s"] == max(ttrs)


def test_filters_select_by_time_policy_version_and_target(simlog):
    full = load_log(str(simlog))
    v2 = load_log(str(simlog), Filters(policy_version="v2"))
    assert 0 < len(v2.decisions) < len(full.decisions)
    assert set(v2.decisions["policy_version"]) == {"v2"}
    late = load_log(str(simlog), Filters(since=T0 + 3600))
    assert late.decisions["created_at"].min() >= T0 + 3600
    assert len(late.decisions) == (full.decisions["created_at"] >= T0 + 3600).sum()
    early = load_log(str(simlog), Filters(until=T0 + 3600))
    assert len(early.decisions) + len(late.decisions) == len(full.decisions)
    serve = load_log(str(simlog), Filters(target="serve"))
    assert len(serve.decisions) and ((serve.decisions["proposed_target"] == "serve")
                                     | (serve.decisions["executed_target"] == "serve")).all()
    assert set(serve.actions["decision_id"]) <= set(serve.decisions["id"])
    # incidents follow their decisions
    assert len(early.incidents) + len(late.incidents) == len(full.incidents)


def test_an_empty_log_renders_a_clear_page(tmp_path, capsys):
    DecisionLog(f"sqlite:///{tmp_path}/empty.db")
    rc = main(["report", "--log", str(tmp_path / "empty.db"), "--out",
               str(tmp_path / "r.html")])
    assert rc == 0
    assert "No decisions in this log" in (tmp_path / "r.html").read_text()
    assert "no decisions" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "r_data" / "incidents.csv").empty


def test_filters_that_match_nothing_give_the_empty_page(simlog, tmp_path):
    r = write_report(str(simlog), tmp_path / "r.html", Filters(policy_version="v9"))
    assert r.summary["decisions"] == 0 and r.summary["incidents"] == 0
    assert "No decisions in this log with these filters" in r.html.read_text()
    assert list(pd.read_csv(r.data_dir / "incidents.csv").columns)[:2] == ["incident_id",
                                                                          "start"]
    # a log without incidents, filtered (this broke the analyst notebook on a quiet log)
    quiet = DecisionLog(f"sqlite:///{tmp_path}/quiet.db")
    quiet.new_decision(policy="p", policy_version="v1", observation=[0.0], signals={},
                       proposed_action="noop", explanation={}, guard={}, status="proposed")
    for version, n in (("v1", 1), ("v2", 0)):
        r = write_report(str(tmp_path / "quiet.db"), tmp_path / f"q{version}.html",
                         Filters(policy_version=version))
        assert r.summary["decisions"] == n and r.summary["incidents"] == 0


def test_damaged_and_foreign_files_give_clear_errors(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_bytes(bytes(range(256)) * 20)
    assert main(["report", "--log", str(junk), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "junk.db: cannot read the decision log" in err and "Traceback" not in err
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("create table t (x)")
    c.commit()
    c.close()
    with pytest.raises(LogError, match=r"not a healgym decision log.*tables found: \['t'\]"):
        load_log(str(other))
    with pytest.raises(LogError, match="no such decision log"):
        load_log(str(tmp_path / "missing.db"))
    assert not (tmp_path / "missing.db").exists()  # reading never creates a log


def test_damaged_rows_are_reported_and_the_rest_is_kept(simlog, tmp_path):
    copy = tmp_path / "damaged.db"
    src, c = sqlite3.connect(simlog), sqlite3.connect(copy)
    src.backup(c)  # the log is in WAL mode: copying the file alone would miss recent writes
    src.close()
    ids = [r[0] for r in c.execute("select id from decisions order by created_at limit 2")]
    c.execute("update decisions set guard='{broken' where id=?", (ids[0],))
    c.execute("insert into events (decision_id, at, kind, payload) values (?, 0, 'human', "
              "'not json')", (ids[1],))
    c.execute("pragma foreign_keys=off")
    c.execute("insert into events (decision_id, at, kind, payload) values ('ghost', 0, "
              "'outcome', '{}')")
    c.commit()
    c.close()
    r = write_report(str(copy), tmp_path / "r.html")
    assert len(r.problems) == 3
    assert any(ids[0] in p and "guard" in p for p in r.problems)
    assert any("ghost" in p for p in r.problems)
    assert r.summary["decisions"] == len(load_log(str(simlog)).decisions)
    assert "Problems reading the log (3)" in r.html.read_text()


def test_the_report_counts_interrupted_actions_and_duplicate_overrides_right(tmp_path):
    """An action cut off by a crash is 'interrupted' (not a normal execution with a blank ok);
    an override repeated with the same idempotency key is one execution, not two."""
    from healgym.analysis import tables

    db = tmp_path / "d.db"
    log = DecisionLog(f"sqlite:///{db}")
    kw = {"policy": "p", "policy_version": "v", "observation": None, "signals": {},
          "explanation": {}, "guard": {}, "status": "proposed"}
    cut = log.new_decision(proposed_action="restart_serve", at=T0, **kw)
    log.event(cut, "act_started", {"action": "restart_serve", "idempotency_key": cut,
                                   "via": "policy"}, at=T0)
    ok = log.new_decision(proposed_action="restart_serve", at=T0 + 60, **kw)
    log.event(ok, "act_started", {"action": "restart_serve", "idempotency_key": ok,
                                  "via": "policy"}, at=T0 + 60)
    log.event(ok, "act_result", {"ok": True, "detail": "done"}, at=T0 + 61)
    for i in range(2):  # the operator's override request, sent twice
        log.event(ok, "human", {"operator": "o", "verdict": "override",
                                "action": "rollback", "reason": "r"}, at=T0 + 70 + i)
        log.event(ok, "act_started", {"action": "rollback", "via": "override by o",
                                      "idempotency_key": f"{ok}:override:rollback"},
                  at=T0 + 70 + i)
        log.event(ok, "act_result", {"ok": True, "detail": "rolled back"}, at=T0 + 71 + i)
    DecisionLog(f"sqlite:///{db}").recover()  # the restarted adapter marks the cut-off one
    frames = load_log(str(db))
    a = frames.actions
    assert sorted(a["status"]) == ["interrupted", "ok", "ok"]
    assert (a["action"] == "rollback").sum() == 1
    s = tables.summary(frames)
    assert s["executed_actions"] == 3 and s["interrupted_actions"] == 1
    assert s["actuator_failures"] == 0
    d = frames.decisions.set_index("id")
    assert d.loc[cut, "state"] == "interrupted"
    res = write_report(str(db), tmp_path / "r.html")
    assert "interrupted actions<b>1</b>" in (tmp_path / "r.html").read_text()
    assert res.summary["interrupted_actions"] == 1


def test_the_charts_draw_what_the_tables_hold(simlog, monkeypatch):
    """The actions-over-time chart has a bar per executed action in the period it happened
    (it was drawn empty), and the TTR axis is labelled in plain seconds (no '1e-6+2.0001'
    offset)."""
    from healgym.analysis import report

    figs: list = []
    monkeypatch.setattr(report, "_png", lambda fig: figs.append(fig) or "png")
    frames = load_log(str(simlog))
    out = report._plots(frames, report.build(frames))
    assert "actions_over_time" in out and "mttr_trend" in out
    ax = figs[0].axes[0]
    heights = sum(p.get_height() for p in ax.patches)
    assert heights == len(frames.actions) > 0
    lo, hi = ax.get_xlim()
    assert all(lo <= p.get_x() <= hi for p in ax.patches)
    ttr_ax = figs[1].axes[0]
    figs[1].canvas.draw()
    assert ttr_ax.yaxis.get_major_formatter().get_useOffset() is False
    assert ttr_ax.yaxis.get_offset_text().get_text() == ""
