"""The serving adapter's settings: one YAML file, validated by pydantic.

An unknown key or a wrong type fails at load time naming the file and the key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from healgym.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConf(Strict):
    """Where metrics come from. ``queries`` maps a signal to a PromQL template (``{stage}`` is
    replaced by each stage's name) for per-stage metrics (``latency_p95_ms``, ``error_rate``,
    ``cpu_pct``, ``memory_pct``, ``throughput_rps``, ``queue_depth``, ``replicas``) or to a plain
    query for pipeline signals (``accuracy``, ``drift_ks``, ``drift_psi``, ``null_rate``,
    ``schema_error_rate``, ``staleness_s``, ``cost_factor``, ``pred_shift``: the PSI of the
    prediction distribution against the model's reference), and optionally
    ``last_deploy_unix_s`` (when the model or release last changed, unix seconds: a deploy
    annotation, e.g. ``max(model_deploy_timestamp_seconds)``; without it the observation's
    ``since_deploy_h`` counts from the adapter's own rollbacks and retrains). ``scrape`` mode
    reads the same names (with a ``stage`` label) straight from /metrics endpoints."""

    kind: Literal["prometheus", "scrape"] = "prometheus"
    url: str = "http://127.0.0.1:9090"
    targets: list[str] = Field(default_factory=list)  # scrape: /metrics URLs
    queries: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = 5.0
    max_age_s: float = 60.0  # older samples are stale
    required: list[str] = Field(default_factory=lambda: [
        "latency_p95_ms", "error_rate", "throughput_rps"])
    defaults: dict[str, float] = Field(default_factory=dict)  # for signals not measured


class GuardConf(Strict):
    allowed: list[str] | None = None  # action names the adapter may take; None: all
    cooldown_s: float = 300.0  # between two actions on the same target
    rate_limit: int = 3  # at most this many actions ...
    rate_window_s: float = 600.0  # ... per this window
    hourly_budget: int = 10  # actions per rolling hour
    cost_budget_per_hour: float | None = None  # in the env's action-cost units
    approval_risk: Literal["low", "medium", "high", "never"] = "high"  # this risk and above
    risk: dict[str, Literal["low", "medium", "high"]] = Field(default_factory=dict)
    min_confidence: float = 0.0
    shadow: bool = False  # decide and log, never act
    kill_switch_file: str | None = None  # while this file exists, nothing is executed
    safe_default: str = "noop"
    # act only while an incident is open (the SLO is violated): a proposal on a healthy pipeline
    # is blocked ("incident_only"). A learned policy's values in healthy states are the least
    # certain (costs of 1 under a crash's variance of hundreds): this keeps it from touching a
    # service that is fine, at the price of never acting ahead of an SLO breach (a leak's ramp).
    incident_only: bool = False


class HumanConf(Strict):
    mode: Literal["auto", "approval"] = "auto"  # approval: every action waits for a human
    timeout_s: float = 300.0
    on_timeout: str = "noop"  # the safe default taken when nobody answers
    #: an approved or overridden action runs in the background: the request returns at once
    #: and the loop keeps observing and deciding (false: in the request, as the simulator's
    #: replay of serving needs, to stay deterministic)
    background: bool = True


class ProcessSpec(Strict):
    cmd: list[str | int | float] = Field(min_length=1)  # the worker's command line
    workers: int = Field(1, ge=1)
    env: dict[str, Any] = Field(default_factory=dict)
    log: str | None = None  # a file collecting the processes' stdout and stderr


class ProcessParams(Strict):
    processes: dict[str, ProcessSpec] = Field(min_length=1)  # {stage: spec}
    #: one pid file per managed process: a restarted adapter stops the process groups an
    #: earlier adapter (killed with -9) left behind before it starts its own
    pid_dir: str = "results/serve/pids"
    #: a (re)started worker must still be running this long after its start, s (a worker that
    #: cannot take its port exits at once): else the action failed
    start_check_s: float = Field(1.0, ge=0.0)


class MlflowParams(Strict):
    model: str = Field(min_length=1)  # the registered model's name
    alias: str = "champion"
    tracking_uri: str | None = None


class GradualParams(Strict):
    """``type: gradual``: a rollback carried out gradually (a canary, as Argo Rollouts does):
    shift traffic back to the previous model version in ``steps``, analyse the SLO signals
    after each, abort (restoring the split) on failure, and on success move the registry alias
    to the previous version."""

    split_url: str = Field(min_length=1)  # the service's split endpoint (POST/GET {previous_share})
    steps: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 0.75, 1.0],
                               min_length=1)
    wait_s: float = Field(10.0, ge=0.0)  # after each step, before its analysis
    #: the analysis: a Prometheus server and instant queries that must hold after each step,
    #: {name: {query, min, max}} (e.g. accuracy: {query: min(model_accuracy), min: 0.85})
    prometheus_url: str = "http://127.0.0.1:9090"
    analysis: dict[str, dict[str, Any]] = Field(min_length=1)
    mlflow: MlflowParams | None = None  # the registry to finalise the rollback in


class WebhookParams(Strict):
    url: str = Field(min_length=1)  # where to POST
    headers: dict[str, str] = Field(default_factory=dict)
    token_env: str | None = None  # an environment variable holding a bearer token
    airflow_dag: str | None = None  # POST a DAG run of this DAG (Airflow's REST API)
    timeout_s: float = 10.0


class KubernetesParams(Strict):
    deployments: dict[str, str] = Field(min_length=1)  # {stage: deployment}
    namespace: str = "default"
    host: str | None = None  # an API server URL; else kubeconfig / in-cluster
    token: str | None = None
    image: dict[str, str] | None = None  # for set_image: {stage: image}


class LogParams(Strict):
    pass


#: Each actuator type's params model (its class: ``serving.actuators.TYPES``).
PARAMS: dict[str, type[Strict]] = {"process": ProcessParams, "mlflow": MlflowParams,
                                   "webhook": WebhookParams, "kubernetes": KubernetesParams,
                                   "log": LogParams, "gradual": GradualParams}


class ActuatorConf(Strict):
    """One actuator. ``type``: a key of :data:`PARAMS` (process | mlflow | webhook | kubernetes
    | log, and any type registered there); ``params`` are validated against that type's
    model."""

    type: str
    actions: list[str]  # the action names it carries out ("restart_serve", "rollback", ...)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = 30.0
    retries: int = 3
    breaker_failures: int = 5  # consecutive failures that open the circuit ...
    breaker_reset_s: float = 120.0  # ... for this long

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in PARAMS:
            raise ValueError(f"unknown actuator type {v!r}; known: {sorted(PARAMS)}")
        return v

    @model_validator(mode="after")
    def _params_fit_the_type(self) -> ActuatorConf:
        self.typed_params()
        return self

    def typed_params(self) -> Any:
        try:
            return PARAMS[self.type].model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors())
            raise ValueError(f"actuator type {self.type!r}: {problems}") from None


class ApiConf(Strict):
    """The override API. Every endpoint but ``/healthz`` needs a bearer token: the operator
    token (everything), or the read-only token (GET: decisions, metrics). Tokens come from the
    environment or from a file, never from the command line or the config itself."""

    host: str = "127.0.0.1"
    port: int = 8700
    #: a non-loopback ``host`` (e.g. 0.0.0.0) is refused unless this is set; then a warning
    allow_remote: bool = False
    token_env: str = "HEALGYM_TOKEN"  # the operator token: reads, approvals, overrides, pause
    token_file: str | None = None  # or read it from this file (first line)
    read_token_env: str | None = None  # a read-only token (dashboards, Prometheus scrapes)
    read_token_file: str | None = None


class ServeConf(Strict):
    policy: str | None = None  # a policy folder or models:/NAME@ALIAS (or --policy)
    stages: list[str] | None = None  # the pipeline's stages, as in training
    dataset: str | None = None  # the telemetry the policy was trained on (baselines)
    # the observation's history block, as in training (env.history=true): the adapter
    # remembers the readings before each one to fill it (healgym.sim.observation.HistoryBuilder)
    history: bool = False
    interval_s: float = 10.0
    #: after an action completes, its target must recover within this long, s (else the
    #: decision is logged ``not_verified`` and an alert is raised)
    verify_action_s: float = 120.0
    #: at start, no decision until every signal has a reading taken after the adapter started
    #: (a query answered from before the start, e.g. Prometheus' stale `up=0` for a service
    #: the adapter has just launched, would look like an outage)
    startup_grace: bool = True
    # how long an action kind takes on this infrastructure (default: the simulator's, e.g.
    # retrain 1200 s); while one runs the observation says so and only noop/escalate are offered
    durations_s: dict[str, float] = Field(default_factory=dict)
    verify_deadline_s: float = 600.0
    escalate_action: str = "escalate"
    decision_log: str = "sqlite:///decisions.db"  # or postgresql+psycopg://...
    source: SourceConf = Field(default_factory=SourceConf)
    guard: GuardConf = Field(default_factory=GuardConf)
    human: HumanConf = Field(default_factory=HumanConf)
    actuators: list[ActuatorConf] = Field(default_factory=list)
    api: ApiConf = Field(default_factory=ApiConf)


def load_config(path: str | Path | None = None, **overrides: Any) -> ServeConf:
    data: dict[str, Any] = {}
    where = str(path) if path else "serve config"
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such serve config") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a serve config is a mapping, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConf.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                 for e in exc.errors()]
        raise ConfigError(f"{where}: invalid serve config:\n" + "\n".join(lines)
                          + "\nsee docs/serving.md for every key") from exc
