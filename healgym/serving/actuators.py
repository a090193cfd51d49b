"""Act: actuators behind one interface, with timeouts, retries with backoff, a circuit breaker
and idempotency keys.

``Actuator.execute(kind, target, key)``: the action's kind (``restart``, ``rollback``, ...), its
target (a stage name, or ``pipeline``) and the decision's id, never an action name to split
(stage names may contain ``_``). Each actuator remembers the keys it has carried out (and
webhooks and Kubernetes annotations carry it), so a retried or replayed decision never acts
twice. An actuator raises :class:`~healgym.errors.CannotAct` for what it cannot do (never
retried); :class:`Resilient` retries only transient failures (:func:`transient`: timeouts,
connection errors, HTTP 5xx, :class:`~healgym.errors.TransientActuatorError`).

Each type is one class and one :data:`TYPES` entry, with its own validated params model
(:data:`PARAMS`); :func:`build_actuators` is the one factory.

- :class:`ProcessActuator`: local processes from ``params.processes`` ({stage: {cmd: [...],
  workers: N, env: {...}, log: FILE}}; ``log`` collects their output); ``restart_<stage>``
  restarts the stage's processes, ``scale_up_<stage>`` / ``scale_down_<stage>`` change its
  number of worker processes.
- :class:`MlflowRegistryActuator`: ``rollback`` moves ``params.alias`` (champion) of
  ``params.model`` to the previous version; ``promote`` (any other action name) to the latest.
- :class:`WebhookActuator`: POSTs ``{action, target, decision_id}`` to ``params.url`` with an
  ``Idempotency-Key`` header (e.g. an Airflow DAG run for ``retrain`` / ``backfill``: use
  ``params.airflow_dag`` and the run id is the key, which Airflow itself deduplicates).
- :class:`KubernetesActuator`: the official client: ``restart_*`` is a rollout restart (the
  pod template's ``kubectl.kubernetes.io/restartedAt`` annotation), ``scale_up_*`` /
  ``scale_down_*`` patch the deployment's scale, ``set_image`` patches a container image.
  Verified against a local HTTP stand-in at the request level only (no cluster runs here).
- :class:`LogActuator`: records the action and does nothing (for dry runs and demos).
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import math
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from healgym.errors import ActuatorError, CannotAct, ConfigError, TransientActuatorError
from healgym.serving.config import PARAMS, ActuatorConf


@dataclass
class ActResult:
    ok: bool
    detail: str = ""
    error: str | None = None
    attempts: int = 1
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "error": self.error,
                "attempts": self.attempts, "duplicate": self.duplicate}


class Actuator(Protocol):
    def execute(self, kind: str, target: str, key: str) -> str: ...


def typed(kind: str, params: Any) -> Any:
    """An actuator's params as its validated model (a mapping is validated here)."""
    if isinstance(params, dict):
        return ActuatorConf(type=kind, actions=[], params=params).typed_params()  # type: ignore[arg-type]
    return params


def transient(exc: BaseException) -> bool:
    """Whether a failure may go away on retry: timeouts, refused or dropped connections, HTTP
    5xx (requests and the Kubernetes client), and what an actuator says is transient. Never
    :class:`CannotAct`, a 4xx or a programming error."""
    if isinstance(exc, CannotAct):
        return False
    if isinstance(exc, (TransientActuatorError, TimeoutError, ConnectionError,
                        cf.TimeoutError)):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        status = getattr(exc, "status", None)  # kubernetes.client.ApiException
    if isinstance(status, int):
        return status >= 500
    try:
        import requests

        return isinstance(exc, (requests.ConnectionError, requests.Timeout))
    except ImportError:  # pragma: no cover
        return False


@dataclass
class Breaker:
    failures_to_open: int
    reset_s: float
    failures: int = 0
    opened_at: float | None = None

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at >= self.reset_s:  # half-open: let one try through
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.opened_at = now


