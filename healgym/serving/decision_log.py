"""The decision log: append-only, durable, one record per decision.

Schema version 1 (SQLAlchemy Core; SQLite in WAL mode with ``synchronous=FULL`` by default,
PostgreSQL by URL):

- ``decisions``: written once, before anything is acted on, never updated: ``id`` (uuid),
  ``created_at`` (unix s), ``policy``, ``policy_version``, ``observation`` (JSON list),
  ``signals`` (JSON: the raw measurements), ``proposed_action``, ``explanation`` (JSON),
  ``guard`` (JSON: every verdict), ``status`` (``proposed`` | ``skipped`` | ``shadow``),
  ``reason``.
- ``events``: appended as the decision progresses: ``decision_id``, ``seq``, ``at``, ``kind``
  (``human`` {operator, verdict, action, reason}; ``act_started`` {action, idempotency_key};
  ``act_result`` {ok, detail, error}; ``outcome`` {resolved, ttr_s, reward} on every decision
  that acted in an incident; ``incident`` {start, end, resolved, ttr_s, decisions, acted, cost}
  on an incident's first decision, when it resolves or escalates; ``escalated``;
  ``interrupted``), ``payload`` (JSON).
- ``meta``: ``schema_version``.

:meth:`DecisionLog.records` folds both into one row per decision (the human decision, the
executed action, the actuator's result, the outcome and time to recover); :meth:`export_parquet`
writes those rows. Every write is its own committed transaction: what was acknowledged survives
a kill -9. On start, :meth:`recover` marks every action that was started and has no result as
``interrupted``: it is never executed again (it may or may not have happened; an operator checks).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = 1
meta = sa.MetaData()
decisions = sa.Table(
    "decisions", meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("policy", sa.String(200), nullable=False),
    sa.Column("policy_version", sa.String(200), nullable=False),
    sa.Column("observation", sa.Text),
    sa.Column("signals", sa.Text),
    sa.Column("proposed_action", sa.String(100)),
    sa.Column("explanation", sa.Text),
    sa.Column("guard", sa.Text),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text),
)
events = sa.Table(
    "events", meta,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"), nullable=False,
              index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("payload", sa.Text),
)
meta_table = sa.Table("meta", meta, sa.Column("key", sa.String(50), primary_key=True),
                      sa.Column("value", sa.String(200)))


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class DecisionLog:
    def __init__(self, url: str = "sqlite:///decisions.db") -> None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        meta.create_all(self.engine)
        with self.engine.begin() as c:
            row = c.execute(sa.select(meta_table.c.value).where(
                meta_table.c.key == "schema_version")).first()
            if row is None:
                c.execute(meta_table.insert().values(key="schema_version",
                                                     value=str(SCHEMA_VERSION)))
            elif int(row[0]) != SCHEMA_VERSION:
                from healgym.errors import HealgymError

                raise HealgymError(f"decision log {url}: schema version {row[0]}, this healgym "
                                   f"writes {SCHEMA_VERSION}; export it and start a new log")

    # ---------------------------------------------------------------- writes
    def new_decision(self, *, policy: str, policy_version: str, observation: Any,
                     signals: dict[str, Any], proposed_action: str | None,
                     explanation: dict[str, Any], guard: dict[str, Any], status: str,
                     reason: str = "", at: float | None = None) -> str:
        did = str(uuid.uuid4())
        with self.engine.begin() as c:
            c.execute(decisions.insert().values(
                id=did, created_at=time.time() if at is None else at, policy=policy,
                policy_version=policy_version,
                observation=json.dumps(None if observation is None else
                                       [float(x) for x in observation]),
                signals=json.dumps(signals, default=float), proposed_action=proposed_action,
                explanation=json.dumps(explanation, default=str),
                guard=json.dumps(guard, default=str), status=status, reason=reason))
        return did

    def event(self, decision_id: str, kind: str, payload: dict[str, Any] | None = None,
              at: float | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(events.insert().values(decision_id=decision_id,
                                             at=time.time() if at is None else at, kind=kind,
                                             payload=json.dumps(payload or {}, default=str)))

    # ---------------------------------------------------------------- reads
    def events_of(self, decision_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(events).where(events.c.decision_id == decision_id)
                             .order_by(events.c.seq)).mappings().all()
        return [{**r, "payload": json.loads(r["payload"] or "{}")} for r in rows]

    def records(self, since: float | None = None, limit: int | None = None
                ) -> list[dict[str, Any]]:
        """One row per decision (newest last), events folded in."""
        q = sa.select(decisions).order_by(decisions.c.created_at, decisions.c.id)
        if since is not None:
            q = q.where(decisions.c.created_at >= since)
        with self.engine.connect() as c:
            rows = c.execute(q).mappings().all()
            evs = c.execute(sa.select(events).order_by(events.c.seq)).mappings().all()
        by: dict[str, list[Any]] = {}
        for e in evs:
            by.setdefault(e["decision_id"], []).append(e)
        out = [fold(dict(r), by.get(r["id"], [])) for r in rows]
        return out[-limit:] if limit else out

    def record(self, decision_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(decisions).where(decisions.c.id == decision_id)
                          ).mappings().first()
            if r is None:
                return None
            evs = c.execute(sa.select(events).where(events.c.decision_id == decision_id)
                            .order_by(events.c.seq)).mappings().all()
        return fold(dict(r), list(evs))

    def interrupted_actions(self) -> list[str]:
        """Decisions whose action was started and has no result."""
        with self.engine.connect() as c:
            started = {r[0] for r in c.execute(sa.select(events.c.decision_id).where(
                events.c.kind == "act_started"))}
            done = {r[0] for r in c.execute(sa.select(events.c.decision_id).where(
                events.c.kind.in_(("act_result", "interrupted"))))}
        return sorted(started - done)

    def recover(self) -> list[str]:
        """Mark actions cut off by a crash as interrupted (never re-run them)."""
        ids = self.interrupted_actions()
        for did in ids:
            self.event(did, "interrupted", {"detail": "the adapter stopped between starting "
                                            "this action and recording its result; it is not "
                                            "retried: check the target by hand"})
        return ids

    def export_parquet(self, path: str | Path) -> Path:
        import pandas as pd

        rows = self.records()
        for r in rows:
            for k in ("observation", "signals", "explanation", "guard", "human",
                      "actuator_result", "incident", "events"):
                r[k] = json.dumps(r.get(k), default=str)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path, index=False)
        return path


def fold(row: dict[str, Any], evs: list[Any]) -> dict[str, Any]:
    for k in ("observation", "signals", "explanation", "guard"):
        row[k] = json.loads(row[k]) if row[k] else None
    row.update(human=None, executed_action=None, idempotency_key=None, actuator_result=None,
               outcome=None, ttr_s=None, reward=None, incident=None, verification=None,
               state=row["status"])
    evlist = []
    for e in evs:
        p = json.loads(e["payload"] or "{}") if isinstance(e["payload"], str) else \
            (e["payload"] or {})
        evlist.append({"kind": e["kind"], "at": e["at"], **p})
        kind = e["kind"]
        if kind == "human":
            row["human"] = {**p, "at": e["at"]}
            row["state"] = f"human:{p.get('verdict')}"
        elif kind == "pending":
            row["state"] = "pending"
        elif kind == "act_started":
            row["executed_action"] = p.get("action")
            row["idempotency_key"] = p.get("idempotency_key")
            row["state"] = "acting"
        elif kind == "act_result":
            row["actuator_result"] = p
            row["state"] = "acted" if p.get("ok") else "act_failed"
        elif kind == "interrupted":
            row["actuator_result"] = {"ok": None, "detail": p.get("detail")}
            row["state"] = "interrupted"
        elif kind == "outcome":
            row["outcome"] = "resolved" if p.get("resolved") else "unresolved"
            row["ttr_s"], row["reward"] = p.get("ttr_s"), p.get("reward")
            row["state"] = row["outcome"]
        elif kind == "incident":
            row["incident"] = p  # the last one: resolved after an escalation wins
        elif kind == "timeout":
            row["state"] = "timed_out"
        elif kind == "escalated":
            row["state"] = "escalated"
        elif kind in ("verified", "not_verified"):  # did the action have its effect?
            row["verification"] = kind
        elif kind == "duplicate":  # a proposal for a target that already awaits a human
            row["state"] = "duplicate"
    row["events"] = evlist
    return row
