"""The serving adapter: config, observe, guardrails, decision log, actuators, the loop, the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.errors import CannotAct, ConfigError, TransientActuatorError
from healgym.serving.actuators import (
    ActuatorConf,
    KubernetesActuator,
    LogActuator,
    ProcessActuator,
    Resilient,
    WebhookActuator,
)
from healgym.serving.adapter import Adapter
from healgym.serving.config import GuardConf, ServeConf, SourceConf, load_config
from healgym.serving.decision_log import DecisionLog
from healgym.serving.guardrails import Guard, action_infos
from healgym.serving.observe import AdapterState, Observer, PrometheusSource, ScrapeSource
from tests.serving_helpers import DictSource, RestartOnErrors, model

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "t" * 24


# ---------------------------------------------------------------- helpers
class Recorder(BaseHTTPRequestHandler):
    """A local HTTP stand-in: records every request, answers from ``routes``."""

    routes: dict[tuple[str, str], tuple[int, Any]] = {}
    seen: list[dict[str, Any]] = []

    def _handle(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        self.seen.append({"method": method, "path": self.path, "body": body,
                          "headers": dict(self.headers)})
        path = self.path.split("?")[0]
        code, payload = self.routes.get((method, path), (404, {"error": "not found"}))
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(payload, str)
                         else "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in():
    handler = type("H", (Recorder,), {"routes": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def adapter(tmp_path: Path, conf: ServeConf | None = None, **kw: Any) -> tuple[Adapter, Any]:
    m = model()
    conf = conf or ServeConf(actuators=[ActuatorConf(type="log", actions=[
        f"restart_{s}" for s in m.stages] + ["escalate"])])
    src = DictSource(m)
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    a = Adapter(conf, RestartOnErrors(m), m, log, Observer(m, conf.source, src),
                policy_version="test", **kw)
    return a, src


# ---------------------------------------------------------------- config
def test_config_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "serve.yaml"
    p.write_text("guard:\n  cooldwn_s: 10\nhuman:\n  timeout_s: soon\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert str(p) in msg and "guard.cooldwn_s" in msg and "human.timeout_s" in msg
    with pytest.raises(ConfigError, match="no such serve config"):
        load_config(tmp_path / "missing.yaml")
    assert load_config(ROOT / "configs" / "serve" / "demo.yaml").api.host == "127.0.0.1"
    demo = load_config(ROOT / "configs" / "serve" / "demo-pipeline.yaml")
    assert demo.stages == ["serve"] and demo.actuators[0].type == "process"


# ---------------------------------------------------------------- observe
def test_missing_stale_or_non_finite_metrics_never_reach_the_policy(tmp_path):
    a, src = adapter(tmp_path)
    did = a.step()
    assert a.log.record(did)["status"] == "proposed"
    for spoil, says in [(lambda: src.values.pop(("error_rate", "serve")),
                         "error_rate[serve]: missing"),
                        (lambda: src.values.__setitem__(("latency_p95_ms", "ingest"),
                                                        float("nan")), "not finite"),
                        (lambda: setattr(src, "age_s", 3600.0), "stale (3600 s old")]:
        src.healthy()
        src.age_s = 0.0
        spoil()
        rec = a.log.record(a.step())
        assert rec["status"] == "skipped" and says in rec["reason"], rec["reason"]
        assert rec["observation"] is None and rec["executed_action"] is None
        assert any(says in al for al in a.alerts)


def test_prometheus_source_queries_each_stage(stand_in):
    handler, url = stand_in
    now = time.time()
    handler.routes[("GET", "/api/v1/query")] = (200, {"status": "success", "data": {
        "resultType": "vector", "result": [{"metric": {}, "value": [now, "0.25"]}]}})
    conf = SourceConf(url=url, queries={"error_rate": 'rate(errors{stage="{stage}"}[1m])',
                                        "accuracy": "model_accuracy"})
    got = PrometheusSource(conf).read(["ingest", "serve"])
    assert got[("error_rate", "serve")].value == 0.25 and got[("accuracy", None)].ts == now
    queries = sorted(r["path"] for r in handler.seen)
    assert len(queries) == 3 and any("stage%3D%22serve%22" in q for q in queries)


def test_scrape_source_reads_metrics_endpoints(stand_in):
    handler, url = stand_in
    handler.routes[("GET", "/metrics")] = (200, (
        "# TYPE error_rate gauge\nerror_rate{stage=\"serve\"} 0.5\n"
        "# TYPE accuracy gauge\naccuracy 0.81\n"))
    got = ScrapeSource(SourceConf(kind="scrape", targets=[f"{url}/metrics"])).read(["serve"])
    assert got[("error_rate", "serve")].value == 0.5 and got[("accuracy", None)].value == 0.81


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["latency_p95_ms", "error_rate", "throughput_rps",
                                        "cpu_pct", "accuracy", "drift_psi", "replicas"]),
                       st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=7))
def test_fuzzed_metrics_never_crash_the_loop(values):
    m = model()
    src = DictSource(m)
    for k, v in values.items():
        src.values[(k, None if k in ("accuracy", "drift_psi") else "serve")] = float(v)
    obs = Observer(m, SourceConf(), src)
    reading = obs.read(AdapterState())
    if reading.signals is not None:
        from healgym.sim.observation import encode

        o = encode(m, reading.signals)
        assert np.isfinite(o).all() and m.observation_space.contains(o)
    else:
        assert reading.problems


# ---------------------------------------------------------------- guardrails
@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 22), st.floats(0, 120)), min_size=1, max_size=80),
       st.integers(1, 4), st.floats(10, 600), st.integers(1, 6))
def test_guardrails_hold_under_random_proposals(proposals, rate, cooldown, hourly):
    m = model()
    infos = action_infos(m)
    allowed = [a.name for a in infos if a.kind in ("noop", "restart", "scale_up", "backfill")]
    g = Guard(GuardConf(allowed=allowed, cooldown_s=cooldown, rate_limit=rate,
                        rate_window_s=600, hourly_budget=hourly, cost_budget_per_hour=60.0,
                        approval_risk="never"), infos)
    now, executed = 0.0, []
    for action, dt in proposals:
        now += dt
        r = g.check(action, now)
        if r.blocked:
            assert r.action == g.safe and any(not v.ok for v in r.verdicts)
        if r.action != g.safe:
            g.record(r.action, now)
            executed.append((now, r.action))
    for i, (t, a) in enumerate(executed):
        assert infos[a].name in allowed
        window = [x for x in executed[: i + 1] if t - x[0] < 600]
        hour = [x for x in executed[: i + 1] if t - x[0] < 3600]
        assert len(window) <= rate and len(hour) <= hourly
        assert sum(infos[x[1]].cost for x in hour) <= 60.0
        same = [x[0] for x in executed[:i] if infos[x[1]].target == infos[a].target]
        assert not same or t - max(same) >= cooldown


def test_kill_switch_shadow_confidence_and_approval(tmp_path):
    infos = action_infos(model())
    restart = next(a.index for a in infos if a.name == "restart_serve")
    rollback = next(a.index for a in infos if a.name == "rollback")
    kill = tmp_path / "STOP"
    g = Guard(GuardConf(kill_switch_file=str(kill), min_confidence=0.5), infos)
    assert not g.check(restart, 0.0).blocked
    kill.touch()
    r = g.check(restart, 0.0)
    assert r.blocked and r.verdicts[-1].check == "kill_switch"
    kill.unlink()
    assert g.check(restart, 0.0, confidence=0.2).verdicts[-1].check == "confidence"
    assert g.check(rollback, 0.0).needs_approval  # rollback is high risk
    assert Guard(GuardConf(shadow=True), infos).check(restart, 0.0).shadow
    with pytest.raises(ConfigError, match="unknown action names"):
        Guard(GuardConf(allowed=["restart_srve"]), infos)


# ---------------------------------------------------------------- the loop
def test_the_adapter_heals_a_crash_and_records_every_step(tmp_path):
    a, src = adapter(tmp_path)
    t = time.time()
    assert a.log.record(a.step(t))["proposed_action"] == "noop"
    src.crash("serve")
    did = a.step(t + 10)
    rec = a.log.record(did)
    assert rec["proposed_action"] == "restart_serve" and rec["state"] == "acted"
    assert rec["executed_action"] == "restart_serve" and rec["idempotency_key"] == did
    assert rec["actuator_result"]["ok"] and rec["explanation"]["rule"] == "errors"
    assert [v["check"] for v in rec["guard"]["verdicts"]][-1] == "risk"
    log_act = a.actuators["restart_serve"].actuator
    assert log_act.calls == [("restart", "serve", did)]
    # while the restart runs (30 s) the policy may only wait, as in the env
    mask = a.mask(a.observer.read(a.state, t + 20).signals, t + 20)
    assert [a.names[i] for i in np.flatnonzero(mask)] == ["noop", "escalate"]
    # still broken once it is done: the cooldown blocks a second restart, logged with the reason
    rec2 = a.log.record(a.step(t + 45))
    assert rec2["guard"]["blocked"] and "cooldown" in rec2["reason"]
    src.healthy()
    a.step(t + 60)
    rec = a.log.record(did)
    assert rec["outcome"] == "resolved" and rec["ttr_s"] == pytest.approx(50.0)
    assert rec["reward"] < 0
    out = a.log.export_parquet(tmp_path / "log.parquet")
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) == 4 and list(df["executed_action"])[1] == "restart_serve"


def test_action_durations_are_the_infrastructures(tmp_path):
    """durations_s says how long an action takes here: the restart is in flight (and nothing but
    noop or escalate is offered) for exactly that long."""
    m = model()
    conf = ServeConf(durations_s={"restart": 5.0}, guard=GuardConf(cooldown_s=0),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    a, src = adapter(tmp_path, conf)
    src.crash("serve")
    t = time.time()
    src.t = t
    assert a.log.record(a.step(t))["executed_action"] == "restart_serve"
    src.t = t + 4
    assert a.log.record(a.step(t + 4))["proposed_action"] == "noop"  # still restarting
    src.t = t + 6
    assert a.log.record(a.step(t + 6))["executed_action"] == "restart_serve"
    assert m.action_names
    with pytest.raises(ConfigError, match=r"durations_s: unknown action kinds \['reboot'\]"):
        adapter(tmp_path, ServeConf(durations_s={"reboot": 1.0}))


def test_unresolved_incidents_escalate_after_the_deadline(tmp_path):
    m = model()
    conf = ServeConf(verify_deadline_s=60, actuators=[ActuatorConf(
        type="log", actions=["restart_serve", "escalate"])],
        guard=GuardConf(cooldown_s=1e6))
    a, src = adapter(tmp_path, conf)
    src.crash("serve")
    t = time.time()
    for k in range(9):
        src.t = t + 10 * k
        a.step(t + 10 * k)
    states = [r["state"] for r in a.log.records()]
    assert "escalated" in states or "acted" in states
    calls = [c[0] for c in a.actuators["escalate"].actuator.calls]
    assert calls.count("escalate") == 1 and any("escalating" in al for al in a.alerts)
    assert m.action_names  # the model is the one served


def test_approval_mode_api_auth_approve_reject_override_and_timeout(tmp_path):
    from fastapi.testclient import TestClient

    from healgym.serving.api import create_app

    m = model()
    conf = ServeConf(human={"mode": "approval", "timeout_s": 100},
                     guard=GuardConf(cooldown_s=0), actuators=[ActuatorConf(
                         type="log", actions=[f"restart_{s}" for s in m.stages])])
    a, src = adapter(tmp_path, conf)
    client = TestClient(create_app(a, TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    src.crash("serve")
    t = time.time()
    did = a.step(t)
    pending = client.get("/decisions", params={"pending": True}).json()
    assert [p["id"] for p in pending] == [did] and pending[0]["state"] == "pending"
    body = {"operator": "alice", "reason": "looks right"}
    assert client.post(f"/decisions/{did}/approve", json=body).status_code == 401
    assert client.post(f"/decisions/{did}/approve", json=body,
                       headers={"Authorization": "Bearer wrong-token-0000000"}).status_code == 401
    r = client.post(f"/decisions/{did}/approve", json=body, headers=auth)
    assert r.status_code == 200 and r.json()["state"] == "acted"
    assert r.json()["human"]["operator"] == "alice"
    assert client.post(f"/decisions/{did}/approve", json=body, headers=auth).status_code == 409
    did2 = a.step(t + 40)  # after the approved restart (30 s) is done
    r = client.post(f"/decisions/{did2}/reject", json=body, headers=auth)
    assert r.json()["executed_action"] is None and r.json()["human"]["verdict"] == "reject"
    did3 = a.step(t + 41)
    r = client.post(f"/decisions/{did3}/override", headers=auth,
                    json={**body, "action": "restart_ingest"})
    assert r.json()["executed_action"] == "restart_ingest"
    assert client.post(f"/decisions/{did3}/override", headers=auth,
                       json={**body, "action": "restart_srve"}).status_code == 422
    src.t = t + 120
    did4 = a.step(t + 120)
    src.t = t + 320
    a.step(t + 320)  # nobody answered: the safe default
    assert a.log.record(did4)["state"] == "timed_out" and did4 not in a.pending
    assert client.post("/pause", json=body, headers=auth).json() == {"paused": True}
    assert a.log.record(a.step())["status"] == "paused"
    client.post("/resume", json=body, headers=auth)
    metrics = client.get("/metrics/").text
    assert "healgym_overrides_total 1.0" in metrics and "healgym_decisions_total" in metrics
    with pytest.raises(ValueError, match="at least 16"):
        create_app(a, "short")


def test_a_real_policy_loads_by_path(tmp_path):
    from healgym.serving.policies import load_policy

    m = model()
    policy, version = load_policy(str(ROOT / "configs" / "runbooks" / "classic.yaml"), m)
    a = Adapter(ServeConf(), policy, m, DecisionLog(f"sqlite:///{tmp_path / 'l.db'}"),
                Observer(m, SourceConf(), DictSource(m)), policy_version=version)
    assert a.log.record(a.step())["policy"] == policy.name
    with pytest.raises(Exception, match="not a runbook YAML"):
        load_policy(str(tmp_path), m)


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


def test_actuator_params_are_validated_per_type(tmp_path):
    p = tmp_path / "serve.yaml"
    p.write_text("actuators:\n  - type: webhook\n    actions: [retrain]\n    params: {urll: x}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "actuators.0" in msg and "params.url: Field required" in msg
    assert "params.urll: Extra inputs are not permitted" in msg
    with pytest.raises(ConfigError, match="params.processes"):
        load_config(None, actuators=[{"type": "process", "actions": ["restart_serve"]}])


def test_a_pipeline_whose_stage_names_contain_underscores_is_served(tmp_path):
    """Actions reach actuators as (kind, target): ``restart_feature_store`` restarts the
    ``feature_store`` stage, ``scale_up_model_serve`` scales ``model_serve``."""
    stages = {"raw_ingest": "ingest", "feature_store": "features", "train": "train",
              "model_serve": "serve", "deliver": "deliver"}
    m = PipelineHealEnv(stages=stages).model
    assert m.stages == list(stages)
    spec = {"cmd": [sys.executable, "-c", "import time; time.sleep(120)"], "workers": 1}
    conf = ServeConf(actuators=[ActuatorConf(
        type="process", actions=["restart_feature_store", "scale_up_model_serve"],
        params={"processes": {"feature_store": spec, "model_serve": spec}})])
    src = DictSource(m)
    a = Adapter(conf, RestartOnErrors(m), m, DecisionLog(f"sqlite:///{tmp_path / 'l.db'}"),
                Observer(m, conf.source, src), policy_version="t")
    procs = a.actuators["restart_feature_store"].actuator
    try:
        first = procs.procs["feature_store"][0].pid
        t = time.time()
        a.step(t)
        src.crash("feature_store")
        rec = a.log.record(a.step(t + 10))
        assert rec["executed_action"] == "restart_feature_store" and rec["state"] == "acted"
        assert rec["actuator_result"]["ok"], rec["actuator_result"]
        assert procs.procs["feature_store"][0].pid != first
        res = a.actuators["scale_up_model_serve"].execute("scale_up", "model_serve", "k2")
        assert res.ok and procs.workers("model_serve") == 2
    finally:
        procs.close()


def test_process_actuator_restarts_and_scales_real_processes():
    p = ProcessActuator({"processes": {"serve": {
        "cmd": [sys.executable, "-c", "import time; time.sleep(120)"], "workers": 1}}})
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


# ---------------------------------------------------------------- durability
WRITER = """
import sys, time
from healgym.serving.decision_log import DecisionLog
log = DecisionLog(sys.argv[1])
for i in range(100000):
    did = log.new_decision(policy="p", policy_version="1", observation=[0.0, 1.0],
                           signals={}, proposed_action="restart_serve", explanation={},
                           guard={}, status="proposed")
    log.event(did, "act_started", {"action": "restart_serve", "idempotency_key": did})
    print(did, flush=True)
