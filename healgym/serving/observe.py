"""Observe: read the pipeline's metrics from Prometheus (HTTP API) or /metrics scrapes, check
them, and encode them with the env's own functions (:func:`healgym.sim.observation.encode`).

Missing required, stale or non-finite samples are never passed to the policy: :meth:`Observer.read`
returns the problems instead, and the adapter takes no action, raises an alert and logs why.
A per-stage metric that is not required and not measured takes the stage's healthy baseline (the
training telemetry's median); a pipeline signal takes ``source.defaults`` or its healthy value.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import requests

from healgym.serving.config import SourceConf
from healgym.sim.model import DEFAULT_REPLICAS, PipelineModel
from healgym.sim.observation import Signals

PIPELINE = ("accuracy", "drift_ks", "drift_psi", "null_rate", "schema_error_rate",
            "staleness_s", "cost_factor", "pred_shift")
HEALTHY = {"accuracy": 0.95, "drift_ks": 0.0, "drift_psi": 0.0, "null_rate": 0.0,
           "schema_error_rate": 0.0, "staleness_s": 0.0, "cost_factor": 1.0, "pred_shift": 0.0}

#: optional pipeline signals: when the model or release last changed (unix seconds)
DEPLOY_SIGNAL = "last_deploy_unix_s"

Key = tuple[str, str | None]  # (signal, stage or None)


@dataclass(frozen=True)
class Sample:
    value: float
    ts: float  # unix seconds the value was measured


class Source(Protocol):
    def read(self, stages: list[str]) -> dict[Key, Sample]: ...


class SourceError(Exception):
    """The metrics source could not be read at all."""


class PrometheusSource:
    """Instant queries against a Prometheus server's HTTP API (``/api/v1/query``)."""

    def __init__(self, conf: SourceConf) -> None:
        self.conf = conf
        self.session = requests.Session()

    def query(self, promql: str) -> list[dict[str, Any]]:
        try:
            r = self.session.get(f"{self.conf.url.rstrip('/')}/api/v1/query",
                                 params={"query": promql}, timeout=self.conf.timeout_s)
            r.raise_for_status()
            body = r.json()
        except (requests.RequestException, ValueError) as exc:
            raise SourceError(f"Prometheus at {self.conf.url}: {exc}") from exc
        if body.get("status") != "success":
            raise SourceError(f"Prometheus query {promql!r}: {body.get('error', body)}")
        return list(body["data"]["result"])

    def read(self, stages: list[str]) -> dict[Key, Sample]:
        out: dict[Key, Sample] = {}
        for signal, template in self.conf.queries.items():
            targets: list[str | None] = list(stages) if "{stage}" in template else [None]
            for stage in targets:
                promql = template.replace("{stage}", stage) if stage else template
                result = self.query(promql)
                if len(result) > 1:
                    raise SourceError(f"source.queries.{signal}: {promql!r} returned "
                                      f"{len(result)} series; aggregate it to one (sum, max)")
                if result:
                    ts, value = result[0]["value"]
                    out[(signal, stage)] = Sample(float(value), float(ts))
        return out


class ScrapeSource:
    """Reads /metrics endpoints directly; a sample named like a signal, with a ``stage``
    label for per-stage metrics, is that signal."""

    def __init__(self, conf: SourceConf) -> None:
        self.conf = conf
        self.session = requests.Session()

    def read(self, stages: list[str]) -> dict[Key, Sample]:
        from prometheus_client.parser import text_string_to_metric_families

        wanted = set(stages)
        out: dict[Key, Sample] = {}
        for url in self.conf.targets:
            try:
                r = self.session.get(url, timeout=self.conf.timeout_s)
                r.raise_for_status()
            except requests.RequestException as exc:
                raise SourceError(f"scrape {url}: {exc}") from exc
            now = time.time()
            for fam in text_string_to_metric_families(r.text):
                for s in fam.samples:  # pipeline signals by name; any other with a stage label
                    stage = s.labels.get("stage")
                    pipe = s.name in PIPELINE or s.name == DEPLOY_SIGNAL
                    if pipe or stage in wanted:
                        out[(s.name, None if pipe else stage)] = Sample(
                            float(s.value), float(s.timestamp or now))
        return out


