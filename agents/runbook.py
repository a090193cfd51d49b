"""The runbook baseline: threshold rules in YAML, as ops teams write them.

See ``configs/runbooks/classic.yaml`` for the basic format and ``configs/runbooks/expert.yaml``
for everything a real alerting stack has. Rules are checked in order; the first whose condition
holds, whose action is allowed by the mask, and whose action has not been taken within
``cooldown_s`` fires. Its explanation names the rule, the signal and the value seen.

A rule is ``{name, signal, op, threshold, action}``, plus, optionally, what Prometheus alerting
rules and on-call runbooks have:

* ``for_s``: the condition must have held continuously this long (Prometheus's ``for:``).
* ``rate_window_s``: the condition is on the signal's change per minute over this window
  (PromQL's ``deriv``), not on its value: ``{signal: accuracy, rate_window_s: 60, op: "<",
  threshold: -0.02}`` is "accuracy falling faster than 0.02 a minute".
* ``all``: more conditions that must hold too, each ``{signal, op, threshold}`` (and optionally
  ``rate_window_s``); ``{stage}`` in their signal is the stage the rule's own signal bound.
* ``after``: a counter, ``{action, count, within_s}``: the rule fires only once ``action`` (with
  ``{stage}``) was taken at least ``count`` times in the last ``within_s`` seconds ("restarted
  twice in 10 minutes: roll back").
* ``actions``: an escalation ladder in place of ``action``: the first firing takes the first
  rung; firing again within ``ladder_window_s`` (default 1800 s) of the previous rung takes the
  next one ("restart; if it is still broken, roll back; then page a human"), but never while
  an action is in flight (the previous rung has not had its effect yet: a ladder climbs on a
  fix that did not work, not on one still running).

Files written for the basic format keep working unchanged.
"""

from __future__ import annotations

import operator
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.policy import Decision
from healgym.errors import ConfigError, did_you_mean, role_hint
from healgym.sim.signals import decode, signal_names

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
RULE_KEYS = {"name", "signal", "op", "threshold", "action", "actions", "for_s", "rate_window_s",
             "all", "after", "ladder_window_s"}


@dataclass(frozen=True)
class Cond:
    signal: str
    op: str
    threshold: float
    rate_window_s: float | None = None


@dataclass(frozen=True)
class Counter:
    action: str
    count: int
    within_s: float


@dataclass(frozen=True)
class Rule:
    name: str
    signal: str
    op: str
    threshold: float
    action: str
    for_s: float = 0.0
    rate_window_s: float | None = None
    also: tuple[Cond, ...] = ()
    after: Counter | None = None
    ladder: tuple[str, ...] = ()
    ladder_window_s: float = 1800.0

    @property
    def rungs(self) -> tuple[str, ...]:
        return self.ladder or (self.action,)


