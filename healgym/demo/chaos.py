"""Inject faults into the demo service for real.

    healgym chaos kill --pid PID                # the process dies (SIGKILL)
    healgym chaos latency 300 --url URL         # every request sleeps 300 ms
    healgym chaos leak 20 --url URL             # 20 MB more memory every half second
    healgym chaos errors 0.5 --url URL          # half the requests fail
    healgym chaos drift 1.5 --url URL           # inputs shift by 1.5 sd
    healgym chaos bad-deploy --model demo-model # register a bad version and move @champion to it
    healgym chaos clear --url URL
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

import requests

FAULTS = {"latency": "latency_ms", "leak": "leak_mb_per_s", "errors": "error_rate",
          "drift": "drift"}


def inject(url: str, **faults: float) -> dict[str, Any]:
    r = requests.post(f"{url.rstrip('/')}/chaos", json=faults, timeout=5)
    r.raise_for_status()
    return dict(r.json())


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def bad_deploy(model: str, threshold: float = 2.5, alias: str = "champion") -> str:
    """Log a run with a wrong threshold, register it and point the alias at it."""
    import mlflow
    from mlflow import MlflowClient

    with mlflow.start_run(run_name="bad-deploy") as run:
        mlflow.log_param("threshold", threshold)
    c = MlflowClient()
    mv = c.create_model_version(model, source=run.info.artifact_uri, run_id=run.info.run_id)
    c.set_registered_model_alias(model, alias, mv.version)
    return str(mv.version)


def run(args: argparse.Namespace) -> int:
    if args.fault == "kill":
        kill(int(args.pid))
    elif args.fault == "bad-deploy":
        print(f"{args.model}@champion -> version {bad_deploy(args.model)}")
    elif args.fault == "clear":
        print(inject(args.url, **{k: 0.0 for k in FAULTS.values()}))
    else:
        print(inject(args.url, **{FAULTS[args.fault]: float(args.value)}))
    return 0


def add_parser(sub: Any) -> None:
    c = sub.add_parser("chaos", help="inject a fault into the demo service, for real")
    c.add_argument("fault", choices=["kill", "latency", "leak", "errors", "drift", "bad-deploy",
                                     "clear"], help="what to break (clear: heal everything)")
    c.add_argument("value", nargs="?", default="1",
                   help="how much: latency in ms, leak in MB/s, error share 0-1, drift shift")
    c.add_argument("--url", default="http://127.0.0.1:8801", help="the demo service's URL")
    c.add_argument("--pid", help="kill: the process id to kill (default: the service's)")
    c.add_argument("--model", default="demo-model",
                   help="bad-deploy: the registered model whose champion is replaced")
    c.set_defaults(func=run)
