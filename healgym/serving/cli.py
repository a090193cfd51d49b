"""``healgym serve`` and ``healgym override``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from healgym.errors import ConfigError, HealgymError


def build(args: argparse.Namespace) -> Any:
    from healgym.serving.adapter import Adapter
    from healgym.serving.config import load_config
    from healgym.serving.decision_log import DecisionLog
    from healgym.serving.observe import Observer
    from healgym.serving.policies import load_policy
    from healgym.sim.model import build_model

    conf = load_config(args.config, policy=args.policy)
    if not conf.policy:
        raise ConfigError("no policy: pass --policy <folder | runbook.yaml | models:/NAME@ALIAS>"
                          " or set `policy:` in the serve config")
    model = build_model(dataset=conf.dataset, stages=conf.stages, history=conf.history)
    policy, version = load_policy(conf.policy, model)
    log = DecisionLog(conf.decision_log)
    return Adapter(conf, policy, model, log, Observer(model, conf.source), policy_version=version)


def configure_logging(fmt: str, quiet: bool = False) -> logging.Handler:
    """The adapter's structured lines (logger ``healgym.serving``) on stderr."""
    from healgym.serving.adapter import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(message)s"))
    lg = logging.getLogger("healgym.serving")
    lg.handlers = [handler]
    lg.setLevel(logging.WARNING if quiet else logging.INFO)
    lg.propagate = False
    return handler


