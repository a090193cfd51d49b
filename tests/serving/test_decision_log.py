"""The decision log is durable: a kill -9 loses nothing acknowledged and never acts twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from healgym.serving.actuators import (
    ActuatorConf,
    LogActuator,
    Resilient,
)
from healgym.serving.adapter import Adapter
from healgym.serving.config import ServeConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.observe import Observer
from tests.serving.common import ROOT
from tests.serving_helpers import DictSource, RestartOnErrors, model

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
