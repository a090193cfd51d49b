"""`healgym serve` and `healgym override` as an operator runs them."""

from __future__ import annotations

import json
import threading
import time

import pytest

from healgym.serving.actuators import (
    ActuatorConf,
)
from healgym.serving.config import ServeConf
from healgym.serving.decision_log import DecisionLog
from tests.serving.common import ROOT, TOKEN, adapter
from tests.serving_helpers import model


def test_healgym_serve_cli_takes_decisions_from_scraped_metrics(stand_in, tmp_path, capsys):
    from healgym.cli import main
    from healgym.sim.faults import METRICS

    handler, url = stand_in
    m = model()
    lines = []
    for i, stage in enumerate(m.stages):
        for j, metric in enumerate(METRICS):
            lines.append(f'{metric}{{stage="{stage}"}} {m.median[i, j]}')
    handler.routes[("GET", "/metrics")] = (200, "\n".join(lines) + "\naccuracy 0.95\n")
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"source: {{kind: scrape, targets: ['{url}/metrics']}}\ninterval_s: 0.1\n"
                   f"decision_log: sqlite:///{tmp_path / 'd.db'}\n")
    assert main(["serve", "--policy", str(ROOT / "configs/runbooks/classic.yaml"),
                 "--config", str(cfg), "--steps", "2"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [o["status"] for o in out] == ["proposed", "proposed"]
    assert out[0]["proposed_action"] == "noop"  # healthy pipeline: the runbook waits
    assert len(DecisionLog(f"sqlite:///{tmp_path / 'd.db'}").records()) == 2
    assert main(["serve", "--config", str(cfg), "--steps", "1"]) == 2  # no policy: clear error


def test_healgym_override_cli_against_a_live_api(tmp_path, capsys, monkeypatch):
    import uvicorn

    from healgym.cli import main
    from healgym.serving.api import create_app

    m = model()
    conf = ServeConf(human={"mode": "approval"}, actuators=[ActuatorConf(
        type="log", actions=[f"restart_{s}" for s in m.stages])])
    a, src = adapter(tmp_path, conf)
    # log_config=None: uvicorn must not bind logging handlers to this test's captured stderr
    server = uvicorn.Server(uvicorn.Config(create_app(a, TOKEN), host="127.0.0.1", port=0,
                                           log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        t0 = time.time()
        while not server.started and time.time() - t0 < 20:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        src.crash("serve")
        did = a.step()
        monkeypatch.delenv("HEALGYM_TOKEN", raising=False)
        assert main(["override", "approve", did, "--url", url, "--reason", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("healgym: error: no API token: set the environment variable "
                              "$HEALGYM_TOKEN") and "Traceback" not in err
        monkeypatch.setenv("HEALGYM_TOKEN", "w" * 20)
        assert main(["override", "approve", did, "--url", url, "--reason", "x"]) == 2
        err = capsys.readouterr().err
        assert "answered 401" in err and "is $HEALGYM_TOKEN the adapter's token?" in err
        monkeypatch.setenv("HEALGYM_TOKEN", TOKEN)
        assert main(["override", "approve", "nope", "--url", url, "--reason", "x"]) == 2
        assert "answered 404: no decision nope" in capsys.readouterr().err
        assert main(["override", "list", "--pending", "--url", url]) == 0
        assert did in capsys.readouterr().out
        assert main(["override", "override", did, "--action", "restart_ingest", "--operator",
                     "bob", "--reason", "not serve", "--url", url]) == 0
        rec = json.loads(capsys.readouterr().out)
        assert rec["executed_action"] == "restart_ingest" and rec["human"]["operator"] == "bob"
        assert main(["override", "pause", "--reason", "window", "--url", url]) == 0 and a.paused
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_non_loopback_bind_needs_an_explicit_flag_and_warns(capsys):
    from healgym.errors import ConfigError
    from healgym.serving.cli import check_bind
    from healgym.serving.config import ApiConf

    check_bind(ApiConf())  # 127.0.0.1: silent
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="api.allow_remote"):
        check_bind(ApiConf(host="0.0.0.0"))
    check_bind(ApiConf(host="0.0.0.0", allow_remote=True))
    assert "WARNING" in capsys.readouterr().err


def test_tokens_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    from healgym.errors import ConfigError
    from healgym.serving.cli import api_tokens
    from healgym.serving.config import ApiConf

    monkeypatch.delenv("HEALGYM_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="no API token"):
        api_tokens(ApiConf())
    monkeypatch.setenv("HEALGYM_TOKEN", "e" * 20)
    assert api_tokens(ApiConf()) == ("e" * 20, None)
    (tmp_path / "tok").write_text("f" * 20 + "\n")
    (tmp_path / "ro").write_text("g" * 20)
    assert api_tokens(ApiConf(token_file=str(tmp_path / "tok"),
                              read_token_file=str(tmp_path / "ro"))) == ("f" * 20, "g" * 20)
    with pytest.raises(ConfigError, match="cannot read a token"):
        api_tokens(ApiConf(token_file=str(tmp_path / "missing")))
    # no --token flag exists on the command line
    from healgym.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--token", "x"])


def test_override_against_no_adapter_says_so_without_a_traceback(capsys, monkeypatch):
    from healgym.cli import main

    monkeypatch.setenv("HEALGYM_TOKEN", "t" * 24)
    assert main(["override", "list", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the adapter" in err and "Traceback" not in err
