"""The decision log on every backend: SQLite (a file, WAL) and PostgreSQL (a real server started
for the test from Debian's `postgresql` package; .ci/run installs it)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from healgym.serving.decision_log import DecisionLog

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    if not PG_BIN or not shutil.which("pg_ctl", path=PG_BIN[-1]):
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; "
                    ".ci/run does it)")
    bindir = Path(PG_BIN[-1])
    # not under pytest's tmp (mode 0700, owned by us): the server may run as another user
    root = Path(tempfile.mkdtemp(prefix="healgym-pg-"))
    data = root / "data"
    data.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres user
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "healgym"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l",
                    str(data / "log"), "-o", f"-p {port} -c listen_addresses=127.0.0.1 "
                    f"-k {data}", "start"], check=True, capture_output=True)
    try:
        url = f"postgresql+psycopg://healgym@127.0.0.1:{port}/postgres"
        for _ in range(50):
            try:
                DecisionLog(url)
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.2)
        yield url
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return request.getfixturevalue("postgres_url")


def test_the_log_folds_exports_and_recovers_on_every_backend(log_url, tmp_path):
    log = DecisionLog(log_url)
    before = len(log.records())
    a = log.new_decision(policy="p", policy_version="v1", observation=[0.5, 1.0],
                         signals={"error_rate[serve]": 1.0}, proposed_action="restart_serve",
                         explanation={"rule": "errors"}, guard={"blocked": False},
                         status="proposed")
    log.event(a, "act_started", {"action": "restart_serve", "idempotency_key": a})
    log.event(a, "act_result", {"ok": True, "detail": "restarted"})
    log.event(a, "outcome", {"resolved": True, "ttr_s": 12.5, "reward": -3.0})
    b = log.new_decision(policy="p", policy_version="v1", observation=[0.0, 0.0], signals={},
                         proposed_action="rollback", explanation={}, guard={},
                         status="proposed")
    log.event(b, "human", {"operator": "alice", "verdict": "override", "action": "noop",
                           "reason": "deploy in progress"})
    log.event(b, "act_started", {"action": "noop", "idempotency_key": b})
    rec = log.record(a)
    assert rec is not None and rec["state"] == "resolved" and rec["ttr_s"] == 12.5
    assert rec["observation"] == [0.5, 1.0] and rec["explanation"] == {"rule": "errors"}
    assert DecisionLog(log_url).recover() == [b]  # started, no result: interrupted, not re-run
    rb = log.record(b)
    assert rb is not None and rb["state"] == "interrupted" and rb["human"]["operator"] == "alice"
    rows = log.records()
    assert len(rows) == before + 2
    import pandas as pd

    df = pd.read_parquet(log.export_parquet(tmp_path / "log.parquet"))
    assert len(df) == before + 2 and set(df["id"]) >= {a, b}


def test_the_analyst_tools_read_every_backend(log_url, tmp_path):
    """The report and the loader read PostgreSQL as they read SQLite (a simulated episode with
    an operator written through the real adapter)."""
    from agents.random_agent import NoOpAgent
    from healgym.analysis import load_log
    from healgym.analysis.log import Filters
    from healgym.analysis.report import write_report
    from healgym.envs.pipeline_heal import PipelineHealEnv
    from healgym.serving.sim import OracleOperator, simulate_serving

    env = PipelineHealEnv(episode_steps=120)
    log = DecisionLog(log_url)
    before = len(log.records())
    sc = {"name": "x", "faults": [{"at": 100, "fault": "process_crash", "stage": "serve"}]}
    simulate_serving(env, NoOpAgent(), log, seed=0, options={"scenario": sc},
                     operator=OracleOperator(env), start=1.9e9, policy_version="pg-test")
    frames = load_log(log_url, Filters(policy_version="pg-test"))
    assert len(frames.decisions) == len(log.records()) - before == 121
    assert (frames.decisions["human_verdict"] == "override").sum() >= 1
    assert "restart_serve" in set(frames.actions["action"])
    r = write_report(log_url, tmp_path / "r.html", Filters(policy_version="pg-test"))
    assert r.summary["decisions"] == 121 and r.summary["incidents"] >= 1
