"""The runbook baseline: threshold rules in YAML, as ops teams write them.

See ``configs/runbooks/classic.yaml`` for the format. Rules are checked in order; the first whose
condition holds, whose action is allowed by the mask, and whose action has not been taken within
``cooldown_s`` fires. Its explanation names the rule, the signal and the value seen.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.policy import Decision
from healgym.errors import ConfigError, did_you_mean
from healgym.sim.signals import decode, signal_names

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Rule:
    name: str
    signal: str
    op: str
    threshold: float
    action: str


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
    """Static threshold rules over the decoded observation (:mod:`healgym.sim.signals`)."""

    def __init__(self, env: Any, runbook: str | Path | dict[str, Any]) -> None:
        """``env``: the env the runbook runs on, or its :class:`PipelineModel`."""
        data = load_runbook(runbook)
        self.model = env if hasattr(env, "layout") else env.unwrapped.model
        self.name = str(data.get("name", "runbook"))
        self.cooldown_s = float(data.get("cooldown_s", 300.0))
        known = set(signal_names(self.model)) | {"staleness_s"}
        metrics = {n.split(".", 1)[1] for n in known if "." in n}
        self.rules: list[Rule] = []
        where = data["_where"]
        for i, r in enumerate(data["rules"]):
            for key in ("signal", "op", "threshold", "action"):
                if key not in r:
                    raise ConfigError(f"{where}: rules[{i}] is missing {key!r}")
            sig, op = str(r["signal"]), str(r["op"])
            if op not in OPS:
                raise ConfigError(f"{where}: rules[{i}].op = {op!r}; use one of {list(OPS)}")
            ok = (sig.startswith("*.") and sig[2:] in metrics) or sig in known
            if not ok:
                raise ConfigError(f"{where}: rules[{i}].signal = {sig!r} is not a signal of this "
                                  f"pipeline.{did_you_mean(sig, known)}")
            action = str(r["action"])
            names = self.model.action_names
            probe = action.replace("{stage}", self.model.stages[0])
            if probe not in names:
                raise ConfigError(f"{where}: rules[{i}].action = {action!r} is not an action."
                                  f"{did_you_mean(probe, names)} Actions: {names}")
            self.rules.append(Rule(str(r.get("name", f"rule{i}")), sig, op,
                                   float(r["threshold"]), action))
        self._last: dict[int, float] = {}
        self._t = 0.0

    def reset(self) -> None:
        self._last = {}
        self._t = 0.0

    def with_thresholds(self, thresholds: dict[str, float]) -> RunbookAgent:
        """A copy whose rules (by name) use other thresholds; for the tuner."""
        clone = object.__new__(RunbookAgent)
        clone.__dict__.update(self.__dict__)
        clone.rules = [Rule(r.name, r.signal, r.op, thresholds.get(r.name, r.threshold), r.action)
                       for r in self.rules]
        clone._last = {}
        return clone

    def _value(self, signals: dict[str, float], rule: Rule) -> tuple[float, str | None]:
        if not rule.signal.startswith("*."):
            return signals[rule.signal], None
        metric = rule.signal[2:]
        values = [(signals[f"{s}.{metric}"], s) for s in self.model.stages]
        pick = max if rule.op in (">", ">=") else min
        value, stage = pick(values)
        return value, stage

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        t = float(info.get("time_s", self._t))
        self._t = t
        signals = decode(self.model, obs)
        mask = info.get("action_mask")
        names = self.model.action_names
        for rule in self.rules:
            value, stage = self._value(signals, rule)
            if not OPS[rule.op](value, rule.threshold):
                continue
            name = rule.action.replace("{stage}", stage or self.model.stages[0])
            a = names.index(name)
            if mask is not None and not mask[a]:
                continue
            if t - self._last.get(a, -np.inf) < self.cooldown_s:
                continue
            self._last[a] = t
            return Decision(a, {"rule": rule.name, "signal": rule.signal, "value": value,
                                "threshold": rule.threshold, "action": name})
        return Decision(0, {"rule": None})


def load_runbook_policy(path: Path, model: Any) -> RunbookAgent:
    """The ``runbook-yaml`` policy format (:mod:`healgym.policy`): a runbook file."""
    return RunbookAgent(model, path)
