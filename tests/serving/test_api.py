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
