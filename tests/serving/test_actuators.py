"""Actuators: typed actions, transient-only retries, the breaker, idempotency; each type at
the request level."""

from __future__ import annotations

import json
import sys
import time

import pytest

from healgym.errors import CannotAct, TransientActuatorError
from healgym.serving.actuators import (
    ActuatorConf,
    KubernetesActuator,
    ProcessActuator,
    Resilient,
    WebhookActuator,
)


# ---------------------------------------------------------------- actuators
class Flaky:
    def __init__(self, fail: int, sleep: float = 0.0, error: type = ConnectionError) -> None:
        self.fail, self.sleep, self.calls, self.error = fail, sleep, 0, error

    def execute(self, kind: str, target: str, key: str) -> str:
        self.calls += 1
        time.sleep(self.sleep)
        if self.calls <= self.fail:
            raise self.error(f"boom {self.calls}")
        return "done"


def test_retries_timeouts_breaker_and_idempotency():
    conf = ActuatorConf(type="log", actions=["noop"], retries=3, timeout_s=0.2,
                        breaker_failures=2, breaker_reset_s=60)
    r = Resilient(Flaky(2), conf, backoff_s=0.01)
    res = r.execute("restart", "serve", "k1")
    assert res.ok and res.attempts == 3
    again = r.execute("restart", "serve", "k1")
    assert again.duplicate and again.attempts == 0 and r.actuator.calls == 3
    slow = Resilient(Flaky(0, sleep=1.0), ActuatorConf(type="log", actions=["noop"], retries=1,
                                                       timeout_s=0.1, breaker_failures=2))
    assert "timed out" in slow.execute("a", "t", "k2").error
    broken = Resilient(Flaky(99), conf, backoff_s=0.01)
    assert "boom" in broken.execute("a", "t", "k3").error
    assert "boom" in broken.execute("a", "t", "k4").error
    res = broken.execute("a", "t", "k5")
    assert "circuit open" in res.error and res.attempts == 0


@pytest.mark.parametrize(("error", "attempts"), [
    (CannotAct, 1), (RuntimeError, 1), (ValueError, 1), (ConnectionError, 3), (TimeoutError, 3),
    (TransientActuatorError, 3)])
def test_only_transient_failures_are_retried(error, attempts):
    conf = ActuatorConf(type="log", actions=["noop"], retries=3, timeout_s=5)
    r = Resilient(Flaky(99, error=error), conf, backoff_s=0.001)
    res = r.execute("restart", "serve", "k")
    assert not res.ok and res.attempts == attempts == r.actuator.calls
    assert res.error.startswith("cannot: ") == (error is CannotAct)


def test_http_5xx_is_transient_4xx_is_not():
    import requests

    from healgym.serving.actuators import transient

    def http(status: int) -> requests.HTTPError:
        resp = requests.Response()
        resp.status_code = status
        return requests.HTTPError(response=resp)

    assert transient(http(503)) and not transient(http(404)) and not transient(http(409))
    assert transient(requests.ConnectionError()) and not transient(KeyError("x"))


def test_process_actuator_restarts_and_scales_real_processes(tmp_path):
    p = ProcessActuator({"processes": {"serve": {
        "cmd": [sys.executable, "-c", "import time; time.sleep(120)"], "workers": 1}},
        "pid_dir": str(tmp_path / "pids"), "start_check_s": 0.2})
    try:
        p.start()
        pid = p.procs["serve"][0].pid
        assert "restarted 1" in p.execute("restart", "serve", "k")
        assert p.procs["serve"][0].pid != pid and p.workers("serve") == 1
        assert "1 -> 2" in p.execute("scale_up", "serve", "k2") and p.workers("serve") == 2
        p.execute("scale_down", "serve", "k3")
        assert p.workers("serve") == 1
    finally:
        p.close()
    assert p.workers("serve") == 0


