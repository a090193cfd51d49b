"""`healgym serve` as systemd and Kubernetes stop it, and after a kill -9: SIGTERM and SIGINT
stop it cleanly (managed processes stopped, exit 0 within a bound), and a restarted adapter
stops the orphans an adapter killed with -9 left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-c", "import time; time.sleep(600)"]


def config(tmp_path: Path) -> Path:
    conf = {
        "stages": ["serve"], "interval_s": 0.5,
        "decision_log": f"sqlite:///{tmp_path / 'log.db'}",
        "source": {"kind": "prometheus", "url": "http://127.0.0.1:9", "timeout_s": 0.2},
        "actuators": [{"type": "process", "actions": ["restart_serve"], "params": {
            "processes": {"serve": {"cmd": WORKER}}, "pid_dir": str(tmp_path / "pids")}}],
    }
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def start(tmp_path: Path, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """``sigint_ignored``: started as a shell starts a background job (``healgym serve &``),
    with SIGINT ignored, which Python keeps unless the program installs its own handler."""
    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "healgym.cli", "serve", "--policy",
         str(ROOT / "configs/runbooks/demo.yaml"), "--config", str(config(tmp_path)),
         "--no-api"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=ignore if sigint_ignored else None)


def worker_pids(tmp_path: Path, timeout: float = 60.0, exclude: tuple[int, ...] = ()
                ) -> list[int]:
    end = time.time() + timeout
    while time.time() < end:
        pids = [int(f.stem) for f in (tmp_path / "pids").glob("*.pid")] \
            if (tmp_path / "pids").is_dir() else []
        pids = [p for p in pids if p not in exclude]
        if pids:
            return pids
        time.sleep(0.2)
    raise AssertionError("no managed worker started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text(
    ).split()[2]


@pytest.mark.parametrize("sig, background", [(signal.SIGTERM, False), (signal.SIGINT, False),
                                             (signal.SIGINT, True)])
def test_a_stop_signal_stops_the_adapter_and_its_processes_cleanly(tmp_path, sig, background):
    proc = start(tmp_path, sigint_ignored=background)
    try:
        (child,) = worker_pids(tmp_path)
        assert alive(child)
        time.sleep(1.0)  # a few decision steps
        t0 = time.time()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert time.time() - t0 < 15
        assert f"{sig.name}: stopping" in err
        assert not alive(child) and not list((tmp_path / "pids").glob("*.pid"))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_restarted_adapter_stops_the_orphans_of_one_killed_with_minus_9(tmp_path):
    first = start(tmp_path)
    (orphan,) = worker_pids(tmp_path)
    first.kill()  # SIGKILL: no cleanup at all
    first.wait(10)
    assert alive(orphan)  # its own session: it lives on
    second = start(tmp_path)
    try:
        (new,) = worker_pids(tmp_path, exclude=(orphan,))
        end = time.time() + 20
        while alive(orphan) and time.time() < end:
            time.sleep(0.2)
        assert not alive(orphan) and alive(new)
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
        assert second.returncode == 0 and not alive(new)
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
        if alive(orphan):
            os.killpg(orphan, signal.SIGKILL)


def test_a_second_actuator_in_the_same_process_leaves_the_first_ones_workers_alone(tmp_path):
    """Two adapters in one process share a pid_dir (a restart inside a test, a second
    pipeline): starting the second must not take the first one's live workers for orphans."""
    from healgym.serving.actuators import ProcessActuator

    params = {"processes": {"serve": {"cmd": WORKER}}, "pid_dir": str(tmp_path / "pids")}
    first = ProcessActuator(params)
    first.start()
    try:
        pid = first.procs["serve"][0].pid
        second = ProcessActuator({**params, "processes": {"other": {"cmd": WORKER}}})
        second.start()
        assert second.adopted == [] and alive(pid)
        second.close()
    finally:
        first.close()
    assert not alive(pid)
