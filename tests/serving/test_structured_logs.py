"""What happens is said: one structured line per decision, action, block and alert on
stderr (`--log-format json`), and `healgym_alerts_total` counts every alert by reason."""

from __future__ import annotations

import io
import json
import logging
import time

from healgym.serving.actuators import ActuatorConf
from healgym.serving.cli import configure_logging
from healgym.serving.config import GuardConf, ServeConf
from tests.serving.common import adapter


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in buf.getvalue().splitlines() if x.strip()]


def test_json_lines_for_decisions_actions_blocks_and_escalations(tmp_path):
    buf = io.StringIO()
    handler = configure_logging("json")
    handler.setStream(buf)
    try:
        conf = ServeConf(guard=GuardConf(cooldown_s=600), verify_deadline_s=30,
                         actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
        a, src = adapter(tmp_path, conf)
        src.crash("serve")
        t = time.time()
        did = a.step(t)
        a.step(t + 40)  # still broken: the cooldown blocks; past the deadline: escalation
        out = lines(buf)
    finally:
        logging.getLogger("healgym.serving").handlers = []
    events = [x["event"] for x in out]
    assert events[:3] == ["incident_opened", "action", "decision"]
    act = next(x for x in out if x["event"] == "action")
    assert act["decision"] == did and act["action"] == "restart_serve" and act["ok"] is True
    dec = next(x for x in out if x["event"] == "decision")
    assert dec["decision"] == did and dec["proposed"] == "restart_serve" and dec["level"] == "INFO"
    alerts = {x["reason"]: x for x in out if x["event"] == "alert"}
    assert {"guard_block", "deadline_escalation"} <= set(alerts)
    assert alerts["guard_block"]["check"] == "cooldown" and alerts["guard_block"]["level"] == \
        "WARNING"
    # the counter counts each alert by reason
    from prometheus_client import generate_latest

    text = generate_latest(a.metrics.registry).decode()
    assert 'healgym_alerts_total{reason="guard_block"} 1.0' in text
    assert 'healgym_alerts_total{reason="deadline_escalation"} 1.0' in text


def test_an_actuator_failure_is_an_error_line_and_an_alert(tmp_path):
    buf = io.StringIO()
    handler = configure_logging("text")
    handler.setStream(buf)
    try:
        conf = ServeConf(guard=GuardConf(cooldown_s=0), actuators=[ActuatorConf(
            type="webhook", actions=["restart_serve"], retries=1, timeout_s=0.5,
            params={"url": "http://127.0.0.1:9/hook"})])
        a, src = adapter(tmp_path, conf)
        src.crash("serve")
        a.step(time.time())
    finally:
        logging.getLogger("healgym.serving").handlers = []
    text = buf.getvalue()
    assert "ERROR action decision=" in text and "ok=False" in text
    assert "WARNING alert reason=actuator_failure" in text
    assert a.metrics.alerts.labels(reason="actuator_failure")._value.get() == 1.0
