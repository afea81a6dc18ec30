"""The admin listener: health, readiness, Prometheus metrics and the authenticated admin API.

Probes and metrics are open (the listener binds to a private address); everything under ``/api``
needs ``Authorization: Bearer <token>`` where the token comes from the env var ``admin.token_env``.
Without that variable set the API refuses every call (fail closed).
"""
from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from appliance.config.types import parse_listen
from appliance.admin.audit import audit_problem, audit_routes
from appliance.admin.cc import cc_routes
from appliance.admin.consumers import consumer_routes
from appliance.admin.bundles import bundle_routes
from appliance.admin.live import LiveConfig
from appliance.config.loader import load_config
from appliance.errors import ConfigError
from appliance.observe.metrics import SnapshotCollector
from appliance.reloader import request_reload
from appliance.runtime import runtime_problems
from appliance.types import ASGIApp, Receive, Scope, Send


class BearerTokenMiddleware:
    """Plain ASGI guard for a path prefix; compares tokens in constant time."""

    def __init__(self, app: ASGIApp, token: Callable[[], Awaitable[bytes | None]], prefix: str = "/api") -> None:
        self.app = app
        self.token = token
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            supplied = b""
            for name, value in scope["headers"]:
                if name == b"authorization" and value[:7].lower() == b"bearer ":
                    supplied = value[7:].strip()
            token = await self.token()
            if token is None or not hmac.compare_digest(supplied, token):
                reason = "admin token not configured" if token is None else "invalid or missing admin token"
                response = JSONResponse({"error": reason}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_admin() -> ASGIApp:
    config_path = os.environ["EDGEWARD_CONFIG"]
    live = LiveConfig(config_path)
    config = live.config  # listeners are fixed until a restart
    public = [parse_listen(config.listen)] + ([parse_listen(config.tls.listen)] if config.tls else [])

    registry = CollectorRegistry()
    metrics_dir = os.environ.get("EDGEWARD_METRICS_DIR")
    if metrics_dir:
        registry.register(SnapshotCollector(Path(metrics_dir)))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Ready when every public listener accepts connections."""
        for address, port in public:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
                writer.close()
            except (OSError, asyncio.TimeoutError):
                return JSONResponse({"status": "not ready", "listener": f"{address}:{port}"}, status_code=503)
        if live.config.audit.enabled:
            problem = await asyncio.to_thread(audit_problem, live.config)
            if problem:
                return JSONResponse({"status": "not ready", "audit": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(await asyncio.to_thread(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)

    async def reload(request: Request) -> Response:
        try:
            new = await asyncio.to_thread(load_config, config_path, runtime_problems)
        except ConfigError as exc:
            return JSONResponse({"reloaded": False, "problems": [str(p) for p in exc.problems]}, status_code=422)
        await asyncio.to_thread(request_reload, new)
        return JSONResponse({"reloaded": True})

    async def check(request: Request) -> Response:
        try:
            await asyncio.to_thread(load_config, config_path, runtime_problems)
        except ConfigError as exc:
            return JSONResponse({"valid": False, "problems": [str(p) for p in exc.problems]})
        return JSONResponse({"valid": True})

    app = Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/api/reload", reload, methods=["POST"]),
        Route("/api/config/check", check),
        *bundle_routes(live),
        *audit_routes(live),
        *cc_routes(live),
        *consumer_routes(live),
    ])
    return BearerTokenMiddleware(app, live.token)
