"""Shared pieces of the serving tests: a local HTTP stand-in and an adapter on scripted metrics."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from healgym.serving.actuators import (
    ActuatorConf,
)
from healgym.serving.adapter import Adapter
from healgym.serving.config import ServeConf
from healgym.serving.decision_log import DecisionLog
from healgym.serving.observe import Observer
from tests.serving_helpers import DictSource, RestartOnErrors, model

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "t" * 24


class Recorder(BaseHTTPRequestHandler):
    """A local HTTP stand-in: records every request, answers from ``routes``."""

    routes: dict[tuple[str, str], tuple[int, Any]] = {}
    seen: list[dict[str, Any]] = []

    def _handle(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        self.seen.append({"method": method, "path": self.path, "body": body,
                          "headers": dict(self.headers)})
        path = self.path.split("?")[0]
        code, payload = self.routes.get((method, path), (404, {"error": "not found"}))
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if isinstance(payload, str)
                         else "application/json")
        self.end_headers()
        self.wfile.write(data.encode())

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in():
    handler = type("H", (Recorder,), {"routes": {}, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def adapter(tmp_path: Path, conf: ServeConf | None = None, **kw: Any) -> tuple[Adapter, Any]:
    m = model()
    conf = conf or ServeConf(actuators=[ActuatorConf(type="log", actions=[
        f"restart_{s}" for s in m.stages] + ["escalate"])])
    src = DictSource(m)
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}")
    a = Adapter(conf, RestartOnErrors(m), m, log, Observer(m, conf.source, src),
                policy_version="test", **kw)
    return a, src


