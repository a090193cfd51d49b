"""Guard: what a proposed action must pass before it runs.

Checks, in order (the first that fails decides): kill switch, allowed actions, minimum
confidence, cooldown per target, rate limit, rolling hourly budget, hourly cost budget. A blocked
action becomes the safe default (``guard.safe_default``, noop) with the reason. An action that
passes but whose risk is at or above ``guard.approval_risk`` needs a human's approval. Shadow mode
passes the verdicts through but marks the decision not to be executed.

Every verdict is recorded in the decision log, pass or fail.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from healgym.serving.config import GuardConf

RISK_ORDER = {"low": 0, "medium": 1, "high": 2, "never": 3}
#: Default risk per action kind (guard.risk overrides, by action or kind name).
DEFAULT_RISK = {"noop": "low", "restart": "medium", "scale_up": "low", "scale_down": "medium",
                "rollback": "high", "retrain": "medium", "backfill": "low",
                "switch_light": "medium", "switch_back": "medium", "shed_load": "high",
                "escalate": "low"}


@dataclass(frozen=True)
class ActionInfo:
    index: int
    name: str
    kind: str
    target: str  # the stage, or "pipeline"
    cost: float


def action_infos(model: Any) -> list[ActionInfo]:
    out = []
    for a in model.actions:
        kind = model.kinds[a.kind]
        out.append(ActionInfo(a.index, a.name, kind.name,
                              model.stages[a.stage] if a.stage >= 0 else "pipeline",
                              float(kind.cost)))
    return out


@dataclass(frozen=True)
class Verdict:
    check: str
    ok: bool
    reason: str = ""


@dataclass
class GuardResult:
    proposed: int
    action: int  # what may run (the safe default when blocked)
    verdicts: list[Verdict]
    blocked: bool
    needs_approval: bool
    shadow: bool

    def as_dict(self) -> dict[str, Any]:
        return {"blocked": self.blocked, "needs_approval": self.needs_approval,
                "shadow": self.shadow,
                "verdicts": [{"check": v.check, "ok": v.ok, "reason": v.reason}
                             for v in self.verdicts]}


@dataclass
class Guard:
    conf: GuardConf
    actions: list[ActionInfo]
    history: deque[tuple[float, int]] = field(default_factory=deque)  # (time, action) executed

    def __post_init__(self) -> None:
        names = {a.name for a in self.actions}
        kinds = {a.kind for a in self.actions}
        unknown = [n for n in (self.conf.allowed or []) if n not in names]
        unknown += [n for n in self.conf.risk if n not in names | kinds]
        if self.conf.safe_default not in names:
            unknown.append(self.conf.safe_default)
        if unknown:
            from healgym.errors import ConfigError, did_you_mean

            raise ConfigError(f"guard: unknown action names {unknown}."
                              f"{did_you_mean(unknown[0], sorted(names | kinds))} "
                              f"Actions: {sorted(names)}")
        self.safe = next(a.index for a in self.actions if a.name == self.conf.safe_default)

    def risk(self, a: ActionInfo) -> str:
        return self.conf.risk.get(a.name) or self.conf.risk.get(a.kind) or \
            DEFAULT_RISK.get(a.kind, "high")

    def check(self, action: int, now: float, confidence: float = 1.0,
              incident_open: bool = True) -> GuardResult:
        c, a = self.conf, self.actions[action]
        self._forget(now)
        verdicts: list[Verdict] = []

        def fail(check: str, reason: str) -> GuardResult:
            verdicts.append(Verdict(check, False, reason))
            return GuardResult(action, self.safe, verdicts, True, False, c.shadow)

        if action == self.safe:
            return GuardResult(action, action, [Verdict("safe_default", True)], False, False,
                               c.shadow)
        if c.kill_switch_file and os.path.exists(c.kill_switch_file):
            return fail("kill_switch", f"kill switch {c.kill_switch_file} is present")
        verdicts.append(Verdict("kill_switch", True))
        if c.allowed is not None and a.name not in c.allowed:
            return fail("allowed", f"{a.name} is not in guard.allowed")
        verdicts.append(Verdict("allowed", True))
        if c.incident_only:
            if not incident_open:
                return fail("incident_only", "no incident is open (the SLO holds) and "
                                             "guard.incident_only is set")
            verdicts.append(Verdict("incident_only", True))
        if confidence < c.min_confidence:
            return fail("confidence", f"confidence {confidence:.2f} < guard.min_confidence "
                                      f"{c.min_confidence:.2f}")
        verdicts.append(Verdict("confidence", True))
        last_on_target = max((t for t, i in self.history
                              if self.actions[i].target == a.target), default=None)
        if last_on_target is not None and now - last_on_target < c.cooldown_s:
            return fail("cooldown", f"{a.target} was acted on {now - last_on_target:.0f} s ago "
                                    f"(guard.cooldown_s={c.cooldown_s:g})")
        verdicts.append(Verdict("cooldown", True))
        recent = [t for t, _ in self.history if now - t < c.rate_window_s]
        if len(recent) >= c.rate_limit:
            return fail("rate_limit", f"{len(recent)} actions in the last "
                                      f"{c.rate_window_s:g} s (guard.rate_limit={c.rate_limit})")
        verdicts.append(Verdict("rate_limit", True))
        hour = [i for t, i in self.history if now - t < 3600.0]
        if len(hour) >= c.hourly_budget:
            return fail("hourly_budget", f"{len(hour)} actions in the last hour "
                                         f"(guard.hourly_budget={c.hourly_budget})")
        verdicts.append(Verdict("hourly_budget", True))
        if c.cost_budget_per_hour is not None:
            spent = sum(self.actions[i].cost for i in hour)
            if spent + a.cost > c.cost_budget_per_hour:
                return fail("cost_budget", f"{spent:g} spent this hour + {a.cost:g} > "
                                           f"guard.cost_budget_per_hour={c.cost_budget_per_hour:g}")
            verdicts.append(Verdict("cost_budget", True))
        risk = self.risk(a)
        needs = RISK_ORDER[risk] >= RISK_ORDER[c.approval_risk]
        verdicts.append(Verdict("risk", True, f"{risk}" + (" (needs approval)" if needs else "")))
        return GuardResult(action, action, verdicts, False, needs, c.shadow)

    def record(self, action: int, now: float) -> None:
        """An action was executed at ``now`` (the budgets count it)."""
        if action != self.safe:
            self.history.append((now, action))

    def _forget(self, now: float) -> None:
        horizon = max(3600.0, self.conf.rate_window_s, self.conf.cooldown_s)
        while self.history and now - self.history[0][0] >= horizon:
            self.history.popleft()
