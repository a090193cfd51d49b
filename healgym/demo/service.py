"""The demo ML service: a model served over HTTP, with its own /metrics.

    python -m healgym.demo.service --port 8801 [--model-uri models:/demo-model@champion]

It classifies ``x`` (one feature) with a threshold model; the threshold comes from the MLflow
registry (the ``threshold`` param of the run behind ``--model-uri``, re-read every 5 s, so moving
the alias deploys another version) or ``--threshold``. An internal load generator sends it
``--rps`` labelled requests per second (seeded) and measures what a monitoring system would:
p95 latency, error rate, throughput, CPU, memory, queue depth, accuracy and input drift (PSI).

Faults are injected for real through ``POST /chaos`` (JSON: ``latency_ms``, ``leak_mb_per_s``,
``error_rate``, ``drift``): requests really sleep, memory really grows (past
``--memory-limit-mb`` the process dies, as under a cgroup's OOM killer), requests really fail,
inputs really shift (the model, fitted before the shift, gets worse). They live in the process, so
a restart clears them, as in production. After a deploy the previous version stays loaded:
``POST /split`` ``{"previous_share": w}`` sends that share of the traffic to it (``GET /split``
shows the split; at 1 the previous version is the only one again): what a gradual rollback
shifts. ``POST /retrain`` refits the model's threshold on the
last 10 s of labelled traffic (what a retraining pipeline would do). ``kill -9`` of the process is
the crash fault.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest

STAGE = "serve"
BINS = np.linspace(-3, 3, 11)
REF = np.histogram(np.random.default_rng(0).normal(size=20000), BINS)[0] / 20000 + 1e-4


class Service:
    def __init__(self, threshold: float, model_uri: str | None, rps: float, seed: int,
                 memory_limit_mb: float = 2048.0) -> None:
        self.threshold, self.model_uri, self.rps = threshold, model_uri, rps
        # two model versions with a weighted split: the previous version (the one before the
        # last deploy) gets ``previous_share`` of the traffic (a gradual rollback's canary)
        self.previous: float | None = None
        self.previous_share = 0.0
        self.deployed_version: str | None = None  # the registry version being served
        self.previous_version: str | None = None  # the previous one's
        self.memory_limit_mb = memory_limit_mb
        self.retrained = False
        self.rng = np.random.default_rng(seed)
        self.chaos: dict[str, float] = {"latency_ms": 0.0, "leak_mb_per_s": 0.0,
                                        "error_rate": 0.0, "drift": 0.0}
        self.leak: list[bytearray] = []
        self.window: deque[tuple[float, float, bool, bool, float]] = deque()  # t, ms, ok, right, x
        self.labels: deque[tuple[float, int]] = deque(maxlen=2000)
        self.ref = REF
        self.lock = threading.Lock()
        self.registry = r = CollectorRegistry()
        labels = ["stage"]
        self.g = {name: Gauge(name, name, labels, registry=r) for name in (
            "latency_p95_ms", "error_rate", "throughput_rps", "cpu_pct", "memory_pct",
            "queue_depth")}
        self.accuracy = Gauge("model_accuracy", "accuracy on labelled traffic", registry=r)
        self.psi = Gauge("drift_psi", "PSI of the input vs the training data", registry=r)
        self.pred_psi = Gauge("prediction_psi", "PSI of the predicted classes vs the labels' "
                              "base rate (a proxy that needs no fresh label)", registry=r)
        self.version = Gauge("model_threshold", "the deployed model's threshold", registry=r)
        self.share = Gauge("model_previous_share", "share of traffic on the previous model "
                           "version (a gradual rollback)", registry=r)
        self._cpu0, self._t0 = time.process_time(), time.time()

    # the model
    def predict(self, x: float) -> int:
        c = self.chaos
        if c["latency_ms"]:
            time.sleep(c["latency_ms"] / 1000.0)
        if c["error_rate"] and self.rng.random() < c["error_rate"]:
            raise RuntimeError("injected error")
        if self.previous is not None and self.previous_share > 0 and \
                self.rng.random() < self.previous_share:
            return int(x > self.previous)
        return int(x > self.threshold)

    def set_split(self, share: float) -> dict[str, Any]:
        """Send ``share`` of the traffic to the previous model version (0..1)."""
        if self.previous is None and share > 0:
            raise RuntimeError("no previous model version to shift traffic to")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"previous_share={share!r}: must be within [0, 1]")
        self.previous_share = float(share)
        if share >= 1.0 and self.previous is not None:  # fully rolled back: one model again
            self.threshold, self.previous, self.previous_share = self.previous, None, 0.0
        return self.split()

    def split(self) -> dict[str, Any]:
        out: dict[str, Any] = {"current": self.threshold, "previous": self.previous,
               "previous_share": self.previous_share}
        if self.previous is not None and self.previous_version is not None:
            out["previous_version"] = self.previous_version  # its registry version
        return out

    def refresh_model(self) -> None:
        if not self.model_uri or self.retrained:  # a retrained model serves until a deploy
            return
        try:
            from mlflow import MlflowClient

            name, _, alias = self.model_uri[len("models:/"):].partition("@")
            c = MlflowClient()
            mv = c.get_model_version_by_alias(name, alias or "champion")
            if mv.version == self.deployed_version:
                return
            run = c.get_run(mv.run_id) if mv.run_id else None
            if run is not None and "threshold" in run.data.params:
                new = float(run.data.params["threshold"])
                if self.deployed_version is not None and new != self.threshold:
                    # a deploy: the version before it stays loaded as the previous one
                    self.previous, self.previous_share = self.threshold, 0.0
                    self.previous_version = self.deployed_version
                self.threshold = new
            self.deployed_version = mv.version
        except Exception:  # noqa: BLE001 - keep serving the last good model
            pass

    # traffic and measurements
    def tick(self) -> None:
        x = float(self.rng.normal() + self.chaos["drift"])
        # the label's boundary moved with the inputs: a model fitted before the shift errs
        label = int(x - self.chaos["drift"] > 0.0)
        t0 = time.perf_counter()
        ok, right = True, False
        try:
            right = self.predict(x) == label
        except RuntimeError:
            ok = False
        ms = (time.perf_counter() - t0) * 1000.0 + 2.0  # + the network hop
        with self.lock:
            self.window.append((time.time(), ms, ok, right, x))
            self.labels.append((x, label))

    def measure(self) -> None:
        now = time.time()
        with self.lock:
            while self.window and now - self.window[0][0] > 10.0:
                self.window.popleft()
            w = list(self.window)
        if self.chaos["leak_mb_per_s"]:
            self.leak.append(bytearray(int(self.chaos["leak_mb_per_s"] * 1e6)))
        span = max(min(now - self._t0, 10.0), 1.0)
        g = self.g
        g["throughput_rps"].labels(STAGE).set(sum(ok for _, _, ok, _, _ in w) / span)
        g["error_rate"].labels(STAGE).set(
            float(1 - np.mean([ok for _, _, ok, _, _ in w])) if w else 0.0)
        g["latency_p95_ms"].labels(STAGE).set(float(np.percentile([m for _, m, _, _, _ in w], 95))
                                              if w else 0.0)
        cpu = (time.process_time() - self._cpu0) / max(now - self._t0, 1e-3) * 100
        g["cpu_pct"].labels(STAGE).set(min(cpu, 100.0))
        rss_mb = current_rss_mb()
        if rss_mb > self.memory_limit_mb:
            os._exit(137)  # out of memory: killed, as by a cgroup's OOM killer
        g["memory_pct"].labels(STAGE).set(min(100.0 * rss_mb / self.memory_limit_mb, 100.0))
        g["queue_depth"].labels(STAGE).set(max(self.rps * self.chaos["latency_ms"] / 1000, 0))
        oks = [right for _, _, ok, right, _ in w if ok]
        self.accuracy.set(float(np.mean(oks)) if oks else 0.0)
        xs = np.array([x for *_, x in w])
        if xs.size > 50:
            cur = np.histogram(np.clip(xs, -3, 3), BINS)[0] / xs.size + 1e-4
            self.psi.set(float(np.sum((cur - self.ref) * np.log(cur / self.ref))))
            with self.lock:
                base = float(np.mean([y for _, y in self.labels])) if self.labels else 0.5
            p = np.clip([np.mean(xs > self.threshold), base], 1e-3, 1 - 1e-3)
            self.pred_psi.set(float((p[0] - p[1]) * np.log(p[0] / p[1])
                                    + (p[1] - p[0]) * np.log((1 - p[0]) / (1 - p[1]))))
        self.version.set(self.threshold)
        self.share.set(self.previous_share)

    def retrain(self) -> float:
        """Refit the threshold on recent labelled traffic (the error-minimising cut)."""
        with self.lock:
            data = np.array(self.labels)
        if len(data) < 50:
            raise RuntimeError("not enough labelled traffic to retrain")
        xs = np.sort(data[:, 0])
        errors = [np.mean((data[:, 0] > c) != data[:, 1]) for c in xs[::10]]
        self.threshold = float(xs[::10][int(np.argmin(errors))])
        self.retrained = True
        # the drift reference becomes the data the model was refitted on
        self.ref = np.histogram(np.clip(data[:, 0], -3, 3), BINS)[0] / len(data) + 1e-4
        return self.threshold

    def run_load(self, stop: threading.Event) -> None:
        period = 1.0 / self.rps
        next_t = time.perf_counter()
        last_measure = last_model = 0.0
        while not stop.is_set():
            self.tick()
            now = time.time()
            if now - last_measure >= 0.5:
                self.measure()
                last_measure = now
            if now - last_model >= 5.0:
                self.refresh_model()
                last_model = now
            next_t += period
            time.sleep(max(next_t - time.perf_counter(), 0.0))


def handler(svc: Service) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/metrics"):
                self._send(200, generate_latest(svc.registry), "text/plain; version=0.0.4")
            elif self.path.startswith("/predict"):
                x = float(self.path.partition("x=")[2] or 0)
                try:
                    self._send(200, json.dumps({"y": svc.predict(x)}).encode())
                except RuntimeError as exc:
                    self._send(500, json.dumps({"error": str(exc)}).encode())
            elif self.path.startswith("/split"):
                self._send(200, json.dumps(svc.split()).encode())
            elif self.path.startswith("/healthz"):
                self._send(200, json.dumps({"pid": os.getpid(), **svc.chaos}).encode())
            else:
                self._send(404, b"{}")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.startswith("/retrain"):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                try:
                    self._send(200, json.dumps({"threshold": svc.retrain()}).encode())
                except RuntimeError as exc:
                    self._send(409, json.dumps({"error": str(exc)}).encode())
                return
            if self.path.startswith("/split"):
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    share = float(json.loads(self.rfile.read(n) or b"{}")["previous_share"])
                    self._send(200, json.dumps(svc.set_split(share)).encode())
                except (KeyError, ValueError, TypeError) as exc:
                    self._send(422, json.dumps({"error": f"give previous_share in [0, 1] "
                                                         f"({exc})"}).encode())
                except RuntimeError as exc:
                    self._send(409, json.dumps({"error": str(exc)}).encode())
                return
            if not self.path.startswith("/chaos"):
                self._send(404, b"{}")
                return
            n = int(self.headers.get("Content-Length") or 0)
            body: dict[str, Any] = json.loads(self.rfile.read(n) or b"{}")
            unknown = set(body) - set(svc.chaos)
            if unknown:
                self._send(422, json.dumps({"error": f"unknown faults {sorted(unknown)}"}
                                           ).encode())
                return
            svc.chaos.update({k: float(v) for k, v in body.items()})
            self._send(200, json.dumps(svc.chaos).encode())

        def log_message(self, *args: Any) -> None:
            pass

    return H


def current_rss_mb() -> float:
    """Resident memory now. (Not ``ru_maxrss``: Linux keeps the high-water mark across exec, so
    a service started from a large process would read its parent's peak and "run out of memory"
    at once.)"""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # not Linux: the peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8801)
    p.add_argument("--model-uri", default=None)
    p.add_argument("--threshold", type=float, default=0.0)
    p.add_argument("--rps", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-limit-mb", type=float, default=2048.0)
    args = p.parse_args(argv)
    svc = Service(args.threshold, args.model_uri, args.rps, args.seed, args.memory_limit_mb)
    svc.refresh_model()
    stop = threading.Event()
    threading.Thread(target=svc.run_load, args=(stop,), daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), handler(svc))
    try:
        server.serve_forever()
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