def load_runbook(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Load and check a runbook mapping (a YAML path or a mapping)."""
    where = str(source) if not isinstance(source, dict) else "runbook"
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"runbook file {path} not found (see configs/runbooks/)")
        data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise ConfigError(f"{where}: a runbook needs a non-empty 'rules' list")
    data = dict(data)
    data["_where"] = where
    return data


class RunbookAgent:
    """Threshold rules over the decoded observation (:mod:`healgym.sim.signals`), with the
    alerting features of the module docstring."""

    def __init__(self, env: Any, runbook: str | Path | dict[str, Any]) -> None:
        """``env``: the env the runbook runs on, or its :class:`PipelineModel`."""
        data = load_runbook(runbook)
        self.model = env if hasattr(env, "layout") else env.unwrapped.model
        self.name = str(data.get("name", "runbook"))
        self.cooldown_s = float(data.get("cooldown_s", 300.0))
        self._known = set(signal_names(self.model)) | {"staleness_s"}
        self._metrics = {n.split(".", 1)[1] for n in self._known if "." in n}
        self._where = data["_where"]
        self.rules: list[Rule] = [self._rule(i, r) for i, r in enumerate(data["rules"])]
        windows = [w for r in self.rules for w in
                   (r.rate_window_s, *(c.rate_window_s for c in r.also)) if w]
        self._horizon = max(windows, default=0.0)
        self.reset()

    # ------------------------------------------------------------------ parsing
    def _signal(self, where: str, sig: str) -> str:
        probe = sig.replace("{stage}", self.model.stages[0])
        ok = (probe.startswith("*.") and probe[2:] in self._metrics) or probe in self._known
        if not ok:
            raise ConfigError(f"{where}.signal = {sig!r} is not a signal of this pipeline."
                              f"{did_you_mean(probe, self._known)}"
                              f"{role_hint(probe.split('.', 1)[0], self.model.stages)}")
        return sig

    def _action(self, where: str, action: str) -> str:
        names = self.model.action_names
        probe = action.replace("{stage}", self.model.stages[0])
        if probe not in names:
            raise ConfigError(f"{where} = {action!r} is not an action."
                              f"{did_you_mean(probe, names)} Actions: {names}")
        return action

    def _cond(self, where: str, c: Any) -> Cond:
        if not isinstance(c, dict):
            raise ConfigError(f"{where}: expected a mapping {{signal, op, threshold}}; got {c!r}")
        for key in ("signal", "op", "threshold"):
            if key not in c:
                raise ConfigError(f"{where} is missing {key!r}")
        unknown = set(c) - {"signal", "op", "threshold", "rate_window_s"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; a condition has "
                              "signal, op, threshold and optionally rate_window_s")
        op = str(c["op"])
        if op not in OPS:
            raise ConfigError(f"{where}.op = {op!r}; use one of {list(OPS)}")
        window = c.get("rate_window_s")
        if window is not None and float(window) <= 0:
            raise ConfigError(f"{where}.rate_window_s = {window!r}: must be > 0 seconds")
        return Cond(self._signal(where, str(c["signal"])), op, _number(where, c, "threshold"),
                    None if window is None else float(window))

    def _rule(self, i: int, r: Any) -> Rule:
        where = f"{self._where}: rules[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: expected a mapping; got {r!r}")
        unknown = set(r) - RULE_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(key, RULE_KEYS)} "
                              f"Known: {sorted(RULE_KEYS)}")
        if ("action" in r) == ("actions" in r):
            raise ConfigError(f"{where}: give either 'action' or 'actions' (a ladder)")
        head = self._cond(where, {k: r[k] for k in ("signal", "op", "threshold",
                                                     "rate_window_s") if k in r})
        rungs = [r["action"]] if "action" in r else r["actions"]
        if not isinstance(rungs, list) or not rungs:
            raise ConfigError(f"{where}.actions: expected a non-empty list of actions")
        ladder = tuple(self._action(f"{where}.actions[{j}]" if "actions" in r else
                                    f"{where}.action", str(a)) for j, a in enumerate(rungs))
        also = r.get("all", [])
        if not isinstance(also, list):
            raise ConfigError(f"{where}.all: expected a list of conditions")
        after = None
        if "after" in r:
            a = r["after"]
            if not isinstance(a, dict) or set(a) != {"action", "count", "within_s"}:
                raise ConfigError(f"{where}.after: expected {{action, count, within_s}}; "
                                  f"got {a!r}")
            after = Counter(self._action(f"{where}.after.action", str(a["action"])),
                            int(_number(f"{where}.after", a, "count")),
                            _number(f"{where}.after", a, "within_s"))
        for_s = _number(where, r, "for_s") if "for_s" in r else 0.0
        if for_s < 0:
            raise ConfigError(f"{where}.for_s = {for_s!r}: must be >= 0 seconds")
        return Rule(str(r.get("name", f"rule{i}")), head.signal, head.op, head.threshold,
                    ladder[0], for_s=for_s, rate_window_s=head.rate_window_s,
                    also=tuple(self._cond(f"{where}.all[{j}]", c) for j, c in enumerate(also)),
                    after=after, ladder=ladder if len(ladder) > 1 else (),
                    ladder_window_s=_number(where, r, "ladder_window_s")
                    if "ladder_window_s" in r else 1800.0)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self._last: dict[int, float] = {}
        self._t = 0.0
        self._history: deque[tuple[float, dict[str, float]]] = deque()
        self._held: dict[str, float] = {}
        self._taken: deque[tuple[float, str]] = deque()
        self._rung: dict[str, tuple[int, float]] = {}

    def with_thresholds(self, thresholds: dict[str, float]) -> RunbookAgent:
        """A copy whose rules (by name) use other thresholds; for the tuner."""
        clone = object.__new__(RunbookAgent)
        clone.__dict__.update(self.__dict__)
        clone.rules = [replace(r, threshold=thresholds.get(r.name, r.threshold))
                       for r in self.rules]
        clone.reset()
        return clone

    # ------------------------------------------------------------------ evaluation
    def _past(self, t: float, window: float) -> tuple[float, dict[str, float]] | None:
        """The oldest remembered signals at most ``window`` seconds old (None: no history)."""
        for tp, sig in self._history:
            if t - tp <= window + 1e-9:
                return (tp, sig) if tp < t else None
        return None

    def _read(self, signals: dict[str, float], t: float, name: str,
              window: float | None) -> float | None:
        if window is None:
            return signals[name]
        past = self._past(t, window)
        if past is None:
            return None
        return (signals[name] - past[1][name]) / (t - past[0]) * 60.0

    def _value(self, signals: dict[str, float], t: float, c: Cond | Rule,
               stage: str | None = None) -> tuple[float | None, str | None]:
        sig = c.signal.replace("{stage}", stage) if stage else c.signal
        if not sig.startswith("*."):
            return self._read(signals, t, sig, c.rate_window_s), stage
        metric = sig[2:]
        values = [(v, s) for s in self.model.stages
                  if (v := self._read(signals, t, f"{s}.{metric}", c.rate_window_s)) is not None]
        if not values:
            return None, None
        pick = max if c.op in (">", ">=") else min
        value, bound = pick(values)
        return value, bound

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        t = float(info.get("time_s", self._t))
        if t < self._t:  # a new episode on a policy nobody reset
            self.reset()
        self._t = t
        signals = decode(self.model, obs)
        mask = info.get("action_mask")
        names = self.model.action_names
        decision = Decision(0, {"rule": None})
        for rule in self.rules:
            value, stage = self._value(signals, t, rule)
            if value is None or not OPS[rule.op](value, rule.threshold):
                self._held.pop(rule.name, None)
                continue
            since = self._held.setdefault(rule.name, t)
            if t - since < rule.for_s or decision.action:
                continue
            bound = stage or self.model.stages[0]
            if not all((v := self._value(signals, t, c, bound)[0]) is not None
                       and OPS[c.op](v, c.threshold) for c in rule.also):
                continue
            if rule.after is not None:
                want = rule.after.action.replace("{stage}", bound)
                n = sum(1 for tp, a in self._taken if a == want and t - tp <= rule.after.within_s)
                if n < rule.after.count:
                    continue
            rung, t_rung = self._rung.get(rule.name, (-1, -np.inf))
            if rung >= 0 and t - t_rung <= rule.ladder_window_s \
                    and signals.get("action_in_flight", 0.0) > 0.5:
                continue  # the previous rung is still running
            rung = min(rung + 1, len(rule.rungs) - 1) if t - t_rung <= rule.ladder_window_s \
                else 0
            name = rule.rungs[rung].replace("{stage}", bound)
            a = names.index(name)
            if mask is not None and not mask[a]:
                continue
            if t - self._last.get(a, -np.inf) < self.cooldown_s:
                continue
            self._last[a] = t
            self._rung[rule.name] = (rung, t)
            self._taken.append((t, name))
            why: dict[str, Any] = {"rule": rule.name, "signal": rule.signal, "value": value,
                                   "threshold": rule.threshold, "action": name}
            if rule.for_s:
                why["held_s"] = t - since
            if rule.ladder:
                why["rung"] = rung
            decision = Decision(a, why)
        self._history.append((t, signals))
        while self._history and t - self._history[0][0] > self._horizon + 60.0:
            self._history.popleft()
        while self._taken and t - self._taken[0][0] > 86_400.0:
            self._taken.popleft()
        return decision


def _number(where: str, data: dict[str, Any], key: str) -> float:
    try:
        return float(data[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key} = {data[key]!r}: expected a number") from None


def load_runbook_policy(path: Path, model: Any) -> RunbookAgent:
    """The ``runbook-yaml`` policy format (:mod:`healgym.policy`): a runbook file."""
    return RunbookAgent(model, path)
