"""What is allowed survives a restart: cooldowns, budgets, pending approvals and a pause are
derived from the decision log; and no decision is taken on readings from before the start."""

from __future__ import annotations

import time

from healgym.serving.actuators import ActuatorConf
from healgym.serving.adapter import Adapter
from healgym.serving.config import GuardConf, ServeConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.observe import Observer
from tests.serving.common import adapter
from tests.serving_helpers import DictSource, RestartOnErrors


def restarted(a: Adapter, src: DictSource, tmp_path) -> Adapter:
    """A second adapter on the same decision log, as after a kill -9 (the first never closed)."""
    return Adapter(a.conf, RestartOnErrors(a.model), a.model,
                   DecisionLog(f"sqlite:///{tmp_path / 'log.db'}"),
                   Observer(a.model, a.conf.source, src), policy_version="test")


def test_cooldown_and_budget_hold_across_a_kill_minus_9(tmp_path):
    conf = ServeConf(guard=GuardConf(cooldown_s=600, hourly_budget=1),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    a, src = adapter(tmp_path, conf)
    src.crash("serve")
    first = a.log.record(a.step(time.time()))
    assert first["executed_action"] == "restart_serve"
    b = restarted(a, src, tmp_path)  # 32 s later, the same fault still showing
    assert b.restored["actions"] == 1
    rec = b.log.record(b.step(time.time() + 32))
    assert rec["executed_action"] is None and rec["guard"]["blocked"]
    assert "cooldown" in rec["reason"] or "budget" in rec["reason"]
    assert b.actuators["restart_serve"].actuator.calls == []
    # without the log's history the same step would restart it again
    fresh, src2 = adapter(tmp_path / "other", conf)
    src2.crash("serve")
    assert fresh.log.record(fresh.step(time.time()))["executed_action"] == "restart_serve"


def test_a_pending_approval_survives_a_restart_and_can_be_approved(tmp_path):
    conf = ServeConf(human={"mode": "approval", "timeout_s": 600}, guard=GuardConf(cooldown_s=0),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    a, src = adapter(tmp_path, conf)
    src.crash("serve")
    did = a.step(time.time())
    assert did in a.pending
    b = restarted(a, src, tmp_path)
    assert list(b.pending) == [did] and b.restored["pending"] == 1
    rec = b.approve(did, "alice", "still right")
    assert rec["executed_action"] == "restart_serve"


def test_a_pause_holds_across_a_restart_until_resumed(tmp_path):
    a, src = adapter(tmp_path)
    a.pause("bob", "maintenance")
    b = restarted(a, src, tmp_path)
    assert b.paused
    src.crash("serve")
    assert b.log.record(b.step(time.time()))["status"] == "paused"
    b.resume("bob", "done")
    assert not restarted(b, src, tmp_path).paused


def test_no_decision_on_readings_taken_before_the_start(tmp_path):
    """Prometheus answers with the last sample it has: just after a start that can be the
    stale `up=0` of a service the adapter itself launched. The first decisions wait for
    readings measured after the start."""
    a, src = adapter(tmp_path)
    src.crash("serve")
    src.t = a.started_at - 20.0  # the source's newest readings are from before the start
    rec = a.log.record(a.step(a.started_at + 1.0))
    assert rec["status"] == "warming_up" and rec["executed_action"] is None
    assert "after the adapter started" in rec["reason"]
    src.t = a.started_at + 2.0
    assert a.log.record(a.step(a.started_at + 3.0))["executed_action"] == "restart_serve"
    b, src_b = adapter(tmp_path / "nograce", ServeConf(startup_grace=False, actuators=[
        ActuatorConf(type="log", actions=["restart_serve"])]))
    src_b.crash("serve")
    src_b.t = b.started_at - 20.0
    assert b.log.record(b.step(b.started_at + 1.0))["executed_action"] == "restart_serve"