def test_a_restart_whose_worker_cannot_start_is_a_failure_not_a_success(tmp_path):
    """A worker that exits at once (here: a port already taken) means the restart did not
    happen: the actuator says so, and through Resilient the action's result is not ok."""
    import socket

    from healgym.serving.actuators import Resilient

    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    cmd = [sys.executable, "-c", "import socket, time; s = socket.socket(); "
           f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(120)"]
    conf = ActuatorConf(type="process", actions=["restart_serve"], retries=1, params={
        "processes": {"serve": {"cmd": cmd}}, "pid_dir": str(tmp_path / "pids"),
        "start_check_s": 1.0})
    wrapped = Resilient(ProcessActuator(conf.params), conf)
    try:
        result = wrapped.execute("restart", "serve", "k")
        assert not result.ok and "exited right after their start" in result.error
    finally:
        wrapped.actuator.close()
        held.close()


def test_webhook_sends_the_idempotency_key(stand_in):
    handler, url = stand_in
    handler.routes[("POST", "/hook")] = (200, {"ok": True})
    handler.routes[("POST", "/api/v1/dags/retrain/dagRuns")] = (200, {"ok": True})
    WebhookActuator({"url": f"{url}/hook"}).execute("retrain", "pipeline", "dec-1")
    WebhookActuator({"url": url, "airflow_dag": "retrain"}).execute("backfill", "pipeline",
                                                                    "dec-2")
    hook, dag = handler.seen
    assert hook["headers"]["Idempotency-Key"] == "dec-1"
    assert json.loads(hook["body"]) == {"action": "retrain", "kind": "retrain",
                                        "target": "pipeline", "decision_id": "dec-1"}
    assert json.loads(dag["body"])["dag_run_id"] == "healgym-dec-2"


def test_kubernetes_requests_match_the_api(stand_in):
    handler, url = stand_in
    dep = "/apis/apps/v1/namespaces/prod/deployments/serve"
    handler.routes[("PATCH", dep)] = (200, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "serve"},
        "spec": {"selector": {"matchLabels": {"app": "serve"}}, "template": {"metadata": {}}}})
    handler.routes[("GET", dep + "/scale")] = (200, {
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "serve"},
        "spec": {"replicas": 3}})
    handler.routes[("PATCH", dep + "/scale")] = (200, {
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "serve"},
        "spec": {"replicas": 4}})
    k = KubernetesActuator({"host": url, "namespace": "prod", "deployments": {"serve": "serve"},
                            "image": {"serve": "registry.local/serve:2"}})
    assert "rollout restart" in k.execute("restart", "serve", "d1")
    assert "3 -> 4" in k.execute("scale_up", "serve", "d2")
    k.execute("set_image", "serve", "d3")
    restart, get_scale, scale, image = handler.seen
    assert restart["method"] == "PATCH" and restart["path"] == dep
    assert "strategic-merge-patch" in restart["headers"]["Content-Type"]
    ann = json.loads(restart["body"])["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in ann and ann["healgym/decision"] == "d1"
    assert get_scale["method"] == "GET" and json.loads(scale["body"]) == {"spec": {"replicas": 4}}
    assert json.loads(image["body"])["spec"]["template"]["spec"]["containers"] == [
        {"name": "serve", "image": "registry.local/serve:2"}]


def test_mlflow_registry_rollback_moves_the_alias(tmp_path):
    from mlflow import MlflowClient

    from healgym.serving.actuators import MlflowRegistryActuator

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = MlflowClient(tracking_uri=uri)
    c.create_registered_model("svc")
    for _ in range(3):
        c.create_model_version("svc", source=str(tmp_path))
    c.set_registered_model_alias("svc", "champion", "3")
    act = MlflowRegistryActuator({"model": "svc", "tracking_uri": uri})
    assert "3 -> 2" in act.execute("rollback", "pipeline", "d9")
    assert str(c.get_model_version_by_alias("svc", "champion").version) == "2"
    assert c.get_model_version("svc", "2").tags["healgym_decision"] == "d9"