def serve(args: argparse.Namespace) -> int:
    if getattr(args, "log_format", None) and args.steps is None:
        configure_logging(args.log_format, getattr(args, "quiet", False))
    adapter = build(args)
    conf = adapter.conf
    for msg in adapter.alerts:
        print(f"alert: {msg}", file=sys.stderr)
    if args.steps is not None:
        import time

        for i in range(args.steps):
            if i:
                time.sleep(conf.interval_s)
            rec = adapter.log.record(adapter.step())
            print(json.dumps({k: rec[k] for k in ("id", "status", "proposed_action", "state",
                                                  "executed_action", "reason")} if rec else {}))
        adapter.close()
        return 0
    server = None
    if not args.no_api:
        import uvicorn

        from healgym.serving.api import create_app

        token, read_token = api_tokens(conf.api)
        check_bind(conf.api)
        app = create_app(adapter, token, read_token)
        server = uvicorn.Server(uvicorn.Config(app, host=conf.api.host, port=conf.api.port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        print(f"override API on http://{conf.api.host}:{conf.api.port} (token from "
              f"${conf.api.token_env}); metrics at /metrics/", file=sys.stderr)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:  # systemd and Kubernetes stop with SIGTERM
        received.append(signal.Signals(signum).name)
        stop.set()

    # installed explicitly: a shell starts a background job with SIGINT ignored
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"serving {adapter.policy.name} ({adapter.policy_version}) every {conf.interval_s:g} s;"
          f" decisions in {conf.decision_log}", file=sys.stderr)
    try:
        adapter.run(stop)
    finally:
        # stop deciding (the step in progress, and its action, finish first: the lock), log
        # the open incident, stop the managed processes, stop the API
        with adapter.lock:
            if received:
                print(f"{received[0]}: stopping: no more decisions; logging open incidents and "
                      "stopping managed processes", file=sys.stderr)
            adapter.close()
        if server is not None:
            server.should_exit = True
    return 0


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_bind(api: Any) -> None:
    """A non-loopback address exposes the API to the network: only with ``api.allow_remote``,
    and then with a warning."""
    if api.host in LOOPBACK or api.host.startswith("127."):
        return
    if not api.allow_remote:
        raise ConfigError(f"api.host={api.host!r} binds a non-loopback address: every machine "
                          "that reaches it can try the API. Set api.allow_remote: true to mean "
                          "it (and put TLS in front), or keep 127.0.0.1")
    print(f"WARNING: the override API listens on {api.host}:{api.port}, reachable from other "
          "machines (api.allow_remote); every endpoint but /healthz needs the token, but the "
          "traffic is plain HTTP: put TLS in front", file=sys.stderr)


def read_secret(env: str | None, file: str | None, what: str) -> str | None:
    """A token from a file (its first line) or from the environment; never from the config or
    the command line."""
    if file:
        try:
            return Path(file).read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            raise ConfigError(f"{what}: cannot read a token from {file!r} (its first line)"
                              ) from None
    if env:
        return os.environ.get(env) or None
    return None


def api_tokens(api: Any) -> tuple[str, str | None]:
    token = read_secret(api.token_env, api.token_file, "api.token_file") or ""
    if not token:
        raise ConfigError(f"no API token: set ${api.token_env} (or api.token_file) to a secret "
                          "of at least 16 characters, e.g. python -c \"import secrets; "
                          "print(secrets.token_urlsafe(24))\"")
    return token, read_secret(api.read_token_env, api.read_token_file, "api.read_token_file")


def override(args: argparse.Namespace) -> int:
    import requests

    base = args.url.rstrip("/")
    token = os.environ.get(args.token_env, "")
    if not token:
        raise ConfigError(f"no API token: set the environment variable ${args.token_env} to the "
                          "adapter's token (the serve config's api.token_env names it; for "
                          "list and show a read-only token will do)")
    headers = {"Authorization": f"Bearer {token}"}
    body: dict[str, Any] = {"operator": args.operator, "reason": args.reason}

    def call(method: str, path: str, **kw: Any) -> Any:
        try:
            r = requests.request(method, f"{base}{path}", headers=headers,
                                 timeout=args.timeout, **kw)
        except requests.Timeout:
            raise HealgymError(f"the adapter at {base} did not answer within {args.timeout:g} "
                               "s (--timeout); the request may still have been accepted: check "
                               "with `healgym override show <id>`") from None
        except requests.ConnectionError:
            raise HealgymError(f"cannot reach the adapter at {base} (--url): is `healgym "
                               "serve` running with its API?") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            hint = {401: f" (is ${args.token_env} the adapter's token?)",
                    403: " (a read-only token: use the operator token)",
                    404: " (list decisions with `healgym override list`)",
                    423: " (the kill switch or a pause stops every action)"}.get(
                        r.status_code, "")
            raise HealgymError(f"the adapter answered {r.status_code}: {detail}{hint}")
        return r.json()

    if args.verb == "list":
        data = call("GET", "/decisions", params={"pending": args.pending, "limit": args.limit})
        for d in data:
            print(f"{d['id']}  {d['state']:<12} proposed={d['proposed_action']}  "
                  f"executed={d['executed_action']}  {d['reason'] or ''}")
        return 0
    if args.verb == "show":
        print(json.dumps(call("GET", f"/decisions/{args.id}"), indent=2, default=str))
        return 0
    if args.verb in ("pause", "resume"):
        print(json.dumps(call("POST", f"/{args.verb}", json=body), indent=2, default=str))
        return 0
    if not args.id:
        raise ConfigError(f"override {args.verb}: give the decision id")
    if args.verb == "override":
        if not args.action:
            raise ConfigError("override override: give --action NAME")
        body["action"] = args.action
    data = call("POST", f"/decisions/{args.id}/{args.verb}", json=body)
    # the action runs in the adapter's background: follow it for up to --wait seconds
    t0 = time.time()
    while data.get("state") == "acting" and time.time() - t0 < args.wait:
        print(f"\r{data.get('executed_action')}: running, {time.time() - t0:.0f} s (waiting up "
              f"to {args.wait:g} s, --wait)", end="", file=sys.stderr, flush=True)
        time.sleep(min(1.0, max(args.wait - (time.time() - t0), 0.0)))
        data = call("GET", f"/decisions/{args.id}")
    if time.time() - t0 >= 1.0:
        print(file=sys.stderr)
    if data.get("state") == "acting":
        print(f"{data.get('executed_action')} is still running after {args.wait:g} s; follow "
              f"it with `healgym override show {args.id}`", file=sys.stderr)
    print(json.dumps(data, indent=2, default=str))
    return 0


def record_cmd(args: argparse.Namespace) -> int:
    from healgym.serving.config import load_config
    from healgym.serving.record import record

    conf = load_config(args.config)
    if not conf.stages:
        raise ConfigError(f"{args.config}: set `stages:` (the pipeline's stages) to record")
    out = record(conf.source, conf.stages, args.seconds, args.out, args.step, name=args.name,
                 max_error_rate=args.max_error_rate)
    from healgym.telemetry.dataset import load_dataset

    rec = load_dataset(out).metadata["recording"]
    excluded = ", ".join(f"{n} {k}" for k, n in rec["excluded"].items()) or "none"
    print(f"recorded {args.seconds:g} s of {conf.stages} into {out}: {rec['kept']} of "
          f"{rec['timestamps']} timestamps healthy ({100 * rec['healthy_share']:.0f} %; left "
          f"out: {excluded}); train on it with telemetry.dataset={out} and serve with "
          f"dataset: {out}")
    return 0


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("record", help="record healthy telemetry from Prometheus as a dataset")
    r.add_argument("--config", required=True, help="the serve config (its source and stages)")
    r.add_argument("--seconds", type=float, default=600.0, help="how long to record, seconds")
    r.add_argument("--step", type=float, default=1.0, help="seconds between samples")
    r.add_argument("--out", required=True, help="the dataset folder to write")
    r.add_argument("--name", default=None, help="the dataset's name (default: the folder's)")
    r.add_argument("--max-error-rate", type=float, default=0.05,
                   help="rows failing more requests than this are not healthy (left out)")
    r.set_defaults(func=record_cmd)
    from healgym.demo.chaos import add_parser

    add_parser(sub)
    s = sub.add_parser("serve", help="run a trained policy against real infrastructure")
    s.add_argument("--policy", help="a policy folder, a runbook YAML or models:/NAME@ALIAS")
    s.add_argument("--config", help="the serve config YAML (configs/serve/demo.yaml)")
    s.add_argument("--steps", type=int, default=None,
                   help="take this many decisions now and exit (no API)")
    s.add_argument("--no-api", action="store_true", help="do not start the override API")
    s.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="one line per decision, action, block, alert and incident on stderr: "
                        "plain text or JSON objects")
    s.add_argument("--quiet", action="store_true", help="only warnings and errors on stderr")
    s.set_defaults(func=serve)
    o = sub.add_parser("override", help="the human-override API, from the terminal")
    o.add_argument("verb", choices=["list", "show", "approve", "reject", "override", "pause",
                                    "resume"], help="what to do")
    o.add_argument("id", nargs="?", help="the decision id (approve, reject, override, show)")
    o.add_argument("--action", help="override: the action to take instead")
    o.add_argument("--wait", type=float, default=60.0,
                   help="approve/override: follow the action this long, s (0: return at once)")
    o.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the adapter to answer a request")
    o.add_argument("--operator", default=os.environ.get("USER", "operator"),
                   help="who you are, logged with the verdict (default: $USER)")
    o.add_argument("--reason", default="", help="why, logged with the verdict")
    o.add_argument("--pending", action="store_true", help="list: only pending approvals")
    o.add_argument("--limit", type=int, default=20, help="list: at most this many decisions")
    o.add_argument("--url", default="http://127.0.0.1:8700", help="the adapter's API")
    o.add_argument("--token-env", default="HEALGYM_TOKEN",
                   help="the environment variable holding the API token")
    o.set_defaults(func=override)
