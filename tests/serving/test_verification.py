"""Every action is verified by observing: the target recovered within verify_action_s of the
action's completion (verified), or the success the actuator reported is an alert."""

from __future__ import annotations

import time

from healgym.serving.actuators import ActuatorConf
from healgym.serving.config import GuardConf, ServeConf
from tests.serving.common import adapter


def conf(**kw):
    return ServeConf(guard=GuardConf(cooldown_s=10_000), verify_action_s=60,
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])], **kw)


def test_a_restart_that_heals_is_verified(tmp_path):
    a, src = adapter(tmp_path, conf())
    src.crash("serve")
    t = time.time()
    did = a.step(t)
    assert a.log.record(did)["executed_action"] == "restart_serve"
    src.healthy()  # the restart worked
    src.t = t + 35
    a.step(t + 35)  # after its 30 s
    rec = a.log.record(did)
    assert rec["verification"] == "verified"
    ev = next(e for e in rec["events"] if e["kind"] == "verified")
    assert ev["after_s"] == 5.0


def test_a_success_without_the_effect_is_not_verified_and_alerts(tmp_path):
    """The actuator said ok (an orphan kept the port and kept serving the fault): the adapter
    keeps observing and, at the deadline, says the action did not work."""
    a, src = adapter(tmp_path, conf())
    src.crash("serve")
    t = time.time()
    did = a.step(t)
    assert a.log.record(did)["actuator_result"]["ok"]
    for dt in (35, 60, 80):  # still broken
        src.t = t + dt
        a.step(t + dt)
        assert a.log.record(did)["verification"] is None
    src.t = t + 95
    a.step(t + 95)  # 65 s after completion > verify_action_s
    rec = a.log.record(did)
    assert rec["verification"] == "not_verified"
    assert any("has not recovered" in m for m in a.alerts)
    assert a.metrics.alerts.labels(reason="not_verified")._value.get() == 1.0
