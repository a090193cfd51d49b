"""The layer contract holds: ``healgym`` never imports ``agents`` (import-linter, configured in
pyproject.toml; ``make lint`` runs it too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_healgym_never_imports_agents():
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout.replace("Contracts: ", "")


def test_policy_formats_and_baselines_are_found_by_name():
    from healgym.policy import RUNBOOK_FORMAT, baseline, formats

    assert {"healgym-qtable", "healgym-rlmodule", RUNBOOK_FORMAT} <= set(formats())
    from healgym.envs.pipeline_heal import PipelineHealEnv

    assert baseline("oracle", PipelineHealEnv()).name == "oracle"
