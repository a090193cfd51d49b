"""The web console: the same tokens as the API (a session cookie after sign-in, a CSRF token
in every form, read-only sessions change nothing), and a human approving a pending action in
a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from healgym.serving.actuators import ActuatorConf
from healgym.serving.config import GuardConf, ServeConf
from tests.serving.common import TOKEN, adapter

READER = "r" * 24
ROOT = Path(__file__).resolve().parents[2]


def approval_adapter(tmp_path: Path):
    conf = ServeConf(human={"mode": "approval", "timeout_s": 1000},
                     guard=GuardConf(cooldown_s=0, kill_switch_file=str(tmp_path / "STOP")),
                     actuators=[ActuatorConf(type="log", actions=["restart_serve",
                                                                  "restart_ingest"])])
    a, src = adapter(tmp_path, conf)
    src.crash("serve")
    did = a.step(time.time())
    assert did in a.pending
    return a, src, did


def client_for(a):
    from fastapi.testclient import TestClient

    from healgym.serving.api import create_app

    return TestClient(create_app(a, TOKEN, READER))


def sign_in(client, token: str, name: str = "alice") -> str:
    r = client.post("/console/login", data={"operator": name, "token": token},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    page = client.get("/console").text
    return page.split("name='csrf' value='")[1].split("'")[0]


def test_the_console_needs_a_sign_in_with_a_valid_token(tmp_path):
    a, _, did = approval_adapter(tmp_path)
    c = client_for(a)
    r = c.get("/console", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    r = c.post("/console/login", data={"operator": "eve", "token": "wrong" * 5},
               follow_redirects=False)
    assert r.headers["location"].startswith("/console/login?err=")
    assert c.get("/console", follow_redirects=False).status_code == 303
    r = c.post("/console/login", data={"operator": "alice", "token": TOKEN},
               follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN not in cookie
    page = c.get("/console").text
    assert did[:8] in page and "restart_serve" in page and "Pending approvals" in page


def test_approve_from_the_console_with_csrf_and_the_read_only_session_refused(tmp_path):
    a, _, did = approval_adapter(tmp_path)
    c = client_for(a)
    csrf = sign_in(c, TOKEN)
    r = c.post(f"/console/decisions/{did}/approve", data={"reason": "looks right",
                                                         "csrf": "forged"},
               follow_redirects=False)
    assert r.status_code == 403 and did in a.pending  # a forged form changes nothing
    r = c.post(f"/console/decisions/{did}/approve", data={"reason": "looks right",
                                                         "csrf": csrf},
               follow_redirects=False)
    assert r.status_code == 303 and "done" in r.headers["location"]
    assert a.wait_idle(10)
    rec = a.log.record(did)
    assert rec["state"] == "acted" and rec["human"]["operator"] == "alice"
    ro = client_for(a)
    ro_csrf = sign_in(ro, READER, "bob")
    assert "disabled" in ro.get("/console").text
    r = ro.post("/console/pause", data={"reason": "x", "csrf": ro_csrf},
                follow_redirects=False)
    assert r.status_code == 403 and not a.paused


def test_the_kill_switch_and_pause_from_the_console(tmp_path):
    a, _, did = approval_adapter(tmp_path)
    c = client_for(a)
    csrf = sign_in(c, TOKEN)
    c.post("/console/kill-switch", data={"on": "1", "reason": "incident review",
                                         "csrf": csrf})
    assert (tmp_path / "STOP").exists() and "kill switch ON" in c.get("/console").text
    r = c.post(f"/console/decisions/{did}/approve", data={"reason": "go", "csrf": csrf},
               follow_redirects=False)
    assert "kill+switch" in r.headers["location"] or "kill%20switch" in r.headers["location"]
    assert did in a.pending  # refused while stopped
    c.post("/console/kill-switch", data={"on": "0", "reason": "done", "csrf": csrf})
    assert not (tmp_path / "STOP").exists()
    c.post("/console/pause", data={"reason": "maintenance", "csrf": csrf})
    assert a.paused and "paused" in c.get("/console").text


def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_a_human_approves_a_pending_action_in_a_real_browser(tmp_path):
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from healgym.serving.api import create_app

    drv = browser()
    a, src, did = approval_adapter(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(a, TOKEN, READER), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    shots = Path(os.environ.get("HEALGYM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        drv.get(f"{base}/console")
        WebDriverWait(drv, 30).until(ec.presence_of_element_located((By.ID, "signin")))
        assert drv.current_url.endswith("/console/login")
        drv.save_screenshot(str(shots / "console-login.png"))
        drv.find_element(By.ID, "operator").send_keys("alice")
        drv.find_element(By.ID, "token").send_keys(TOKEN)
        drv.find_element(By.ID, "signin").click()
        WebDriverWait(drv, 30).until(ec.presence_of_element_located((By.ID, "pending")))
        assert "Pending approvals" in drv.page_source and did[:8] in drv.page_source
        drv.save_screenshot(str(shots / "console-pending.png"))
        drv.find_element(By.ID, f"reason-{did}").send_keys("matches the alert")
        drv.find_element(By.ID, f"approve-{did}").click()
        flash = WebDriverWait(drv, 30).until(ec.presence_of_element_located((By.ID, "flash")))
        assert "approve " + did[:8] + " by alice: done" in flash.text
        assert a.wait_idle(10) and a.log.record(did)["state"] == "acted"
        assert a.log.record(did)["human"]["reason"] == "matches the alert"
        src.healthy()
        a.step(time.time() + 40)
        drv.get(f"{base}/console")
        row = WebDriverWait(drv, 30).until(ec.presence_of_element_located(
            (By.ID, "decisions"))).text
        assert "resolved restart_serve restart_serve alice verified" in row
        drv.save_screenshot(str(shots / "console-after.png"))
        for name in ("console-login.png", "console-pending.png", "console-after.png"):
            assert (shots / name).stat().st_size > 5000
    finally:
        drv.quit()
        server.should_exit = True