def make_source(conf: SourceConf) -> Source:
    return PrometheusSource(conf) if conf.kind == "prometheus" else ScrapeSource(conf)


@dataclass
class AdapterState:
    """What the adapter itself knows and the observation needs."""

    last_action: int = 0
    last_action_t: float = -math.inf
    in_flight_until: float = -math.inf
    paged_until: float = -math.inf  # an escalation is with a human until then
    shedding_until: float = -math.inf  # load is shed until then
    deploy_t: float = -math.inf  # the adapter's last rollback or retrain completes then
    spent: float = 0.0  # the cost of the actions taken (against the reward's cost_budget)
    light_model: bool = False
    can_rollback: bool = False
    replicas: dict[str, float] = field(default_factory=dict)


@dataclass
class Reading:
    signals: Signals | None
    problems: list[str]
    samples: dict[str, float]  # "signal[stage]" -> value, for the decision log
    oldest_ts: float = math.inf  # when the oldest sample used was measured (unix s)


class Observer:
    def __init__(self, model: PipelineModel, conf: SourceConf, source: Source | None = None
                 ) -> None:
        self.model, self.conf = model, conf
        self.source = source or make_source(conf)

    def read(self, state: AdapterState, now: float | None = None) -> Reading:
        now = time.time() if now is None else now
        m = self.model
        try:
            samples = self.source.read(list(m.stages))
        except SourceError as exc:
            return Reading(None, [f"metrics source unreadable: {exc}"], {})
        problems: list[str] = []
        flat = {f"{k[0]}[{k[1]}]" if k[1] else k[0]: v.value for k, v in samples.items()}
        oldest = [math.inf]

        def get(signal: str, stage: str | None, fallback: float) -> float:
            s = samples.get((signal, stage))
            name = f"{signal}[{stage}]" if stage else signal
            if s is None:
                if signal in self.conf.required:
                    problems.append(f"{name}: missing")
                return fallback
            oldest[0] = min(oldest[0], s.ts)
            if not math.isfinite(s.value):
                problems.append(f"{name}: not finite ({s.value})")
                return fallback
            if now - s.ts > self.conf.max_age_s:
                problems.append(f"{name}: stale ({now - s.ts:.0f} s old > "
                                f"source.max_age_s={self.conf.max_age_s:g})")
            return s.value

        raw = np.array([[get(metric, stage, float(m.median[i, j]))
                         for j, metric in enumerate(m.metrics)]
                        for i, stage in enumerate(m.stages)])
        replicas = np.array([get("replicas", stage, state.replicas.get(stage,
                                                                       DEFAULT_REPLICAS))
                             for stage in m.stages])
        pipe: dict[str, Any] = {k: get(k, None, float(self.conf.defaults.get(k, HEALTHY[k])))
                                for k in PIPELINE}
        if problems:
            return Reading(None, problems, flat, oldest[0])
        deployed = samples.get((DEPLOY_SIGNAL, None))
        deploy_t = max(state.deploy_t if state.deploy_t <= now else -math.inf,
                       deployed.value if deployed is not None
                       and math.isfinite(deployed.value) else -math.inf)
        signals = Signals(
            raw=raw, replicas=replicas, **pipe,
            since_last_action_s=min(now - state.last_action_t, 3600.0),
            action_in_flight=now < state.in_flight_until, light_model=state.light_model,
            can_rollback=state.can_rollback, escalation_in_flight=now < state.paged_until,
            shedding=now < state.shedding_until, last_action=state.last_action,
            since_deploy_s=min(max(now - deploy_t, 0.0), 3600.0))
        return Reading(signals, [], flat, oldest[0])
