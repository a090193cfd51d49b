"""The serve config: validated at load time, naming the file and the key."""

from __future__ import annotations

import pytest

from healgym.errors import ConfigError
from healgym.serving.config import load_config
from tests.serving.common import ROOT


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
