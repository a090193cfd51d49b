"""The extension recipes of docs/architecture.md, tried as a contributor would: each adds its
part in the places the recipe names, and nothing else is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from healgym.errors import CannotAct
from healgym.policy import Decision, load_saved_policy, register_format
from healgym.serving import actuators, config
from healgym.serving.config import ActuatorConf
from tests.helpers import quiet_env


class PagerParams(config.Strict):
    channel: str


class PagerActuator:
    """A new actuator type: posts to a chat channel (here: remembers the post)."""

    def __init__(self, params: Any) -> None:
        self.channel = params.channel
        self.posts: list[str] = []

    def execute(self, kind: str, target: str, key: str) -> str:
        if kind != "escalate":
            raise CannotAct(f"a pager can only page, not {kind}")
        self.posts.append(f"#{self.channel}: {target} needs a human ({key})")
        return "paged"


def test_add_an_actuator_is_a_class_a_params_model_and_two_entries(monkeypatch):
    monkeypatch.setitem(actuators.TYPES, "pager", PagerActuator)
    monkeypatch.setitem(config.PARAMS, "pager", PagerParams)
    conf = ActuatorConf(type="pager", actions=["escalate"], params={"channel": "oncall"})
    built = actuators.build_actuators([conf], ["noop", "escalate"])
    res = built["escalate"].execute("escalate", "pipeline", "k1")
    assert res.ok and res.detail == "paged" and res.attempts == 1
    assert built["escalate"].actuator.posts == ["#oncall: pipeline needs a human (k1)"]
    refused = built["escalate"].execute("restart", "serve", "k2")  # cannot: not retried
    assert not refused.ok and refused.attempts == 1
    with pytest.raises(ValueError, match="params.channel"):
        ActuatorConf(type="pager", actions=["escalate"], params={})
    with pytest.raises(ValueError, match="unknown actuator type 'pagr'"):
        ActuatorConf(type="pagr", actions=["escalate"])


class Always:
    def __init__(self, action: int) -> None:
        self.action = action

    def reset(self) -> None:
        pass

    def decide(self, obs: np.ndarray, info: dict[str, Any]) -> Decision:
        return Decision(self.action, {"rule": "always"})


def test_add_a_policy_format_is_a_loader_and_one_registration(tmp_path):
    env = quiet_env()

    def load(path: Path, model: Any) -> Always:
        meta = json.loads((path / "policy.json").read_text())
        return Always(model.action_names.index(meta["action"]))

    register_format("always-v1", load)
    (tmp_path / "policy.json").write_text(json.dumps({"format": "always-v1",
                                                      "action": "scale_up_serve"}))
    policy = load_saved_policy(tmp_path, env.model)
    obs, info = env.reset(seed=0)
    assert env.action_names[policy.decide(obs, info).action] == "scale_up_serve"


def test_add_a_flat_table_importer_is_one_yaml(tmp_path):
    from healgym.telemetry.importers import import_source

    t = pd.date_range("2026-01-01", periods=120, freq="30s", tz="UTC")
    rows = [{"ts": x.isoformat(), "svc": s, "p95": 40.0 + i % 7, "errs": 0.01, "rps": 90.0}
            for i, x in enumerate(t) for s in ("api", "db")]
    src = tmp_path / "src"
    src.mkdir()
    pd.DataFrame(rows).to_csv(src / "metrics.csv", index=False)
    mapping = tmp_path / "acme.yaml"
    mapping.write_text("""format: acme
reader: table
layout: wide
files: ["*.csv"]
timestamp: {column: ts}
entity: {column: svc}
step_seconds: null
metrics:
  latency_p95_ms: {column: p95}
  error_rate: {column: errs}
  throughput_rps: {column: rps}
""")
    ds = import_source(str(mapping), src)
    assert ds.stages == ["api", "db"] and ds.step_seconds == 30.0
    env = quiet_env(dataset=ds, episode_steps=20)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