"""


def test_kill_minus_9_loses_nothing_acknowledged_and_never_acts_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    acked = []
    assert proc.stdout is not None
    while len(acked) < 40:
        acked.append(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log = DecisionLog(url)
    before = {r["id"]: r["state"] for r in log.records()}
    assert set(acked) <= set(before)
    # the kill may land between a decision's insert and its act_started event: that one never
    # started acting and stays proposed (at most one, the last)
    ids = {i for i, state in before.items() if state == "acting"}
    assert set(acked) <= ids and len(before) - len(ids) <= 1
    assert all(state in ("acting", "proposed") for state in before.values())
    # every started action without a result is marked interrupted, once, and never re-run
    m = model()
    calls: list[Any] = []
    act = LogActuator({})
    act.calls = calls
    conf = ServeConf(actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    a = Adapter(conf, RestartOnErrors(m), m, log, Observer(m, conf.source, DictSource(m)),
                actuators={"restart_serve": Resilient(act, conf.actuators[0])})
    assert set(a.interrupted) == ids and calls == []
    assert {r["id"] for r in log.records() if r["state"] == "interrupted"} == ids
    assert DecisionLog(url).recover() == []  # a second restart finds nothing new


def test_healgym_serve_cli_takes_decisions_from_scraped_metrics(stand_in, tmp_path, capsys):
    from healgym.cli import main
    from healgym.sim.faults import METRICS

    handler, url = stand_in
    m = model()
    lines = []
    for i, stage in enumerate(m.stages):
        for j, metric in enumerate(METRICS):
            lines.append(f'{metric}{{stage="{stage}"}} {m.median[i, j]}')
    handler.routes[("GET", "/metrics")] = (200, "\n".join(lines) + "\naccuracy 0.95\n")
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"source: {{kind: scrape, targets: ['{url}/metrics']}}\ninterval_s: 0.1\n"
                   f"decision_log: sqlite:///{tmp_path / 'd.db'}\n")
    assert main(["serve", "--policy", str(ROOT / "configs/runbooks/classic.yaml"),
                 "--config", str(cfg), "--steps", "2"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [o["status"] for o in out] == ["proposed", "proposed"]
    assert out[0]["proposed_action"] == "noop"  # healthy pipeline: the runbook waits
    assert len(DecisionLog(f"sqlite:///{tmp_path / 'd.db'}").records()) == 2
    assert main(["serve", "--config", str(cfg), "--steps", "1"]) == 2  # no policy: clear error


def test_healgym_override_cli_against_a_live_api(tmp_path, capsys, monkeypatch):
    import uvicorn

    from healgym.cli import main
    from healgym.serving.api import create_app

    m = model()
    conf = ServeConf(human={"mode": "approval"}, actuators=[ActuatorConf(
        type="log", actions=[f"restart_{s}" for s in m.stages])])
    a, src = adapter(tmp_path, conf)
    # log_config=None: uvicorn must not bind logging handlers to this test's captured stderr
    server = uvicorn.Server(uvicorn.Config(create_app(a, TOKEN), host="127.0.0.1", port=0,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        t0 = time.time()
        while not server.started and time.time() - t0 < 20:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        src.crash("serve")
        did = a.step()
        monkeypatch.delenv("HEALGYM_TOKEN", raising=False)
        assert main(["override", "approve", did, "--url", url, "--reason", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("healgym: error: no API token: set the environment variable "
                              "$HEALGYM_TOKEN") and "Traceback" not in err
        monkeypatch.setenv("HEALGYM_TOKEN", "w" * 20)
        assert main(["override", "approve", did, "--url", url, "--reason", "x"]) == 2
        err = capsys.readouterr().err
        assert "answered 401" in err and "is $HEALGYM_TOKEN the adapter's token?" in err
        monkeypatch.setenv("HEALGYM_TOKEN", TOKEN)
        assert main(["override", "approve", "nope", "--url", url, "--reason", "x"]) == 2
        assert "answered 404: no decision nope" in capsys.readouterr().err
        assert main(["override", "list", "--pending", "--url", url]) == 0
        assert did in capsys.readouterr().out
        assert main(["override", "override", did, "--action", "restart_ingest", "--operator",
                     "bob", "--reason", "not serve", "--url", url]) == 0
        rec = json.loads(capsys.readouterr().out)
        assert rec["executed_action"] == "restart_ingest" and rec["human"]["operator"] == "bob"
        assert main(["override", "pause", "--reason", "window", "--url", url]) == 0 and a.paused
    finally:
        server.should_exit = True
        thread.join(10)


def test_closing_the_adapter_releases_actuator_threads_and_logs_the_open_incident(tmp_path):
    import threading

    a, src = adapter(tmp_path)
    src.crash("serve")
    t = time.time()
    src.t = t
    did = a.step(t)
    assert a.log.record(did)["executed_action"] == "restart_serve"
    before = threading.active_count()
    a.close()
    a.close()  # twice is harmless
    deadline = time.time() + 5
    while threading.active_count() >= before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() < before  # the actuator's worker thread is gone
    incidents = [e for e in a.log.events_of(did) if e["kind"] == "incident"]
    assert len(incidents) == 1 and incidents[0]["payload"]["open"] is True
    assert incidents[0]["payload"]["resolved"] is False
