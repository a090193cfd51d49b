"""The serving loop: observe -> decide -> guard -> human -> act -> verify, every step logged.

:class:`Adapter` is driven by :meth:`Adapter.step` (one observation and decision; ``healgym
serve`` calls it every ``interval_s``) and by the human API (:meth:`approve`, :meth:`reject`,
:meth:`override`, :meth:`pause`, :meth:`resume`). A decision is written to the log before it is
acted on; the action is marked started (with its idempotency key) before the actuator runs and
its result is appended after.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healgym.errors import InvalidAction, NotPending, Stopped, UnknownDecision
from healgym.serving.actuators import ActResult, Resilient, build_actuators
from healgym.serving.config import ServeConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.guardrails import Guard, action_infos
from healgym.serving.metrics import AdapterMetrics
from healgym.serving.observe import AdapterState, Observer
from healgym.sim import actions as act
from healgym.sim.observation import HistoryBuilder, Signals, encode, slo_violated


@dataclass
class Pending:
    decision_id: str
    action: int
    created: float


@dataclass
class Incident:
    start: float
    decisions: list[str] = field(default_factory=list)  # those that acted
    trail: list[str] = field(default_factory=list)  # every decision while it was open
    cost: float = 0.0
    escalated: bool = False

    def summary(self, now: float, resolved: bool) -> dict[str, Any]:
        """The ``incident`` event's payload (on the incident's first decision): what the
        report's incident table and the log-to-scenario replay read."""
        return {"start": self.start, "end": now if resolved else None, "resolved": resolved,
                "ttr_s": now - self.start if resolved else None, "decisions": list(self.trail),
                "acted": list(dict.fromkeys(self.decisions)), "cost": self.cost}


log = logging.getLogger("healgym.serving")


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line per event (decision, action, block, alert, incident): the event
    name and its fields, for ``--log-format text|json`` (:class:`JsonFormatter`)."""
    log.log(level, "%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()
                                          if v is not None),
            extra={"event": event, "fields": fields})


class JsonFormatter(logging.Formatter):
    """``healgym serve --log-format json``: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname,
                               "logger": record.name}
        event = getattr(record, "event", None)
        if event is not None:
            out["event"] = event
            out.update(getattr(record, "fields", {}))
        else:
            out["message"] = record.getMessage()
        return json.dumps(out, default=str)


