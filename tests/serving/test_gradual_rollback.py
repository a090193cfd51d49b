"""A gradual rollback (a canary back to the previous model version): traffic shifts in steps,
each step's analysis must hold, a failing analysis aborts and restores the split; the demo
service really splits its traffic between two model versions."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from healgym.serving.actuators import ActuatorConf, GradualRollbackActuator, Resilient


class Fake(BaseHTTPRequestHandler):
    """A service's /split and a Prometheus /api/v1/query, answering from class state."""

    share = 0.0
    posted: list[float] = []
    accuracy = staticmethod(lambda share: 0.95)

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        cls = type(self)
        if self.path.startswith("/split"):
            self._json(200, {"previous_share": cls.share})
        else:  # the analysis query
            self._json(200, {"data": {"result": [{"value": [0, str(cls.accuracy(cls.share))]}]}})

    def do_POST(self) -> None:  # noqa: N802
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls.share = float(body["previous_share"])
        cls.posted.append(cls.share)
        self._json(200, {"previous_share": cls.share})

    def log_message(self, *args: Any) -> None:
        pass


def serve(handler: type) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def params(url: str, **kw: Any) -> dict[str, Any]:
    return {"split_url": f"{url}/split", "prometheus_url": url, "wait_s": 0,
            "steps": [0.1, 0.5, 1.0],
            "analysis": {"accuracy": {"query": "min(model_accuracy)", "min": 0.9}}, **kw}


def test_the_traffic_shifts_step_by_step_while_the_analysis_holds():
    h = type("H", (Fake,), {"share": 0.0, "posted": []})
    server, url = serve(h)
    try:
        act = GradualRollbackActuator(params(url))
        out = act.execute("rollback", "pipeline", "k")
        assert h.posted == [0.1, 0.5, 1.0] and "rolled back in 3 steps" in out
    finally:
        server.shutdown()


def test_a_failing_analysis_aborts_and_restores_the_split():
    """The previous version is worse too (accuracy falls as its share grows): abort at the
    step whose analysis fails, put the split back where it started, report a failure."""
    h = type("H", (Fake,), {"share": 0.0, "posted": [],
                            "accuracy": staticmethod(lambda share: 0.95 - 0.2 * share)})
    server, url = serve(h)
    try:
        conf = ActuatorConf(type="gradual", actions=["rollback"], retries=1, timeout_s=30,
                            params=params(url))
        result = Resilient(GradualRollbackActuator(conf.typed_params()), conf).execute(
            "rollback", "pipeline", "k")
        assert not result.ok and "aborted at 50%" in result.error
        assert "accuracy = 0.85" in result.error and "split restored to 0%" in result.error
        assert h.posted == [0.1, 0.5, 0.0] and h.share == 0.0
    finally:
        server.shutdown()


def test_the_demo_service_splits_its_traffic_between_two_versions():
    """In the demo service, after a deploy the previous version stays loaded and gets the
    share of the requests the split says; at 1 it is the only version again."""
    from healgym.demo.service import Service, handler

    svc = Service(threshold=2.5, model_uri=None, rps=50, seed=0)  # a bad model: x > 2.5
    svc.previous = 0.0  # the good version before the deploy
    xs = svc.rng.normal(size=4000)
    for share in (0.0, 0.5):
        svc.set_split(share)
        got = np.array([svc.predict(float(x)) for x in xs])
        right = got == (xs > 0)
        # the previous (right) model answers ~share of the requests it disagrees on
        assert abs(right[(xs > 0) & (xs <= 2.5)].mean() - share) < 0.05
    server, url = serve(handler(svc))
    try:
        import requests

        assert requests.get(f"{url}/split", timeout=5).json()["previous_share"] == 0.5
        assert requests.post(f"{url}/split", json={"previous_share": 7}, timeout=5
                             ).status_code == 422
        r = requests.post(f"{url}/split", json={"previous_share": 1.0}, timeout=5).json()
        assert r == {"current": 0.0, "previous": None, "previous_share": 0.0}
        assert requests.post(f"{url}/split", json={"previous_share": 0.5}, timeout=5
                             ).status_code == 409  # nothing older loaded any more
    finally:
        server.shutdown()
