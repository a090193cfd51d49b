"""The human-override API: auth, approve, reject, override, timeouts."""

from __future__ import annotations

import time

import pytest

from healgym.serving.actuators import (
    ActuatorConf,
)
from healgym.serving.config import GuardConf, ServeConf
from tests.serving.common import TOKEN, adapter
from tests.serving_helpers import model


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
    assert client.get("/decisions", params={"pending": True}).status_code == 401  # reads too
    assert client.get(f"/decisions/{did}").status_code == 401
    assert client.get("/metrics/").status_code == 401
    assert client.get("/healthz").status_code == 200  # the one open endpoint
    pending = client.get("/decisions", params={"pending": True}, headers=auth).json()
    assert [p["id"] for p in pending] == [did] and pending[0]["state"] == "pending"
    body = {"operator": "alice", "reason": "looks right"}
    assert client.post(f"/decisions/{did}/approve", json=body).status_code == 401
    assert client.post(f"/decisions/{did}/approve", json=body,
                       headers={"Authorization": "Bearer wrong-token-0000000"}).status_code == 401
    r = client.post(f"/decisions/{did}/approve", json=body, headers=auth)
    # approving returns at once; the action runs in the background
    assert r.status_code == 200 and r.json()["state"] in ("acting", "acted")
    assert r.json()["human"]["operator"] == "alice"
    assert a.wait_idle(10) and a.log.record(did)["state"] == "acted"
    assert client.post(f"/decisions/{did}/approve", json=body, headers=auth).status_code == 409
    did2 = a.step(t + 40)  # after the approved restart (30 s) is done
    r = client.post(f"/decisions/{did2}/reject", json=body, headers=auth)
    assert r.json()["executed_action"] is None and r.json()["human"]["verdict"] == "reject"
    did3 = a.step(t + 41)
    r = client.post(f"/decisions/{did3}/override", headers=auth,
                    json={**body, "action": "restart_ingest"})
    assert r.json()["executed_action"] == "restart_ingest"
    assert a.wait_idle(10)
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
    metrics = client.get("/metrics/", headers=auth).text
    assert "healgym_overrides_total 1.0" in metrics and "healgym_decisions_total" in metrics
    with pytest.raises(ValueError, match="at least 16"):
        create_app(a, "short")


def test_a_read_only_token_reads_but_changes_nothing(tmp_path):
    from fastapi.testclient import TestClient

    from healgym.serving.api import create_app

    conf = ServeConf(human={"mode": "approval", "timeout_s": 100},
                     guard=GuardConf(cooldown_s=0),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    a, src = adapter(tmp_path, conf)
    reader = "r" * 24
    client = TestClient(create_app(a, TOKEN, reader))
    src.crash("serve")
    did = a.step(time.time())
    ro = {"Authorization": f"Bearer {reader}"}
    assert client.get("/decisions", params={"pending": True}, headers=ro).json()[0]["id"] == did
    assert client.get("/metrics/", headers=ro).status_code == 200
    r = client.post(f"/decisions/{did}/approve", headers=ro,
                    json={"operator": "eve", "reason": "x"})
    assert r.status_code == 403 and a.log.record(did)["state"] == "pending"
    with pytest.raises(ValueError, match="read-only token must have at least 16"):
        create_app(a, TOKEN, "short")


def test_the_kill_switch_and_pause_stop_humans_actions_too(tmp_path):
    """An approval or an override while the kill switch file is present (or while paused) is
    refused with the reason, logged as a refused attempt, and executes nothing."""
    from fastapi.testclient import TestClient

    from healgym.serving.api import create_app

    stop = tmp_path / "STOP"
    conf = ServeConf(human={"mode": "approval", "timeout_s": 1000},
                     guard=GuardConf(cooldown_s=0, kill_switch_file=str(stop)),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve",
                                                                  "restart_ingest"])])
    a, src = adapter(tmp_path, conf)
    client = TestClient(create_app(a, TOKEN))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    src.crash("serve")
    t = time.time()
    did = a.step(t)
    assert did in a.pending
    stop.touch()
    body = {"operator": "alice", "reason": "ship it"}
    r = client.post(f"/decisions/{did}/approve", json=body, headers=auth)
    assert r.status_code == 423 and "kill switch" in r.json()["detail"]
    r = client.post(f"/decisions/{did}/override", json={**body, "action": "restart_ingest"},
                    headers=auth)
    assert r.status_code == 423
    rec = a.log.record(did)
    assert rec["executed_action"] is None and did in a.pending  # nothing ran, still pending
    assert a.actuators["restart_serve"].actuator.calls == []
    assert a.actuators["restart_ingest"].actuator.calls == []
    refused = [e for e in a.log.events_of(did) if e["kind"] == "refused"]
    assert [e["payload"]["verdict"] for e in refused] == ["approve", "override"]
    assert all("kill switch" in e["payload"]["why"] for e in refused)
    # an override to noop executes nothing: allowed even while stopped
    assert client.post(f"/decisions/{did}/override", json={**body, "action": "noop"},
                       headers=auth).status_code == 200
    stop.unlink()
    did2 = a.step(t + 40)
    a.pause("bob", "maintenance")
    r = client.post(f"/decisions/{did2}/override", json={**body, "action": "restart_ingest"},
                    headers=auth)
    assert r.status_code == 423 and "paused" in r.json()["detail"]
    a.resume("bob", "done")
    r = client.post(f"/decisions/{did2}/override", json={**body, "action": "restart_ingest"},
                    headers=auth)
    assert r.status_code == 200 and r.json()["executed_action"] == "restart_ingest"
    assert a.wait_idle(10)


def test_approvals_never_stall_the_loop_and_do_not_pile_up(tmp_path):
    """Approving a slow action (a 3 s webhook here, 45 s in the issue) returns at once; the
    loop keeps deciding while it runs (only noop and escalate are offered: an action is in
    flight); a second proposal for the same target while one waits is not a second question."""
    import threading
    from http.server import ThreadingHTTPServer

    from tests.serving.common import Recorder

    class Slow(Recorder):
        def do_POST(self) -> None:  # noqa: N802
            time.sleep(3.0)
            super().do_POST()

    handler = type("H", (Slow,), {"routes": {("POST", "/hook"): (200, {"ok": True})},
                                  "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        conf = ServeConf(human={"mode": "approval", "timeout_s": 1000},
                         guard=GuardConf(cooldown_s=0), actuators=[ActuatorConf(
                             type="webhook", actions=["restart_serve"], timeout_s=10,
                             params={"url": url})])
        a, src = adapter(tmp_path, conf)
        src.crash("serve")
        t = time.time()
        did = a.step(t)
        again = a.step(t + 1)  # the same proposal while the first waits
        assert list(a.pending) == [did] and a.log.record(again)["state"] == "duplicate"
        t0 = time.perf_counter()
        rec = a.approve(did, "alice", "go")
        assert time.perf_counter() - t0 < 1.0 and rec["state"] == "acting"
        steps = []
        while a.running:  # the loop decides on, every 0.2 s, while the webhook runs
            s0 = time.perf_counter()
            r = a.log.record(a.step(time.time()))
            steps.append(time.perf_counter() - s0)
            assert r["executed_action"] is None  # an action in flight: nothing else runs
            time.sleep(0.2)
        assert len(steps) >= 5 and max(steps) < 1.0
        assert a.wait_idle(10) and a.log.record(did)["state"] == "acted"
    finally:
        server.shutdown()