class Adapter:
    def __init__(self, conf: ServeConf, policy: Any, model: Any, log: DecisionLog,
                 observer: Observer, actuators: dict[str, Resilient] | None = None,
                 policy_version: str = "", metrics: AdapterMetrics | None = None,
                 started_at: float | None = None) -> None:
        """``started_at``: the adapter's start on its clock (default: now); with
        ``conf.startup_grace``, readings taken before it are not decided on."""
        self.conf, self.policy, self.model, self.log = conf, policy, model, log
        self.observer = observer
        self.infos = action_infos(model)
        self.names = [a.name for a in self.infos]
        self.actuators = actuators if actuators is not None else build_actuators(
            conf.actuators, self.names)
        self.guard = Guard(conf.guard, self.infos)
        for wrapped in {id(w): w for w in self.actuators.values()}.values():
            start = getattr(wrapped.actuator, "start", None)
            if callable(start):  # actuators that manage processes start them with the adapter
                start()
        self.kinds = {k.name: k for k in model.kinds}
        unknown = set(conf.durations_s) - set(self.kinds)
        if unknown:
            from healgym.errors import ConfigError

            raise ConfigError(f"durations_s: unknown action kinds {sorted(unknown)}; use "
                              f"{list(self.kinds)}")
        if conf.human.on_timeout not in self.names:
            from healgym.errors import ConfigError

            raise ConfigError(f"human.on_timeout={conf.human.on_timeout!r} is not an action")
        self.policy_version = policy_version
        self.metrics = metrics or AdapterMetrics()
        # a rollback is possible when something can carry it out (the registry actuator fails,
        # and says why, when there is no older version)
        self.state = AdapterState(can_rollback="rollback" in self.actuators)
        self.pending: dict[str, Pending] = {}
        # the history block's memory, for policies trained with history=True
        self.history = HistoryBuilder() if model.layout.history else None
        # (action, when it completes, its decision id)
        self._completion: tuple[int, float, str | None] | None = None
        # (decision id, action, target stage or None, completed at): awaiting verification
        self._verifying: tuple[str | None, int, int | None, float] | None = None
        self.incident: Incident | None = None
        self.paused = False
        self.last_now: float | None = None  # the clock of the last step
        self.lock = threading.RLock()
        self.alerts: list[str] = []
        self.running: dict[str, str] = {}  # decision id -> action, carried out in background
        self.workers: list[threading.Thread] = []
        self.started_at = time.time() if started_at is None else float(started_at)
        self.interrupted = log.recover()
        for did in self.interrupted:
            self.alert(f"decision {did}: its action was interrupted by a restart and is not "
                       "retried; check the target", "interrupted", decision=did)
        self.restored = self._restore(self.started_at)

    # ------------------------------------------------------------------ durable state
    def _restore(self, now: float) -> dict[str, int]:
        """What is allowed is derived from the decision log, so a restart changes nothing:
        every action started within the guard's horizon counts against cooldowns, rate limits
        and budgets again (an interrupted one too: it may have run); the last one's in-flight
        time and its effect on the deploy clock hold; pending approvals that have not expired
        are pending again; a pause holds until resumed."""
        horizon = max(3600.0, self.conf.guard.rate_window_s, self.conf.guard.cooldown_s,
                      self.conf.human.timeout_s)
        started: list[tuple[float, int, str]] = []
        restored = {"actions": 0, "pending": 0, "paused": 0}
        paused: bool | None = None
        for r in self.log.records(since=now - horizon - 3600.0):
            ctl = (r.get("explanation") or {}).get("control")
            if r["status"] == "control" and ctl in ("pause", "resume"):
                paused = ctl == "pause"
            for e in r["events"]:
                if e["kind"] == "act_started" and e.get("action") in self.names \
                        and now - e["at"] < horizon:
                    started.append((float(e["at"]), self.names.index(e["action"]), r["id"]))
            if r["state"] == "pending":
                ev = next((e for e in reversed(r["events"]) if e["kind"] == "pending"), None)
                if ev is not None and ev.get("action") in self.names:
                    self.pending[r["id"]] = Pending(r["id"], self.names.index(ev["action"]),
                                                    float(ev["at"]))
                    restored["pending"] += 1
        for at, action, _ in sorted(started):
            self.guard.record(action, at)
            restored["actions"] += 1
        if started:
            at, action, sdid = max(started)
            info = self.infos[action]
            kind = self.kinds[info.kind]
            duration = self.conf.durations_s.get(info.kind, kind.duration_s)
            self.state.last_action, self.state.last_action_t = action, at
            if kind.effect == act.PAGE:
                self.state.paged_until = at + duration
            elif at + duration > now:
                self.state.in_flight_until = at + duration
                self._completion = (action, at + duration, sdid)
        if paused:
            self.paused = True
            restored["paused"] = 1
        self.metrics.pending.set(len(self.pending))
        if any(restored.values()):
            self.alert(f"restored from the decision log: {restored['actions']} recent action(s) "
                       f"in the guard's budgets, {restored['pending']} pending approval(s)"
                       f"{', paused' if paused else ''}", "restored", **restored)
        return restored

    def _control(self, verb: str, operator: str, reason: str) -> None:
        """A pause or resume, as a durable record in the decision log."""
        self.log.new_decision(policy=self.policy.name, policy_version=self.policy_version,
                              observation=None, signals={}, proposed_action=None,
                              explanation={"control": verb, "operator": operator},
                              guard={}, status="control", reason=f"{verb}d by {operator}: "
                                                                 f"{reason}", at=time.time())

    # ------------------------------------------------------------------ helpers
    def alert(self, message: str, reason: str = "other", **fields: Any) -> None:
        """Something an operator should see: kept in ``alerts``, counted in
        ``healgym_alerts_total{reason}``, and logged (a structured line on stderr)."""
        self.alerts.append(message)
        self.metrics.alerts.labels(reason=reason).inc()
        emit("alert", logging.WARNING, reason=reason, message=message, **fields)

    def mask(self, s: Signals, now: float | None = None) -> np.ndarray:
        """Actions possible now: the env's own compiled mask (:func:`healgym.sim.actions.
        mask_row`: scale limits, rollback, light model, load shedding, a paged human, the cost
        budget, nothing but escalation while an action is in flight), and only actions an
        actuator can carry out."""
        st = self.state
        budget = self.model.reward.cost_budget
        m = act.action_mask(
            self.model.actions, in_flight=s.action_in_flight, replicas=s.replicas,
            can_rollback=s.can_rollback, light=s.light_model,
            shedding=now is not None and now < st.shedding_until,
            paged=now is not None and now < st.paged_until,
            remaining=np.inf if budget is None else budget - st.spent, kinds=self.model.kinds)
        for a in self.infos:
            if a.kind != "noop" and a.name not in self.actuators:
                m[a.index] = 0
        return m

    # ------------------------------------------------------------------ the loop
    def step(self, now: float | None = None) -> str:
        """One observation and decision; returns the decision's id."""
        with self.lock:
            t0 = time.perf_counter()
            now = time.time() if now is None else now
            self.last_now = now
            self._expire(now)
            reading = self.observer.read(self.state, now)
            if reading.signals is None:
                probs = reading.problems
                reason = "; ".join(probs[:5]) + (f"; and {len(probs) - 5} more"
                                                 if len(probs) > 5 else "")
                self.alert(f"no decision: {reason}", "no_reading")
                self._check_effect(None, now)  # unobservable past the deadline: not verified
                self.metrics.decisions.labels(action="none", status="skipped").inc()
                return self._trail(self.log.new_decision(
                    policy=self.policy.name, policy_version=self.policy_version,
                    observation=None, signals=reading.samples, proposed_action=None,
                    explanation={}, guard={}, status="skipped", reason=reason, at=now))
            if self.conf.startup_grace and reading.oldest_ts < self.started_at:
                reason = (f"start-up: waiting for readings taken after the adapter started (the "
                          f"oldest is {self.started_at - reading.oldest_ts:.0f} s older)")
                self.metrics.decisions.labels(action="none", status="warming_up").inc()
                emit("decision", logging.INFO, state="warming_up", reason=reason)
                return self._trail(self.log.new_decision(
                    policy=self.policy.name, policy_version=self.policy_version,
                    observation=None, signals=reading.samples, proposed_action=None,
                    explanation={}, guard={}, status="warming_up", reason=reason, at=now))
            s = reading.signals
            if self._completion is not None and now >= self._completion[1]:
                done, at_done, done_did = self._completion
                st = self.model.actions[done].stage
                if self.history is not None:
                    self.history.completed(done, st if st >= 0 else None)
                self._verifying = (done_did, done, st if st >= 0 else None, at_done)
                self._completion = None
            obs = encode(self.model, s, self.history, now)
            self._check_effect(obs, now)
            self._verify(now, slo_violated(self.model, s))
            if self.paused:
                self.metrics.decisions.labels(action="none", status="paused").inc()
                emit("decision", logging.INFO, state="paused")
                return self._trail(self.log.new_decision(
                    policy=self.policy.name, policy_version=self.policy_version,
                    observation=obs, signals=reading.samples, proposed_action=None,
                    explanation={}, guard={}, status="paused", reason="adapter paused",
                    at=now))
            mask = self.mask(s, now)
            # time_s: policies with their own clocks (runbook cooldowns) see wall time
            decision = self.policy.decide(obs, {"action_mask": mask, "time_s": now})
            proposed = int(decision.action)
            if not 0 <= proposed < len(self.infos) or not mask[proposed]:
                self.alert(f"policy proposed invalid action {proposed}; taking the safe default",
                           "invalid_proposal")
                proposed = self.guard.safe
            confidence = float(decision.explanation.get("confidence", 1.0))
            g = self.guard.check(proposed, now, confidence,
                                 incident_open=self.incident is not None)
            for v in g.verdicts:
                if not v.ok:
                    self.metrics.guard_blocks.labels(check=v.check).inc()
            approval = (g.needs_approval or self.conf.human.mode == "approval") \
                and not g.blocked and g.action != self.guard.safe
            status = "shadow" if g.shadow else "proposed"
            did = self.log.new_decision(
                policy=self.policy.name, policy_version=self.policy_version, observation=obs,
                signals=reading.samples, proposed_action=self.names[proposed],
                explanation=dict(decision.explanation), guard=g.as_dict(), status=status,
                reason="; ".join(v.reason for v in g.verdicts if not v.ok), at=now)
            label = self.names[g.action]
            if g.blocked:
                failed = [v for v in g.verdicts if not v.ok]
                self.alert(f"decision {did}: {self.names[proposed]} blocked by "
                           f"{failed[0].check if failed else 'guard'}: "
                           f"{failed[0].reason if failed else ''}", "guard_block",
                           decision=did, action=self.names[proposed],
                           check=failed[0].check if failed else None)
            if g.shadow or g.action == self.guard.safe:
                self.metrics.decisions.labels(action=label, status=status if g.shadow else
                                              ("blocked" if g.blocked else "noop")).inc()
            elif approval and (dup := self._pending_for(self.infos[g.action].target)):
                # one pending proposal per target: the humans see one question, not a pile
                self.log.event(did, "duplicate", {"action": label, "pending": dup}, at=now)
                self.metrics.decisions.labels(action=label, status="duplicate").inc()
            elif approval:
                self.log.event(did, "pending", {"action": label, "timeout_s":
                                                self.conf.human.timeout_s}, at=now)
                self.pending[did] = Pending(did, g.action, now)
                self.metrics.decisions.labels(action=label, status="pending").inc()
            else:
                self._act(did, g.action, now, via="policy")
            self.metrics.pending.set(len(self.pending))
            self.metrics.latency.observe(time.perf_counter() - t0)
            self._trail(did)
            rec_state = "pending" if did in self.pending else status
            emit("decision", logging.INFO, decision=did, proposed=self.names[proposed],
                 action=label, state=rec_state, blocked=g.blocked,
                 incident=self.incident is not None)
            return did

    def _trail(self, did: str) -> str:
        if self.incident is not None:
            self.incident.trail.append(did)
        return did

    def _act(self, did: str, action: int, now: float, via: str, key: str | None = None
             ) -> ActResult:
        """Mark the action started (with its idempotency key, the decision id unless given),
        run it, append the result."""
        info, key = self._act_start(did, action, now, via, key)
        return self._act_finish(did, action, now, via, self._run(info, key))

    def _act_start(self, did: str, action: int, now: float, via: str, key: str | None
                   ) -> tuple[Any, str]:
        info = self.infos[action]
        key = key or did
        self.log.event(did, "act_started", {"action": info.name, "target": info.target,
                                            "idempotency_key": key, "via": via}, at=now)
        return info, key

    def _run(self, info: Any, key: str) -> ActResult:
        """The actuator call itself (no lock held by the caller for background actions)."""
        actuator = self.actuators.get(info.name)
        if actuator is None:
            return ActResult(False, "", f"no actuator carries out {info.name!r}; add it to "
                             "an actuators[].actions list", attempts=0)
        return actuator.execute(info.kind, info.target, key)

    def _act_background(self, did: str, action: int, now: float, via: str,
                        key: str | None = None) -> None:
        """A human's approval or override: started now (logged), carried out in a thread so
        the caller returns at once and the loop keeps observing and deciding; until it
        completes the pipeline counts as having an action in flight (only noop and escalate
        are offered), as in the env."""
        info, key = self._act_start(did, action, now, via, key)
        self.state.in_flight_until = math.inf
        self.running[did] = info.name

        def work() -> None:
            try:
                result = self._run(info, key)
            except Exception as exc:  # an actuator bug: recorded as a failed action
                result = ActResult(False, "", f"{type(exc).__name__}: {exc}", attempts=1)
            with self.lock:
                self.running.pop(did, None)
                if self.state.in_flight_until == math.inf:
                    self.state.in_flight_until = 0.0
                self._act_finish(did, action, now, via, result)

        t = threading.Thread(target=work, name=f"act-{did[:8]}", daemon=True)
        self.workers.append(t)
        t.start()

    def _act_finish(self, did: str, action: int, now: float, via: str, result: ActResult
                    ) -> ActResult:
        info = self.infos[action]
        self.log.event(did, "act_result", result.as_dict())
        emit("action", logging.INFO if result.ok else logging.ERROR, decision=did,
             action=info.name, via=via, ok=result.ok, detail=result.detail, error=result.error,
             attempts=result.attempts)
        self.metrics.decisions.labels(action=info.name,
                                      status="acted" if result.ok else "act_failed").inc()
        if not result.ok:
            self.metrics.actuator_failures.labels(action=info.name).inc()
            self.alert(f"decision {did}: {info.name} failed: {result.error}",
                       "actuator_failure", decision=did, action=info.name)
            return result
        self.guard.record(action, now)
        self.state.last_action, self.state.last_action_t = action, now
        kind = self.kinds[info.kind]
        duration = self.conf.durations_s.get(info.kind, kind.duration_s)
        effect = kind.effect
        self.state.spent += info.cost
        if effect == act.PAGE:  # as in the env: a paged human works alongside actions
            self.state.paged_until = now + duration
        else:
            self.state.in_flight_until = now + duration
            self._completion = (action, now + duration, did)
        if effect == act.SHED:
            self.state.shedding_until = now + act.SHED_SECONDS
        if effect in (act.PREVIOUS_VERSION, act.NEW_VERSION):  # a deploy, once it completes
            self.state.deploy_t = now + duration
        if info.kind in ("switch_light", "switch_back"):
            self.state.light_model = info.kind == "switch_light"
        if self.incident is not None:
            self.incident.decisions.append(did)
            self.incident.cost += info.cost
        return result

    def _verify(self, now: float, violated: bool) -> None:
        inc = self.incident
        if violated and inc is None:
            self.incident = Incident(start=now)
            emit("incident_opened", logging.WARNING, at=now)
            return
        if inc is None:
            return
        if not violated:
            ttr = now - inc.start
            r = self.model.reward
            reward = -(r.slo_violation_per_s * ttr) - r.action_cost_weight * inc.cost
            for did in dict.fromkeys(inc.decisions):  # an overridden decision acted twice
                self.log.event(did, "outcome", {"resolved": True, "ttr_s": ttr,
                                                "reward": reward}, at=now)
            if inc.trail:
                self.log.event(inc.trail[0], "incident", inc.summary(now, True), at=now)
            self.metrics.recoveries.observe(ttr)
            emit("incident_resolved", logging.INFO, ttr_s=round(ttr, 1),
                 decisions=len(inc.decisions))
            self.incident = None
        elif not inc.escalated and now - inc.start > self.conf.verify_deadline_s:
            inc.escalated = True
            for did in dict.fromkeys(inc.decisions):
                self.log.event(did, "outcome", {"resolved": False, "ttr_s": None,
                                                "deadline_s": self.conf.verify_deadline_s},
                               at=now)
            self.alert(f"incident open for {now - inc.start:.0f} s > verify_deadline_s; "
                       "escalating", "deadline_escalation", open_s=round(now - inc.start, 1))
            if inc.trail:
                self.log.event(inc.trail[0], "incident", inc.summary(now, False), at=now)
            did = self.log.new_decision(
                policy="adapter", policy_version="", observation=None, signals={},
                proposed_action=self.conf.escalate_action, explanation={"why": "deadline"},
                guard={}, status="proposed", reason="unresolved past verify_deadline_s", at=now)
            self.log.event(did, "escalated", {}, at=now)
            if self.conf.escalate_action in self.names and \
                    self.conf.escalate_action in self.actuators:
                self._act(did, self.names.index(self.conf.escalate_action), now, via="deadline")

    def _expire(self, now: float) -> None:
        for did, p in list(self.pending.items()):
            if now - p.created >= self.conf.human.timeout_s:
                del self.pending[did]
                self.log.event(did, "timeout", {"action": self.conf.human.on_timeout}, at=now)
                fallback = self.names.index(self.conf.human.on_timeout)
                if fallback != self.guard.safe:
                    self._act(did, fallback, now, via="timeout")
        self.metrics.pending.set(len(self.pending))

    # ------------------------------------------------------------------ humans
    def _human(self, did: str, operator: str, verdict: str, reason: str,
               action: str | None = None, now: float | None = None) -> dict[str, Any]:
        if not operator or not reason:
            raise InvalidAction("an operator identity and a reason are required")
        rec = self.log.record(did)
        if rec is None:
            raise UnknownDecision(f"no decision {did}")
        self.log.event(did, "human", {"operator": operator, "verdict": verdict, "action": action,
                                      "reason": reason}, at=now)
        if verdict == "override":
            self.metrics.overrides.inc()
        return rec

    def _check_effect(self, obs: np.ndarray | None, now: float) -> None:
        """Verify a completed action by observing: its target recovered (a stage's metrics
        back within the detection threshold; for a pipeline-wide action, no alarm at all)
        within ``verify_action_s`` of its completion: ``verified``; else ``not_verified``
        and an alert, since a successful actuator result without the effect is not a
        success (e.g. an orphan kept the port and kept serving the fault)."""
        if self._verifying is None:
            return
        from healgym.sim.model import DETECT_Z
        from healgym.sim.observation import alarm

        did, action, stage, done_at = self._verifying
        lay = self.model.layout
        if obs is None:
            recovered = False  # no reading: nothing verifies it
        elif stage is not None:
            recovered = bool(np.abs(lay.z_block(obs[None])[0][stage]).max() <= DETECT_Z)
        else:
            recovered = not alarm(self.model, obs)
        name = self.names[action]
        if recovered:
            self._verifying = None
            if did is not None:
                self.log.event(did, "verified", {"action": name, "after_s": now - done_at},
                               at=now)
            emit("verification", logging.INFO, decision=did, action=name, verified=True,
                 after_s=round(now - done_at, 1))
        elif now - done_at >= self.conf.verify_action_s:
            self._verifying = None
            if did is not None:
                self.log.event(did, "not_verified", {"action": name, "waited_s":
                                                     now - done_at}, at=now)
            self.alert(f"decision {did}: {name} reported success, but its target has not "
                       f"recovered {now - done_at:.0f} s after it completed", "not_verified",
                       decision=did, action=name)

    def _pending_for(self, target: str) -> str | None:
        """The decision already waiting for a human about ``target`` (the pipeline-wide actions
        share one target), if any."""
        return next((did for did, p in self.pending.items()
                     if self.infos[p.action].target == target), None)

    def stopped(self) -> str | None:
        """Why nothing may be executed now (the kill switch file is present, or the adapter is
        paused), or None. It covers policy actions, approvals and overrides alike."""
        ks = self.conf.guard.kill_switch_file
        if ks and os.path.exists(ks):
            return f"kill switch {ks} is present"
        if self.paused:
            return "the adapter is paused (healgym override resume)"
        return None

    def _refuse_if_stopped(self, did: str, operator: str, verdict: str, action: str | None,
                           reason: str, now: float | None) -> None:
        """A human's approval or override while stopped: refused, and the attempt logged."""
        why = self.stopped()
        if why is None:
            return
        self._known(did)
        self.log.event(did, "refused", {"operator": operator, "verdict": verdict,
                                        "action": action, "reason": reason, "why": why}, at=now)
        self.alert(f"decision {did}: {verdict} by {operator} refused: {why}", "refused",
                   decision=did, operator=operator)
        raise Stopped(f"{verdict} refused: {why}; nothing is executed until it is lifted (remove "
                      "the kill switch file / healgym override resume)")

    def _known(self, did: str) -> None:
        if self.log.record(did) is None:
            raise UnknownDecision(f"no decision {did}")

    # ``now``: the wall clock unless given (a simulated serving loop passes its own clock)
    def approve(self, did: str, operator: str, reason: str, now: float | None = None
                ) -> dict[str, Any]:
        with self.lock:
            p = self.pending.get(did)
            if p is None:
                self._known(did)
                raise NotPending(f"decision {did} is not pending approval")
            self._refuse_if_stopped(did, operator, "approve", self.names[p.action], reason, now)
            self._human(did, operator, "approve", reason, now=now)
            del self.pending[did]
            run = self._act_background if self.conf.human.background else self._act
            run(did, p.action, time.time() if now is None else now,
                via=f"approved by {operator}")
            self.metrics.pending.set(len(self.pending))
            return self.log.record(did) or {}

    def reject(self, did: str, operator: str, reason: str, now: float | None = None
               ) -> dict[str, Any]:
        with self.lock:
            if did not in self.pending:
                self._known(did)
                raise NotPending(f"decision {did} is not pending approval")
            self._human(did, operator, "reject", reason, now=now)
            del self.pending[did]
            self.metrics.pending.set(len(self.pending))
            return self.log.record(did) or {}

    def override(self, did: str, operator: str, action: str, reason: str,
                 now: float | None = None) -> dict[str, Any]:
        """Replace any decision's action with the operator's (pending or already taken)."""
        with self.lock:
            if action not in self.names:
                from healgym.errors import did_you_mean

                raise InvalidAction(
                    f"unknown action {action!r}.{did_you_mean(action, self.names)}")
            idx = self.names.index(action)
            if idx != self.guard.safe:  # an override to noop executes nothing: always allowed
                self._refuse_if_stopped(did, operator, "override", action, reason, now)
            self._human(did, operator, "override", reason, action, now=now)
            self.pending.pop(did, None)
            if idx != self.guard.safe:
                # a new idempotency key: the override is a new action on the same decision
                run = self._act_background if self.conf.human.background else self._act
                run(did, idx, time.time() if now is None else now,
                    via=f"override by {operator}", key=f"{did}:override:{action}")
            self.metrics.pending.set(len(self.pending))
            return self.log.record(did) or {}

    def pause(self, operator: str, reason: str) -> None:
        with self.lock:
            self.paused = True
            self._control("pause", operator, reason)
            self.alert(f"paused by {operator}: {reason}", "paused", operator=operator)

    def resume(self, operator: str, reason: str) -> None:
        with self.lock:
            self.paused = False
            self._control("resume", operator, reason)
            self.alert(f"resumed by {operator}: {reason}", "resumed", operator=operator)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the background actions (approvals, overrides) to finish; True if none is
        left running."""
        end = None if timeout is None else time.time() + timeout
        for t in list(self.workers):
            t.join(None if end is None else max(end - time.time(), 0.0))
        self.workers = [t for t in self.workers if t.is_alive()]
        return not self.workers

    def close(self, timeout: float = 30.0) -> None:
        """Stop: background actions get ``timeout`` s to finish (one still running is logged
        as interrupted), an incident still open is logged as unresolved (``open``: the adapter
        stopped before it recovered), then the actuators close."""
        if not self.wait_idle(timeout):
            for did, name in list(self.running.items()):
                self.log.event(did, "interrupted", {"detail": f"{name} still running when the "
                                                    "adapter stopped; check the target"})
        inc = self.incident
        if inc is not None and inc.trail:
            now = time.time() if self.last_now is None else self.last_now
            self.log.event(inc.trail[0], "incident", {**inc.summary(now, False), "open": True},
                           at=now)
            self.incident = None
        for wrapped in {id(w): w for w in self.actuators.values()}.values():
            close = getattr(wrapped.actuator, "close", None)
            if callable(close):
                close()
            wrapped.close()

    def run(self, stop: threading.Event | None = None, max_steps: int | None = None) -> None:
        stop = stop or threading.Event()
        n = 0
        while not stop.is_set() and (max_steps is None or n < max_steps):
            t = time.time()
            self.step(t)
            n += 1
            stop.wait(max(self.conf.interval_s - (time.time() - t), 0.0))

