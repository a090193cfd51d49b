"""The serving loop: observe, decide, guard, act, verify, every step recorded."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from healgym.envs.pipeline_heal import PipelineHealEnv
from healgym.errors import ConfigError
from healgym.serving.actuators import (
    ActuatorConf,
)
from healgym.serving.adapter import Adapter
from healgym.serving.config import GuardConf, ServeConf, SourceConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.observe import Observer
from tests.serving.common import ROOT, adapter
from tests.serving_helpers import DictSource, RestartOnErrors, model


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


class AlwaysRestart:
    """Proposes restarting serve at every step it may (a policy unsure of healthy states)."""

    name = "always-restart"

    def reset(self) -> None:
        pass

    def decide(self, obs, info):
        from healgym.policy import Decision

        m = model()
        a = m.action_names.index("restart_serve")
        return Decision(a if info["action_mask"][a] else 0, {})


def test_incident_only_never_touches_a_healthy_pipeline(tmp_path):
    """guard.incident_only: a restart proposed while the SLO holds is blocked with its reason; once
    the SLO is violated (an incident opens at that reading) the same proposal is executed."""
    m = model()
    conf = ServeConf(guard=GuardConf(cooldown_s=0, incident_only=True, approval_risk="never"),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    src = DictSource(m)
    a = Adapter(conf, AlwaysRestart(), m, DecisionLog(f"sqlite:///{tmp_path / 'log.db'}"),
                Observer(m, conf.source, src), policy_version="test")
    t = time.time()
    for k in range(3):
        src.t = t + 10 * k
        rec = a.log.record(a.step(t + 10 * k))
        assert rec["proposed_action"] == "restart_serve" and rec["executed_action"] is None
        assert rec["guard"]["blocked"] and "no incident is open" in rec["reason"]
    src.crash("serve")
    src.t = t + 30
    rec = a.log.record(a.step(t + 30))
    assert rec["executed_action"] == "restart_serve" and not rec["guard"]["blocked"]
    assert a.actuators["restart_serve"].actuator.calls == [("restart", "serve", rec["id"])]
    # without the flag, the healthy pipeline is restarted at once
    conf2 = ServeConf(guard=GuardConf(cooldown_s=0, approval_risk="never"),
                      actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    src2 = DictSource(m)
    b = Adapter(conf2, AlwaysRestart(), m, DecisionLog(f"sqlite:///{tmp_path / 'log2.db'}"),
                Observer(m, conf2.source, src2), policy_version="test")
    assert b.log.record(b.step(t))["executed_action"] == "restart_serve"


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


def test_a_real_policy_loads_by_path(tmp_path):
    from healgym.serving.policies import load_policy

    m = model()
    policy, version = load_policy(str(ROOT / "configs" / "runbooks" / "classic.yaml"), m)
    a = Adapter(ServeConf(), policy, m, DecisionLog(f"sqlite:///{tmp_path / 'l.db'}"),
                Observer(m, SourceConf(), DictSource(m)), policy_version=version)
    assert a.log.record(a.step())["policy"] == policy.name
    with pytest.raises(Exception, match="not a runbook YAML"):
        load_policy(str(tmp_path), m)




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




def test_closing_the_adapter_releases_actuator_threads_and_logs_the_open_incident(tmp_path):

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


def test_a_history_policy_is_served_with_the_history_block(tmp_path):
    """A pipeline trained with history=True is served: the adapter's HistoryBuilder fills the
    block as the env lays it out: z deltas since the previous reading (0 on the first), the
    time since the standing alarm began, and the last completed action with whether its target
    recovered (read at the first reading after it completed)."""
    from healgym.sim.observation import alarm

    m = PipelineHealEnv(history=True).model
    lay = m.layout
    conf = ServeConf(durations_s={"restart": 5.0}, guard=GuardConf(cooldown_s=0),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve"])])
    src = DictSource(m)
    a = Adapter(conf, RestartOnErrors(m), m, DecisionLog(f"sqlite:///{tmp_path / 'log.db'}"),
                Observer(m, conf.source, src), policy_version="test")
    t = time.time()
    obs = []
    for when, crash in [(0, False), (10, False), (20, True), (30, True), (40, False),
                        (50, False)]:
        if crash:
            src.crash("serve")
        else:
            src.healthy()
        src.t = t + when
        rec = a.log.record(a.step(t + when))
        obs.append(np.asarray(rec["observation"], dtype=np.float32))
        assert len(obs[-1]) == lay.n
    o0, o1, o2, o3, o4, o5 = obs
    assert not o0[lay.dz.slice].any()  # the first reading has no previous one
    np.testing.assert_allclose(o2[lay.dz.slice], o2[lay.z.slice] - o1[lay.z.slice], atol=1e-5)
    assert alarm(m, o2) and o2[lay.hst("since_alarm_h")] == 0.0
    assert o3[lay.hst("since_alarm_h")] == pytest.approx(10 / 3600)
    restart = m.action_names.index("restart_serve")
    assert a.log.record(a.log.records()[2]["id"])["executed_action"] == "restart_serve"
    assert o2[lay.done.slice].argmax() == 0  # nothing completed yet
    # the restart at 20 s completed at 25 s; the next reading (30 s) still shows the crash
    assert o3[lay.done.slice].argmax() == restart and o3[lay.hst("last_done_fixed")] == 0.0
    # restarted again at 30 s (done at 35 s); at 40 s serve is healthy: its target recovered
    assert o4[lay.done.slice].argmax() == restart and o4[lay.hst("last_done_fixed")] == 1.0
    assert o5[lay.hst("since_alarm_h")] == 0.0 and not alarm(m, o5)
    with pytest.raises(ConfigError, match="HistoryBuilder"):
        from healgym.sim.observation import encode

        encode(m, a.observer.read(a.state, t + 60).signals)
