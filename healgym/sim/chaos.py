"""Chaos schedules: random arrivals with per-fault rates, and scenario files.

A scenario file is YAML that any user can pass by path::

    name: bad-deploy-then-surge
    description: A bad model deploy, then a traffic surge while it is unfixed.
    random_chaos: false        # also draw random arrivals? (default false)
    faults:
      - at: 120                # seconds after the episode starts
        fault: bad_model_deploy
        stage: serve           # default: the fault's preferred stage in this pipeline
        severity: 1.0          # default 1.0
      - {at: 600, fault: request_surge, stage: serve, severity: 0.8}

Same seed, same episode, exactly: every random draw comes from the episode's generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from healgym.errors import ConfigError, did_you_mean, reject_unknown_keys, role_hint
from healgym.sim.faults import BY_NAME, FAULT_NAMES


@dataclass(frozen=True)
class FaultEvent:
    """One scheduled fault: at ``at_s`` seconds, fault ``fault`` on stage index ``stage``."""

    at_s: float
    fault: str
    stage: int
    severity: float = 1.0
    source: str = "chaos"  # "chaos", "scenario", "cascade" or "replay"


@dataclass(frozen=True)
class ChaosConfig:
    """Random fault arrivals. ``rates`` overrides per-fault rates (arrivals per hour)."""

    enabled: bool = True
    rate_scale: float = 1.0
    rates: dict[str, float] = field(default_factory=dict)
    severity: tuple[float, float] = (0.6, 1.0)
    warmup_s: float = 60.0

    @classmethod
    def from_value(cls, value: bool | dict[str, Any] | ChaosConfig | None) -> ChaosConfig:
        if isinstance(value, ChaosConfig):
            return value
        if value is None or value is True:
            return cls()
        if value is False:
            return cls(enabled=False)
        if not isinstance(value, dict):
            raise ConfigError(f"chaos: expected true, false or a mapping; got {value!r}")
        known = {"enabled", "rate_scale", "rates", "severity", "warmup_s"}
        reject_unknown_keys(value, known, "chaos")
        rates = dict(value.get("rates", {}))
        for name, r in rates.items():
            if name not in FAULT_NAMES:
                raise ConfigError(
                    f"chaos.rates: unknown fault {name!r}.{did_you_mean(name, FAULT_NAMES)}"
                )
            if float(r) < 0:
                raise ConfigError(f"chaos.rates.{name} = {r!r}: a rate must be >= 0 per hour")
        sev = tuple(value.get("severity", (0.6, 1.0)))
        if len(sev) != 2 or not 0 < sev[0] <= sev[1]:
            raise ConfigError(
                f"chaos.severity = {sev!r}: expected [low, high] with 0 < low <= high")
        return cls(enabled=bool(value.get("enabled", True)),
                   rate_scale=float(value.get("rate_scale", 1.0)), rates=rates,
                   severity=(float(sev[0]), float(sev[1])),
                   warmup_s=float(value.get("warmup_s", 60.0)))

    def rate(self, fault: str) -> float:
        return self.rate_scale * float(self.rates.get(fault, BY_NAME[fault].rate_per_h))


def stage_choices(fault: str, stages: list[str]) -> list[int]:
    """Stage indices a fault may land on: its preferred stages present, else every stage."""
    preferred = [i for i, s in enumerate(stages) if s in BY_NAME[fault].stages]
    return preferred or list(range(len(stages)))


@dataclass(frozen=True)
class Scenario:
    """A scripted chaos schedule, usually loaded from a YAML file."""

    name: str
    faults: tuple[dict[str, Any], ...]
    description: str = ""
    random_chaos: bool = False
    path: str | None = None

    def events(self, stages: list[str]) -> list[FaultEvent]:
        """Resolve stage names against the pipeline; errors name the entry and key."""
        out = []
        where = self.path or f"scenario {self.name!r}"
        for i, f in enumerate(self.faults):
            stage_name = f.get("stage")
            if stage_name is None:
                stage = stage_choices(f["fault"], stages)[0]
            elif stage_name in stages:
                stage = stages.index(stage_name)
            else:
                raise ConfigError(
                    f"{where}: faults[{i}].stage = {stage_name!r} is not a stage of this "
                    f"pipeline.{did_you_mean(str(stage_name), stages)} Stages: {stages}."
                    f"{role_hint(str(stage_name), stages)}"
                )
            out.append(FaultEvent(float(f["at"]), f["fault"], stage,
                                  float(f.get("severity", 1.0)), "scenario"))
        return out


def load_scenario(source: str | Path | dict[str, Any] | Scenario) -> Scenario:
    """Load and validate a scenario from a YAML path, a mapping, or pass a Scenario through."""
    if isinstance(source, Scenario):
        return source
    path: str | None = None
    if isinstance(source, (str, Path)):
        path = str(source)
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"scenario file {path} not found; pass the path of a YAML file "
                              "(see configs/scenarios/ for examples)")
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    else:
        data = source
    where = path or "scenario"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'faults' list; "
                          f"got {type(data).__name__}")
    known = {"name", "description", "random_chaos", "faults", "seed"}
    reject_unknown_keys(data, known, where)
    faults = data.get("faults")
    if not isinstance(faults, list) or not faults:
        raise ConfigError(f"{where}: key 'faults' must be a non-empty list of "
                          "{at, fault, stage, severity} entries")
    entry_keys = {"at", "fault", "stage", "severity"}
    for i, f in enumerate(faults):
        if not isinstance(f, dict):
            raise ConfigError(f"{where}: faults[{i}] is {f!r}; expected a mapping")
        reject_unknown_keys(f, entry_keys, f"{where}: faults[{i}]")
        for key in ("at", "fault"):
            if key not in f:
                raise ConfigError(f"{where}: faults[{i}] is missing required key {key!r}")
        if f["fault"] not in FAULT_NAMES:
            raise ConfigError(f"{where}: faults[{i}].fault = {f['fault']!r} is not a known fault."
                              f"{did_you_mean(str(f['fault']), FAULT_NAMES)} "
                              f"Known faults: {list(FAULT_NAMES)}")
        for key, lo in (("at", 0.0), ("severity", 1e-9)):
            if key in f:
                try:
                    v = float(f[key])
                except (TypeError, ValueError):
                    raise ConfigError(f"{where}: faults[{i}].{key} = {f[key]!r} is not a number"
                                      ) from None
                if not np.isfinite(v) or v < lo:
                    raise ConfigError(f"{where}: faults[{i}].{key} = {f[key]!r} must be a finite "
                                      f"number >= {lo:g}")
    return Scenario(name=str(data.get("name", Path(path).stem if path else "scenario")),
                    faults=tuple(dict(f) for f in faults),
                    description=str(data.get("description", "")),
                    random_chaos=bool(data.get("random_chaos", False)), path=path)