@dataclass
class Resilient:
    """Timeouts, retries with exponential backoff, a circuit breaker and idempotency around an
    actuator."""

    actuator: Actuator
    conf: ActuatorConf
    done: dict[str, ActResult] = field(default_factory=dict)  # key -> result
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        self.breaker = Breaker(self.conf.breaker_failures, self.conf.breaker_reset_s)
        self._pool: cf.ThreadPoolExecutor | None = None  # made on first use, shut by close()

    def close(self) -> None:
        """Release the worker threads (a call still running finishes on its own)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def execute(self, kind: str, target: str, key: str) -> ActResult:
        if key in self.done:
            r = self.done[key]
            return ActResult(r.ok, r.detail, r.error, 0, duplicate=True)
        now = time.time()
        if not self.breaker.allow(now):
            return ActResult(False, "", f"circuit open after {self.breaker.failures} "
                             f"consecutive failures; retrying after "
                             f"{self.conf.breaker_reset_s:g} s", attempts=0)
        attempts = 0
        try:
            for attempt in Retrying(stop=stop_after_attempt(max(self.conf.retries, 1)),
                                    wait=wait_exponential(multiplier=self.backoff_s, max=30),
                                    retry=retry_if_exception(transient), reraise=True):
                with attempt:
                    attempts += 1
                    if self._pool is None:
                        self._pool = cf.ThreadPoolExecutor(max_workers=2,
                                                           thread_name_prefix="actuator")
                    fut = self._pool.submit(self.actuator.execute, kind, target, key)
                    detail = fut.result(timeout=self.conf.timeout_s)
        except CannotAct as exc:  # a fact about the configuration, not a failing target
            return ActResult(False, "", f"cannot: {exc}", attempts)
        except cf.TimeoutError:
            self.breaker.failure(time.time())
            return ActResult(False, "", f"timed out after {self.conf.timeout_s:g} s "
                             f"({attempts} attempts)", attempts)
        except Exception as exc:  # noqa: BLE001 - any actuator failure is survived and logged
            self.breaker.failure(time.time())
            return ActResult(False, "", f"{type(exc).__name__}: {exc}", attempts)
        self.breaker.success()
        result = ActResult(True, str(detail), None, attempts)
        self.done[key] = result
        return result


class LogActuator:
    def __init__(self, params: Any) -> None:
        params = typed("log", params)
        self.calls: list[tuple[str, str, str]] = []

    def execute(self, kind: str, target: str, key: str) -> str:
        self.calls.append((kind, target, key))
        return f"logged {kind} on {target}"


class ProcessActuator:
    """Runs each stage as N local worker processes it started itself."""

    def __init__(self, params: Any) -> None:
        params = typed("process", params)
        self.specs: dict[str, dict[str, Any]] = {
            stage: spec.model_dump() for stage, spec in params.processes.items()}
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.lock = threading.Lock()
        self.pid_dir = Path(params.pid_dir)
        self.start_check_s = float(params.start_check_s)
        self.adopted: list[int] = []  # orphans of an earlier adapter, stopped at start

    def start(self) -> None:
        self.reap_orphans()
        for stage in self.specs:
            self._ensure(stage, int(self.specs[stage].get("workers", 1)))

    def _pid_file(self, pid: int) -> Path:
        return self.pid_dir / f"{pid}.pid"

    def reap_orphans(self) -> list[int]:
        """Stop the process groups an earlier adapter started and never stopped (it was killed
        with -9: its children, each in its own session, lived on as orphans that keep the port
        and keep serving whatever fault they had). Each one's pid file names it and its owner;
        a worker whose owner still runs belongs to another adapter and is left alone; a pid
        file whose process is gone (or whose pid another process has now: the start times
        differ) is just removed."""
        stopped = []
        for f in sorted(self.pid_dir.glob("*.pid")) if self.pid_dir.is_dir() else []:
            try:
                pid, born, owner, owner_born = (int(x) for x in f.read_text().split())
            except ValueError:
                f.unlink(missing_ok=True)
                continue
            if owner == os.getpid() or _started(owner) == owner_born:
                continue  # its adapter is alive (this process, or another one): no orphan
            if _started(pid) == born:  # the same process (a reused pid has another start)
                try:
                    os.killpg(pid, signal.SIGTERM)
                    for _ in range(50):
                        if _started(pid) != born:
                            break
                        time.sleep(0.1)
                    else:
                        os.killpg(pid, signal.SIGKILL)
                    stopped.append(pid)
                except ProcessLookupError:
                    pass
            f.unlink(missing_ok=True)
        self.adopted = stopped
        return stopped

    def _spawn(self, stage: str, i: int) -> subprocess.Popen[bytes]:
        spec = self.specs[stage]
        env = {**os.environ, **{k: str(v) for k, v in (spec.get("env") or {}).items()},
               "HEALGYM_WORKER": str(i)}
        out: Any = subprocess.DEVNULL
        if spec.get("log"):  # the processes' stdout and stderr, appended
            out = open(spec["log"], "ab")  # noqa: SIM115 (the child owns it)
        try:
            p = subprocess.Popen([str(c) for c in spec["cmd"]], env=env, stdout=out,
                                 stderr=subprocess.STDOUT if spec.get("log") else out,
                                 start_new_session=True)
        finally:
            if spec.get("log"):
                out.close()
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        # the worker, and the adapter that owns it: an orphan is one whose owner is gone
        self._pid_file(p.pid).write_text(
            f"{p.pid} {_started(p.pid)} {os.getpid()} {_started(os.getpid())}\n")
        return p

    def _check_started(self, stage: str) -> None:
        """A worker that exits right after its start (it could not take its port: an orphan
        still holds it) means the action did not happen."""
        if self.start_check_s <= 0:
            return
        time.sleep(self.start_check_s)
        dead = [p for p in self.procs.get(stage, []) if p.poll() is not None]
        if dead:
            codes = [p.returncode for p in dead]
            raise TransientActuatorError(
                f"{len(dead)} {stage} worker(s) exited right after their start (exit codes "
                f"{codes}): is the port still held by another process? see its log")

    def _ensure(self, stage: str, n: int) -> None:
        procs = [p for p in self.procs.get(stage, []) if p.poll() is None]
        while len(procs) < n:
            procs.append(self._spawn(stage, len(procs)))
        while len(procs) > n:
            self._stop(procs.pop())
        self.procs[stage] = procs

    def _stop(self, p: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            except ProcessLookupError:
                pass
        self._pid_file(p.pid).unlink(missing_ok=True)

    def workers(self, stage: str) -> int:
        return sum(p.poll() is None for p in self.procs.get(stage, []))

    def execute(self, kind: str, target: str, key: str) -> str:
        if target not in self.specs:
            raise CannotAct(f"no process spec for stage {target!r} in params.processes "
                            f"(has {sorted(self.specs)})")
        with self.lock:
            n = max(self.workers(target), 1)
            if kind == "restart":
                for p in self.procs.get(target, []):
                    self._stop(p)
                self.procs[target] = []
                self._ensure(target, n)
                self._check_started(target)
                return f"restarted {n} {target} process(es)"
            if kind in ("scale_up", "scale_down"):
                new = n + 1 if kind == "scale_up" else max(n - 1, 1)
                self._ensure(target, new)
                self._check_started(target)
                return f"{target}: {n} -> {new} workers"
        raise CannotAct(f"the process actuator cannot {kind!r} (restart, scale_up, scale_down)")

    def close(self) -> None:
        for procs in self.procs.values():
            for p in procs:
                self._stop(p)


def _started(pid: int) -> int:
    """When a process started (clock ticks since boot: /proc/PID/stat's 22nd field), -1 when
    there is no such process or it is a zombie: with the pid it names one process for good (a
    pid reused by another program has another start time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return -1 if fields[0] == "Z" else int(fields[19])


class MlflowRegistryActuator:
    def __init__(self, params: Any) -> None:
        params = typed("mlflow", params)
        self.model, self.alias, self.uri = params.model, params.alias, params.tracking_uri

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri) if self.uri else MlflowClient()

    def execute(self, kind: str, target: str, key: str) -> str:
        c = self.client()
        current = int(c.get_model_version_by_alias(self.model, self.alias).version)
        versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{self.model}'"))
        if kind == "rollback":
            older = [v for v in versions if v < current]
            if not older:
                raise CannotAct(f"{self.model}@{self.alias} is version {current}: nothing older")
            new = older[-1]
        else:
            new = versions[-1]
        c.set_registered_model_alias(self.model, self.alias, str(new))
        c.set_model_version_tag(self.model, str(new), "healgym_decision", key)
        return f"{self.model}@{self.alias}: version {current} -> {new}"


class GradualRollbackActuator:
    """``rollback``, gradually: the previous model version gets ``steps`` of the traffic in
    turn (the service's weighted split); after each step and ``wait_s`` the ``analysis``
    queries must hold, else the split is restored to where it was and the action fails (an
    abort, as Argo Rollouts' analysis does); after the last step the registry alias moves to
    the previous version (``mlflow``), so the registry and the traffic agree."""

    def __init__(self, params: Any, sleep: Any = time.sleep) -> None:
        self.p = typed("gradual", params)
        self.sleep = sleep
        self.steps_done: list[float] = []

    def _split(self, share: float | None = None) -> dict[str, Any]:
        import requests

        try:
            if share is None:
                r = requests.get(self.p.split_url, timeout=10)
            else:
                r = requests.post(self.p.split_url, json={"previous_share": share}, timeout=10)
        except requests.RequestException as exc:
            raise TransientActuatorError(f"the split endpoint {self.p.split_url} did not "
                                         f"answer ({exc})") from None
        if r.status_code == 409:
            raise CannotAct(f"the service cannot shift traffic: {r.text[:200]}")
        if r.status_code >= 400:
            raise ActuatorError(f"{self.p.split_url} answered {r.status_code}: {r.text[:200]}")
        return dict(r.json())

    def _analyse(self) -> list[str]:
        """The analysis queries that fail now (empty: all hold)."""
        import requests

        failed = []
        for name, spec in self.p.analysis.items():
            try:
                r = requests.get(f"{self.p.prometheus_url.rstrip('/')}/api/v1/query",
                                 params={"query": spec["query"]}, timeout=10)
                result = r.json()["data"]["result"]
                value = float(result[0]["value"][1]) if result else float("nan")
            except (requests.RequestException, KeyError, ValueError, IndexError) as exc:
                failed.append(f"{name}: the query failed ({exc})")
                continue
            lo, hi = spec.get("min"), spec.get("max")
            if not math.isfinite(value) or (lo is not None and value < float(lo)) or \
                    (hi is not None and value > float(hi)):
                need = " and ".join(x for x in (f">= {lo}" if lo is not None else "",
                                                f"<= {hi}" if hi is not None else "") if x)
                failed.append(f"{name} = {value:.4g} (needs {need})")
        return failed

    def execute(self, kind: str, target: str, key: str) -> str:
        if kind != "rollback":
            raise CannotAct(f"the gradual actuator carries out rollback only, not {kind!r}")
        before = self._split()
        start = float(before.get("previous_share") or 0.0)
        self.steps_done = []
        for share in self.p.steps:
            if share <= start:
                continue
            self._split(share)
            self.steps_done.append(share)
            self.sleep(self.p.wait_s)
            failed = self._analyse()
            if failed:
                self._split(start)  # abort: restore the split it started from
                raise ActuatorError(f"gradual rollback aborted at {share:.0%} of the traffic "
                                    f"on the previous version: {'; '.join(failed)}; split "
                                    f"restored to {start:.0%}")
        done = f"rolled back in {len(self.steps_done)} steps {self.steps_done}"
        if self.p.mlflow is not None:
            reg = MlflowRegistryActuator(self.p.mlflow.model_dump())
            version = before.get("previous_version")
            if version is None:  # the service does not say: the registry's next older one
                done += "; " + reg.execute("rollback", target, key)
            else:  # the version whose model the traffic went back to
                c = reg.client()
                cur = c.get_model_version_by_alias(reg.model, reg.alias).version
                c.set_registered_model_alias(reg.model, reg.alias, str(version))
                c.set_model_version_tag(reg.model, str(version), "healgym_decision", key)
                done += f"; {reg.model}@{reg.alias}: version {cur} -> {version}"
        return done


class WebhookActuator:
    def __init__(self, params: Any) -> None:
        params = typed("webhook", params)
        self.url: str = str(params.url)
        self.headers = dict(params.headers)
        if params.token_env:
            self.headers["Authorization"] = f"Bearer {os.environ.get(params.token_env, '')}"
        self.airflow = params.airflow_dag
        self.timeout = float(params.timeout_s)

    def execute(self, kind: str, target: str, key: str) -> str:
        import requests

        # ``action``: the env's action name, for receivers written against it
        action = kind if target == "pipeline" else f"{kind}_{target}"
        body: dict[str, Any] = {"action": action, "kind": kind, "target": target,
                                "decision_id": key}
        url = self.url
        if self.airflow:  # Airflow REST API: a DAG run whose id is the idempotency key
            url = f"{self.url.rstrip('/')}/api/v1/dags/{self.airflow}/dagRuns"
            body = {"dag_run_id": f"healgym-{key}", "conf": body}
        r = requests.post(url, json=body, headers={**self.headers, "Idempotency-Key": key},
                          timeout=self.timeout)
        if r.status_code == 409 and self.airflow:
            return f"DAG run healgym-{key} already exists"
        r.raise_for_status()
        return f"POST {url}: {r.status_code}"


class KubernetesActuator:
    def __init__(self, params: Any) -> None:
        params = typed("kubernetes", params)
        self.namespace = params.namespace
        self.deployments: dict[str, str] = dict(params.deployments)
        self.host = params.host  # an API server URL; else kubeconfig / in-cluster
        self.token = params.token
        self.image = params.image  # for set_image: {stage: image}
        self._api: Any = None

    def api(self) -> Any:
        if self._api is None:
            from kubernetes import client, config

            if self.host:
                cfg = client.Configuration()
                cfg.host = self.host
                if self.token:
                    cfg.api_key = {"authorization": f"Bearer {self.token}"}
                cfg.verify_ssl = bool(str(self.host).startswith("https"))
                self._api = client.AppsV1Api(client.ApiClient(cfg))
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
                self._api = client.AppsV1Api()
        return self._api

    def execute(self, kind: str, target: str, key: str) -> str:
        name = self.deployments.get(target)
        if name is None:
            raise CannotAct(f"no deployment for stage {target!r} in params.deployments")
        api, ns = self.api(), self.namespace
        if kind == "restart":
            now = dt.datetime.now(dt.UTC).isoformat()
            api.patch_namespaced_deployment(name, ns, {"spec": {"template": {"metadata": {
                "annotations": {"kubectl.kubernetes.io/restartedAt": now,
                                "healgym/decision": key}}}}})
            return f"rollout restart deployment/{name}"
        if kind in ("scale_up", "scale_down"):
            scale = api.read_namespaced_deployment_scale(name, ns)
            n = int(scale.spec.replicas or 0)
            new = n + 1 if kind == "scale_up" else max(n - 1, 1)
            api.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": new}})
            return f"deployment/{name}: {n} -> {new} replicas"
        if kind == "set_image":
            image = (self.image or {}).get(target)
            if not image:
                raise CannotAct(f"params.image has no image for stage {target!r}")
            api.patch_namespaced_deployment(name, ns, {"spec": {"template": {"spec": {
                "containers": [{"name": target, "image": image}]}}}})
            return f"deployment/{name}: image {image}"
        raise CannotAct(f"the kubernetes actuator cannot {kind!r} (restart, scale_up, "
                        "scale_down, set_image)")


#: One entry per actuator type: its class (params: ``serving.config.PARAMS[type]``).
TYPES: dict[str, Any] = {"process": ProcessActuator, "mlflow": MlflowRegistryActuator,
                         "webhook": WebhookActuator, "kubernetes": KubernetesActuator,
                         "log": LogActuator, "gradual": GradualRollbackActuator}
assert set(TYPES) == set(PARAMS), "each actuator type needs a params model and a class"


def build_actuators(confs: list[ActuatorConf], action_names: list[str]
                    ) -> dict[str, Resilient]:
    """action name -> its (resilient) actuator; an action named twice or unknown is an error."""
    out: dict[str, Resilient] = {}
    for i, c in enumerate(confs):
        inner = TYPES[c.type](c.typed_params())
        wrapped = Resilient(inner, c)
        for name in c.actions:
            if name not in action_names:
                from healgym.errors import did_you_mean

                raise ConfigError(f"actuators[{i}].actions: {name!r} is not an action of this "
                                  f"pipeline.{did_you_mean(name, action_names)}")
            if name in out:
                raise ConfigError(f"actuators[{i}].actions: {name!r} already has an actuator")
            out[name] = wrapped
    return out
