"""Read a decision log (read-only) into pandas.

:func:`load_log` opens a SQLite file or a database URL without writing to it, checks that it is a
healgym decision log of a schema version this healgym reads, and returns a :class:`LogFrames`:

- ``decisions``: one row per decision (events folded in, as the adapter's own
  :func:`~healgym.serving.decision_log.fold` does) with flat columns for analysis: ``time``
  (UTC), ``proposed_action`` / ``proposed_target``, ``executed_action`` / ``executed_target``,
  ``human_verdict``, ``operator``, ``human_action``, ``final_action`` (what the humans let stand:
  the policy's proposal, the override's action, or ``noop`` after a rejection), ``blocked`` and
  ``blocked_checks``, ``outcome``, ``ttr_s``, ``reward``, ``incident_id``;
- ``actions``: one row per actuator execution (``act_started``; an override of an action
  already taken is a second execution on the same decision): ``decision_id``, ``at``, ``time``,
  ``action``, ``target``, ``via`` (policy, approved by X, override by X, timeout, deadline),
  ``ok`` (the actuator's result; None while unknown or interrupted), ``status`` (``ok``,
  ``failed``, ``interrupted``: cut off by a crash, or ``running``); a repeated idempotency key
  (a retried override) is one execution;
- ``incidents``: one row per incident (from the adapter's ``incident`` events; for logs written
  before those existed, rebuilt from ``outcome`` events), with its decision trail;
- ``problems``: rows that could not be read (bad JSON, events of unknown decisions): reported,
  never fatal; what could be read is kept.

Filters (time range, policy version, target) select decisions; incidents are kept when any
decision of their trail is selected.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from healgym.errors import HealgymError
from healgym.serving.decision_log import SCHEMA_VERSION, fold

STAGE_KINDS = ("restart_", "scale_up_", "scale_down_")


class LogError(HealgymError):
    """The decision log could not be opened or is not a healgym decision log."""


@dataclass
class Filters:
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive
    policy_version: str | None = None
    target: str | None = None  # a stage name or "pipeline": the action's target

    def describe(self) -> str:
        parts = []
        if self.since is not None:
            parts.append(f"from {iso(self.since)}")
        if self.until is not None:
            parts.append(f"until {iso(self.until)}")
        if self.policy_version:
            parts.append(f"policy version {self.policy_version}")
        if self.target:
            parts.append(f"target {self.target}")
        return ", ".join(parts) or "none"


@dataclass
class LogFrames:
    source: str
    decisions: pd.DataFrame
    incidents: pd.DataFrame
    actions: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    filters: Filters = field(default_factory=Filters)


def iso(t: float | None) -> str:
    if t is None or not np.isfinite(t):
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(value: str | float | None, key: str) -> float | None:
    """Unix seconds from unix seconds or an ISO date/time (UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise LogError(f"{key}={value!r}: not a time; give an ISO date/time such as "
                       "2026-11-26 or 2026-11-26T08:00:00, or unix seconds") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def action_target(action: str | None) -> str | None:
    if not action or action == "noop":
        return None
    for k in STAGE_KINDS:
        if action.startswith(k):
            return action[len(k):]
    return "pipeline"


def engine_for(spec: str) -> tuple[sa.Engine, str]:
    """A read-only engine for a SQLite path or ``sqlite:///`` URL, or any database URL."""
    spec = str(spec)
    if "://" not in spec or spec.startswith("sqlite:///"):
        path = Path(spec[len("sqlite:///"):] if spec.startswith("sqlite:///") else spec)
        path = path.expanduser()
        if not path.is_file():
            raise LogError(f"{spec}: no such decision log; give the SQLite file the adapter "
                           "writes (decision_log: in the serve config) or a database URL such "
                           "as postgresql+psycopg://user@host/db")
        return sa.create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"), str(path)
    return sa.create_engine(spec), spec


def _read_tables(spec: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    engine, where = engine_for(spec)
    try:
        names = set(sa.inspect(engine).get_table_names())
        missing = {"decisions", "events"} - names
        if missing:
            raise LogError(f"{where}: not a healgym decision log: no {sorted(missing)} table "
                           f"(tables found: {sorted(names) or 'none'}); point --log at the file "
                           "the adapter writes")
        md = sa.MetaData()
        dec = sa.Table("decisions", md, autoload_with=engine)
        ev = sa.Table("events", md, autoload_with=engine)
        with engine.connect() as c:
            if "meta" in names:
                meta = sa.Table("meta", md, autoload_with=engine)
                row = c.execute(sa.select(meta.c.value).where(
                    meta.c.key == "schema_version")).first()
                if row is not None and str(row[0]) != str(SCHEMA_VERSION):
                    raise LogError(f"{where}: decision log schema version {row[0]}; this "
                                   f"healgym reads version {SCHEMA_VERSION}")
            drows = [dict(r) for r in c.execute(
                sa.select(dec).order_by(dec.c.created_at, dec.c.id)).mappings()]
            erows = [dict(r) for r in c.execute(sa.select(ev).order_by(ev.c.seq)).mappings()]
    except sa.exc.DBAPIError as exc:
        raise LogError(f"{where}: cannot read the decision log: {exc.orig}. Is it a healgym "
                       "decision log (SQLite file or database URL), and complete? A damaged "
                       "SQLite file can often be salvaged with `sqlite3 FILE .recover`") from exc
    finally:
        engine.dispose()
    return drows, erows, where


def _safe_json(value: Any, what: str, problems: list[str], kind: type = dict) -> str | None:
    """``value`` if it is JSON of the expected kind (or empty), else None and a problem."""
    if value is None or value == "" or not isinstance(value, str):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        problems.append(f"{what}: not valid JSON ({exc.msg} at char {exc.pos}); read as empty")
        return None
    if parsed is not None and not isinstance(parsed, kind):
        problems.append(f"{what}: JSON {type(parsed).__name__}, expected "
                        f"{'an object' if kind is dict else 'a list'}; read as empty")
        return None
    return value


def load_log(spec: str, filters: Filters | None = None) -> LogFrames:
    filters = filters or Filters()
    drows, erows, where = _read_tables(spec)
    problems: list[str] = []
    known = {r["id"] for r in drows}
    by: dict[str, list[dict[str, Any]]] = {}
    for e in erows:
        e["payload"] = _safe_json(e.get("payload"), f"event {e.get('seq')} ({e.get('kind')}) "
                                  f"of decision {e.get('decision_id')}", problems)
        if e["decision_id"] not in known:
            problems.append(f"event {e.get('seq')} ({e.get('kind')}): its decision "
                            f"{e['decision_id']} is not in the log; ignored")
            continue
        by.setdefault(e["decision_id"], []).append(e)
    recs = []
    for r in drows:
        for k in ("observation", "signals", "explanation", "guard"):
            r[k] = _safe_json(r.get(k), f"decision {r['id']} column {k}", problems,
                              list if k == "observation" else dict)
        try:
            created = float(r["created_at"])
        except (TypeError, ValueError):
            problems.append(f"decision {r['id']}: created_at={r['created_at']!r} is not a "
                            "time; skipped")
            continue
        r["created_at"] = created
        recs.append(fold(r, by.get(r["id"], [])))
    decisions = _decision_frame(recs)
    incidents = _incident_frame(recs, decisions)
    decisions, incidents = _apply(filters, decisions, incidents)
    actions = _action_frame(recs, set(decisions["id"]))
    return LogFrames(where, decisions, incidents, actions, problems, filters)


def _action_frame(recs: list[dict[str, Any]], keep: set[str]) -> pd.DataFrame:
    rows = []
    for r in recs:
        if r["id"] not in keep:
            continue
        current: dict[str, Any] | None = None
        keys: set[str] = set()
        for e in r["events"]:
            if e["kind"] == "act_started":
                key = e.get("idempotency_key")
                if key is not None and key in keys:
                    # the same idempotency key again (a retried override request): the
                    # actuator did it once; not a second execution
                    current = None
                    continue
                keys.add(key)
                current = {"decision_id": r["id"], "at": float(e["at"]),
                           "action": e.get("action"), "target": action_target(e.get("action")),
                           "via": e.get("via"), "ok": None, "status": "running"}
                rows.append(current)
            elif e["kind"] == "act_result" and current is not None:
                current["ok"] = e.get("ok")
                current["status"] = "ok" if e.get("ok") else "failed"
            elif e["kind"] == "interrupted" and current is not None:
                current["status"] = "interrupted"  # cut off by a crash: ran or not, unknown
    df = pd.DataFrame(rows, columns=["decision_id", "at", "action", "target", "via", "ok",
                                     "status"])
    df["time"] = pd.to_datetime(df["at"], unit="s", utc=True)
    return df


DECISION_COLUMNS = [
    "id", "time", "created_at", "policy", "policy_version", "status", "state",
    "proposed_action", "proposed_target", "executed_action", "executed_target", "via",
    "human_verdict", "operator", "human_action", "human_reason", "human_at", "final_action",
    "blocked", "blocked_checks", "needs_approval", "actuator_ok", "actuator_error", "outcome",
    "ttr_s", "reward", "confidence", "incident_id", "reason", "observation",
    # policies that diagnose (router + specialists): what the router thought, who acted, and
    # whether the executed action was verified to have healed
    "diagnosis", "diagnosis_score", "family", "specialist", "handover", "verified"]


def _diagnosis_fields(r: dict[str, Any]) -> dict[str, Any]:
    """A diagnosing policy's explanation (``diagnosis``: fault, stage, score; ``family``;
    ``specialist``; ``handover``) and the verification of what was executed (None: not
    checked)."""
    ex = r.get("explanation") or {}
    raw = ex.get("diagnosis")
    d: dict[str, Any] = raw if isinstance(raw, dict) else {}
    kinds = {e.get("kind") for e in r.get("events") or [] if isinstance(e, dict)}
    verified = True if "verified" in kinds else False if "not_verified" in kinds else None
    fault, stage = d.get("fault"), d.get("stage")
    return {"diagnosis": None if fault is None else f"{fault}@{stage}" if stage else fault,
            "diagnosis_score": d.get("score"), "family": ex.get("family"),
            "specialist": ex.get("specialist"), "handover": ex.get("handover"),
            "verified": verified}


def _decision_frame(recs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for r in recs:
        human = r.get("human") or {}
        guard = r.get("guard") or {}
        blocked_checks = [v.get("check") for v in guard.get("verdicts", [])
                          if isinstance(v, dict) and not v.get("ok", True)]
        via = next((e.get("via") for e in reversed(r["events"]) if e["kind"] == "act_started"),
                   None)
        verdict = human.get("verdict")
        final = {"approve": r["proposed_action"], "reject": "noop",
                 "override": human.get("action")}.get(str(verdict), r["proposed_action"])
        act = r.get("actuator_result") or {}
        rows.append({
            "id": r["id"], "created_at": r["created_at"], "policy": r["policy"],
            "policy_version": r["policy_version"], "status": r["status"], "state": r["state"],
            "proposed_action": r["proposed_action"],
            "proposed_target": action_target(r["proposed_action"]),
            "executed_action": r["executed_action"],
            "executed_target": action_target(r["executed_action"]), "via": via,
            "human_verdict": verdict, "operator": human.get("operator"),
            "human_action": human.get("action"), "human_reason": human.get("reason"),
            "human_at": human.get("at"), "final_action": final,
            "blocked": bool(guard.get("blocked", False)),
            "blocked_checks": ",".join(c for c in blocked_checks if c),
            "needs_approval": bool(guard.get("needs_approval", False)),
            "actuator_ok": act.get("ok"), "actuator_error": act.get("error"),
            "outcome": r["outcome"], "ttr_s": r["ttr_s"], "reward": r["reward"],
            "confidence": (r.get("explanation") or {}).get("confidence"),
            "incident_id": None, "reason": r.get("reason"),
            "observation": r.get("observation"),
            **_diagnosis_fields(r),
        })
    df = pd.DataFrame(rows, columns=DECISION_COLUMNS)
    df["time"] = pd.to_datetime(df["created_at"], unit="s", utc=True)
    return df


INCIDENT_COLUMNS = ["incident_id", "start", "end", "start_time", "resolved", "ttr_s",
                    "n_decisions", "n_actions", "actions", "overridden", "cost", "trail"]


def _incident_frame(recs: list[dict[str, Any]], decisions: pd.DataFrame) -> pd.DataFrame:
    by_id = {r["id"]: r for r in recs}
    found: dict[str, dict[str, Any]] = {}
    for r in recs:
        inc = r.get("incident")
        if isinstance(inc, dict) and inc.get("start") is not None:
            found[r["id"]] = {**inc, "trail": [d for d in inc.get("decisions", [])
                                               if d in by_id] or [r["id"]]}
    if not found:  # logs written before incident events: rebuild from outcome events
        groups: dict[tuple[float, Any], list[str]] = {}
        for r in recs:
            for e in r["events"]:
                if e["kind"] == "outcome":
                    start = e["at"] - e["ttr_s"] if e.get("ttr_s") is not None else None
                    groups.setdefault((round(start if start is not None else e["at"], 3),
                                       e.get("resolved")), []).append(r["id"])
        for (start, resolved), ids in groups.items():
            ids = list(dict.fromkeys(ids))
            ttr = by_id[ids[0]]["ttr_s"]
            found[ids[0]] = {"start": start, "end": start + ttr if ttr is not None else None,
                             "resolved": bool(resolved), "ttr_s": ttr, "decisions": ids,
                             "acted": ids, "cost": float("nan"), "trail": ids}
    rows = []
    incident_of: dict[str, str] = {}
    for first, inc in sorted(found.items(), key=lambda kv: kv[1]["start"]):
        trail = inc["trail"]
        acted = [d for d in inc.get("acted", []) if d in by_id]
        for d in trail:
            incident_of[d] = first
        rows.append({
            "incident_id": first, "start": float(inc["start"]),
            "end": inc.get("end"), "resolved": bool(inc.get("resolved")),
            "ttr_s": inc.get("ttr_s"), "n_decisions": len(trail), "n_actions": len(acted),
            "actions": " > ".join(str(by_id[d]["executed_action"]) for d in acted),
            "overridden": any((by_id[d].get("human") or {}).get("verdict") == "override"
                              for d in trail),
            "cost": inc.get("cost"), "trail": trail})
    df = pd.DataFrame(rows, columns=INCIDENT_COLUMNS)
    df["start_time"] = pd.to_datetime(df["start"], unit="s", utc=True)
    decisions["incident_id"] = decisions["id"].map(incident_of)
    return df


def _apply(f: Filters, d: pd.DataFrame, inc: pd.DataFrame
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    keep = pd.Series(True, index=d.index)
    if f.since is not None:
        keep &= d["created_at"] >= f.since
    if f.until is not None:
        keep &= d["created_at"] < f.until
    if f.policy_version:
        keep &= d["policy_version"] == f.policy_version
    if f.target:
        keep &= (d["proposed_target"] == f.target) | (d["executed_target"] == f.target)
    d = d[keep].reset_index(drop=True)
    if (f.since is not None or f.until is not None or f.policy_version or f.target) and len(inc):
        kept = set(d["id"])
        hit = np.array([any(x in kept for x in t) for t in inc["trail"]], dtype=bool)
        inc = inc[hit].reset_index(drop=True)
    return d, inc
