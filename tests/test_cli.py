from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from healgym.cli import main
from healgym.sim.faults import LIBRARY

ROOT = Path(__file__).resolve().parents[1]


def test_generate_import_info(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "raw"), "--days", "0.2"]) == 0
    assert main(["import", "canonical", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "5 stages" in out and "synthetic" in out and "step 60 s" in out


def test_faults_lists_the_library(capsys):
    assert main(["faults"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(LIBRARY) == 19 and "slow_dependency" in out


def test_console_script_and_error_exit_code(tmp_path):
    exe = Path(sys.executable).with_name("healgym")
    res = subprocess.run([str(exe), "info", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "not a healgym telemetry dataset" in res.stderr and "Traceback" not in res.stderr


def test_make_run_job_prints_episode_metrics(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "experiments/random_chaos.py"),
                          "--episodes", "2", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "mean uptime" in res.stdout and "downtime s" in res.stdout
    assert (tmp_path / "r.json").is_file()
