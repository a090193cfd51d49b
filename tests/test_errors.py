"""One error path for users: a mistake is one line on stderr and exit code 2, no traceback;
``--debug`` shows the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from healgym.cli import main
from healgym.errors import explain

ROOT = Path(__file__).resolve().parents[1]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_an_empty_or_header_only_csv_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "telemetry.csv").write_text("")
    assert main(["import", "canonical", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "o1")]) == 2
    assert one_line(capsys).startswith("healgym: error: ")
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "telemetry.csv").write_text("timestamp,stage,latency_p95_ms\n")
    assert main(["import", "canonical", str(tmp_path / "head"), "--out",
                 str(tmp_path / "o2")]) == 2
    assert one_line(capsys).startswith("healgym: error: ")


def test_a_missing_dataset_and_an_adapter_that_is_not_running(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HEALGYM_TOKEN", "t" * 24)  # reads need the token too
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert "nope" in one_line(capsys)
    assert main(["override", "list", "--url", "http://127.0.0.1:9"]) == 2
    line = one_line(capsys)
    assert "cannot reach" in line and "is `healgym serve` running" in line


def test_a_pickle_inside_a_policy_file_is_refused_without_loading_it(tmp_path, capsys):
    from healgym.envs.pipeline_heal import PipelineHealEnv
    from healgym.policy import load_saved_policy

    m = PipelineHealEnv().model
    from agents.qlearning import QLearningAgent

    agent = QLearningAgent(m)
    agent.save(tmp_path / "p")
    np.savez(tmp_path / "p" / "q.npz", q=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle") as exc:
        load_saved_policy(tmp_path / "p", m)
    assert "never loads" in explain(exc.value)


def test_a_registry_version_that_does_not_exist(tmp_path):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    c.create_registered_model("svc")
    with pytest.raises(Exception) as exc:  # noqa: B017 (mlflow's own exception type)
        c.get_model_version_by_alias("svc", "champion")
    assert explain(exc.value).startswith("MLflow registry: ")


def test_debug_shows_the_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "healgym.cli", "--debug", "info",
                        str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" in r.stderr and "healgym: error:" in r.stderr


def test_hydra_entry_points_say_a_users_mistake_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "experiments/evaluate.py", "qlearning_path=/nope",
                        "policies=[qlearning]", f"hydra.run.dir={tmp_path}",
                        f"output_dir={tmp_path}",
                        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert "evaluate: error: /nope: not a saved Q-learning policy (policy.json missing)" in \
        r.stderr


def test_every_command_has_a_summary_and_every_option_help():
    from healgym.cli import build_parser

    p = build_parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    summaries = {c.dest: c.help for c in sub._choices_actions}
    assert set(summaries) == set(sub.choices) and all(summaries.values()), summaries
    missing = [f"{name} {a.option_strings or a.dest}" for name, sp in sub.choices.items()
               for a in sp._actions if a.help is None and a.dest != "help"]
    assert missing == [], missing


def test_a_key_no_schema_has_fails_instead_of_being_ignored(tmp_path):
    r = subprocess.run([sys.executable, "experiments/evaluate.py", "+agent.alpah=0.5",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "config key 'agent.alpah' is not in the QLearningConf schema" in r.stderr
    assert 'Did you mean "alpha"?' in r.stderr


def test_env_arguments_are_one_pipeline_config():
    import gymnasium as gym

    import healgym
    from healgym.envs.vector import PipelineHealVectorEnv
    from healgym.errors import ConfigError
    from healgym.sim.model import PipelineConfig

    with pytest.raises(ConfigError, match="unknown argument 'stagse'. Did you mean \"stages\"?"):
        gym.make(healgym.ENV_ID, stagse=["a"])
    cfg = PipelineConfig(episode_steps=50, chaos=False)
    scalar = gym.make(healgym.ENV_ID, config=cfg).unwrapped
    vec = PipelineHealVectorEnv(num_envs=2, episode_steps=50, config=cfg)
    assert scalar.config == vec.config == cfg and scalar.model.episode_steps == 50
    o1, _ = scalar.reset(seed=3)
    o2, _ = vec.reset(seed=3)
    np.testing.assert_array_equal(o1, o2[0])
