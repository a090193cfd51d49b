"""The human-override API (FastAPI), bound to 127.0.0.1 by default.

GET  /decisions?pending=true&limit=N   recent decisions (one row each, events folded in)
GET  /decisions/{id}                   one decision
POST /decisions/{id}/approve           {"operator", "reason"}
POST /decisions/{id}/reject            {"operator", "reason"}
POST /decisions/{id}/override          {"operator", "action", "reason"}
POST /pause, /resume                   {"operator", "reason"}
GET  /healthz                          liveness, pending count, paused
GET  /metrics/                         the adapter's Prometheus metrics
GET  /console                          the web console (healgym.serving.console)

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` (compared in constant
time; without it: 401): the operator token for everything, or the read-only token (if one is
set) for GET requests (decisions and metrics; a mutating request with it: 403).
``create_app`` refuses to start without an operator token of at least 16 characters.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from healgym.errors import ServingError
from healgym.serving.adapter import Adapter


class Human(BaseModel):
    operator: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=2000)


class OverrideBody(Human):
    action: str = Field(min_length=1, max_length=100)


def create_app(adapter: Adapter, token: str, read_token: str | None = None) -> FastAPI:
    if not token or len(token) < 16:
        raise ValueError("the override API needs an operator bearer token of at least 16 "
                         "characters (in the environment variable named by api.token_env, or "
                         "in api.token_file)")
    if read_token is not None and len(read_token) < 16:
        raise ValueError("the read-only token must have at least 16 characters "
                         "(api.read_token_env / api.read_token_file)")
    app = FastAPI(title="healgym serving adapter", version="1")
    operator = f"Bearer {token}".encode()
    reader = f"Bearer {read_token}".encode() if read_token else None

    def role(authorization: str | None) -> str | None:
        got = (authorization or "").encode()
        if authorization and hmac.compare_digest(got, operator):
            return "operator"
        if authorization and reader is not None and hmac.compare_digest(got, reader):
            return "reader"
        return None

    def unauthorised() -> HTTPException:
        return HTTPException(401, "missing or wrong bearer token",
                             headers={"WWW-Authenticate": "Bearer"})

    def authorised(authorization: str | None = Header(default=None)) -> None:
        r = role(authorization)
        if r is None:
            raise unauthorised()
        if r != "operator":
            raise HTTPException(403, "the read-only token cannot change anything; use the "
                                     "operator token")

    def can_read(authorization: str | None = Header(default=None)) -> None:
        if role(authorization) is None:
            raise unauthorised()

    def call(fn: Any, *args: Any) -> Any:
        """The one place domain errors become HTTP statuses (``ServingError.status``)."""
        try:
            return fn(*args)
        except ServingError as exc:
            raise HTTPException(exc.status, str(exc)) from exc

    @app.get("/healthz")
    def health() -> dict[str, Any]:
        return {"ok": True, "paused": adapter.paused, "pending": len(adapter.pending),
                "policy": adapter.policy.name, "policy_version": adapter.policy_version}

    @app.get("/decisions", dependencies=[Depends(can_read)])
    def list_decisions(pending: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        if pending:
            return [r for did in list(adapter.pending)
                    if (r := adapter.log.record(did)) is not None]
        return adapter.log.records(limit=max(1, min(limit, 1000)))

    @app.get("/decisions/{did}", dependencies=[Depends(can_read)])
    def get_decision(did: str) -> dict[str, Any]:
        r = adapter.log.record(did)
        if r is None:
            raise HTTPException(404, f"no decision {did}")
        return r

    @app.post("/decisions/{did}/approve", dependencies=[Depends(authorised)])
    def approve(did: str, body: Human) -> dict[str, Any]:
        return call(adapter.approve, did, body.operator, body.reason)

    @app.post("/decisions/{did}/reject", dependencies=[Depends(authorised)])
    def reject(did: str, body: Human) -> dict[str, Any]:
        return call(adapter.reject, did, body.operator, body.reason)

    @app.post("/decisions/{did}/override", dependencies=[Depends(authorised)])
    def override(did: str, body: OverrideBody) -> dict[str, Any]:
        return call(adapter.override, did, body.operator, body.action, body.reason)

    @app.post("/pause", dependencies=[Depends(authorised)])
    def pause(body: Human) -> dict[str, Any]:
        adapter.pause(body.operator, body.reason)
        return {"paused": True}

    @app.post("/resume", dependencies=[Depends(authorised)])
    def resume(body: Human) -> dict[str, Any]:
        adapter.resume(body.operator, body.reason)
        return {"paused": False}

    from prometheus_client import make_asgi_app

    metrics_app = make_asgi_app(registry=adapter.metrics.registry)

    async def guarded_metrics(scope: Any, receive: Any, send: Any) -> None:
        """/metrics behind the same tokens (Prometheus: ``authorization: {credentials_file:
        ...}`` in the scrape config)."""
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization")
            if role(auth.decode("latin-1") if auth else None) is None:
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body",
                            "body": b"missing or wrong bearer token\n"})
                return
        await metrics_app(scope, receive, send)

    app.mount("/metrics", guarded_metrics)
    from healgym.serving.console import mount_console

    mount_console(app, adapter, role)  # the web console: same app, same tokens
    return app
