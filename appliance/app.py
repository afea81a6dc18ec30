"""The public listener's ASGI application: resolve, run the pipeline, proxy, log.

Plain ASGI on purpose: the hot path does one pass over the headers, two table lookups and the
stages compiled for the route; nothing is parsed or merged per request.
"""
from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import itertools
import logging
import os
import time
from pathlib import Path

from .accesslog import AccessLog
from .configfile import load_config
from .metrics import WorkerMetrics
from .pipeline import RequestContext
from .proxy import Outcome, Proxy
from .reloader import ConfigWatcher
from .responses import send_local
from .routing import normalise_host, valid_host
from .runtime import Runtime, compile_runtime
from .stages.canary import STATS as CANARY_STATS
from .h1client import H1Transport
from .transport import Transport, WebSocketConnector
from .types import Receive, Scope, Send

log = logging.getLogger("edgeward.app")

_MAX_REQUEST_ID = 200


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """32 hex characters: a random per-process prefix and a counter (unique, and cheap to make)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_REQUEST_ID and all(0x21 <= b <= 0x7E for b in value)


class EdgewardApp:
    """One per worker process. ``runtime`` is replaced whole on reload, never mutated."""

    def __init__(self, config_path: str, transport: Transport | None = None) -> None:
        self.config_path = config_path
        self.runtime: Runtime | None = None
        self.transport = transport or H1Transport()
        self.websockets = WebSocketConnector()
        self.proxy = Proxy(self.transport, self.websockets)
        self.metrics = WorkerMetrics()
        metrics_dir = os.environ.get("EDGEWARD_METRICS_DIR")
        self.metrics_dir = Path(metrics_dir) if metrics_dir else None
        self.access_log: AccessLog | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- configuration -------------------------------------------------------------------
    def apply(self, runtime: Runtime) -> None:
        previous = self.runtime
        config = runtime.config
        generation = runtime.generation
        if previous is not None:
            for key in ("listen", "tls", "workers", "admin"):
                if getattr(previous.config, key) != getattr(config, key):
                    log.warning("config key %r changed: it takes effect only after a restart", key)
        self.runtime = runtime
        if previous is None or previous.config.access_log != config.access_log:
            old = self.access_log
            self.access_log = AccessLog(config.access_log.path, config.access_log.enabled)
            if old is not None:
                old.close()
        if previous is not None:
            log.info("config generation %d is serving", generation)

    async def _startup(self) -> None:
        config = await asyncio.to_thread(load_config, self.config_path)
        self.apply(await asyncio.to_thread(compile_runtime, config, 1))
        watcher = ConfigWatcher(self.config_path, config, self.apply, self.metrics.reload)
        self._tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(self._flush_logs()),
                       asyncio.create_task(self._stall_watchdog())]

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close()
        await self.websockets.close()
        if self.access_log is not None:
            self.access_log.close()
        self._dump_metrics()

    def _dump_metrics(self) -> None:
        try:
            if self.metrics_dir is not None:
                self.metrics.dump(self.metrics_dir)
            if self.runtime is not None:
                CANARY_STATS.dump(self.runtime.config.state_dir / "run" / "canary")
        except OSError as exc:
            log.warning("cannot write metrics snapshot: %s", exc)

    async def _stall_watchdog(self) -> None:
        """Exit the worker if its event loop stops turning (a pathological request inside the WAF
        engine, which holds the GIL and cannot be interrupted from Python). faulthandler's timer
        runs in a C thread that needs no GIL; this task re-arms it every second, so it only fires
        when the loop has been stuck for ``limits.worker_stall_timeout``. Granian then replaces the
        worker while the others keep serving."""
        try:
            while True:
                timeout = self.runtime.config.limits.worker_stall_timeout if self.runtime else 30.0
                faulthandler.dump_traceback_later(timeout, exit=True)
                await asyncio.sleep(1.0)
        finally:
            faulthandler.cancel_dump_traceback_later()

    async def _flush_logs(self) -> None:
        """Flush the access log and publish metrics twice a second, off the request path."""
        while True:
            await asyncio.sleep(0.5)
            if self.access_log is not None:
                self.access_log.flush()
            await asyncio.to_thread(self._dump_metrics)

    # -- ASGI ----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            await self._request(scope, receive, send, kind == "websocket")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._startup()
                except Exception as exc:  # a worker that cannot load its config must not serve
                    log.error("worker startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _request(self, scope: Scope, receive: Receive, send: Send, websocket: bool) -> None:
        started = time.perf_counter()
        runtime = self.runtime
        if runtime is None:  # lifespan not run (should not happen under granian)
            await send_local(send, 503, new_request_id(), None, "Starting up")
            return
        host = forwarded_for = request_id = accept = None
        size = 0
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4
            if name == b"host":
                host = value
            elif name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b"," + value
            elif name == b"x-request-id":
                request_id = value
            elif name == b"accept":
                accept = value
        peer = scope["client"][0] if scope.get("client") else "0.0.0.0"
        client_ip, trusted = runtime.client_ip.resolve(peer, forwarded_for)
        rid = request_id.decode() if trusted and request_id and _valid_request_id(request_id) else new_request_id()
        domain_name = route_path = "-"
        outcome = Outcome()
        try:
            if size > runtime.max_header_size:
                outcome.status, outcome.verdict = 431, "reject"
            elif not host:
                outcome.status, outcome.verdict = 400, "reject"
            elif (domain := runtime.hosts.exact(name := normalise_host(host))) is None and not valid_host(name):
                outcome.status, outcome.verdict = 400, "reject"  # a Host no DNS name can have
            else:
                if domain is None:  # exact names are valid by construction; check wildcards only now
                    domain = runtime.hosts.lookup(name)
                if domain is None:
                    outcome.status, outcome.verdict = runtime.unknown_host_status, "reject"
                else:
                    domain_name = domain.name
                    route = domain.routes.lookup(scope["path"])
                    route_path = route.path
                    ctx = RequestContext(rid, scope, client_ip, trusted, host.decode("latin-1"), domain_name, route_path, receive)
                    verdict = await route.pipeline.run(ctx) if route.pipeline.stages else None
                    if verdict is not None:
                        ctx.verdict = verdict
                        outcome.status, outcome.verdict = verdict.status, "block"
                        if not websocket:
                            outcome.sent = await send_local(send, verdict.status, rid, accept, None, verdict.headers)
                    elif websocket:
                        outcome = await self.proxy.websocket(ctx, route, scope, receive, send)
                    else:
                        outcome = await self.proxy.http(ctx, route, scope, receive, send, accept)
                    if ctx.would_block and outcome.verdict == "allow":
                        outcome.verdict = "detect"
            if outcome.verdict != "allow" and not outcome.sent and outcome.status not in (101, 499, 1011):
                outcome.sent = await self._reject(send, outcome.status, rid, accept, websocket, runtime)
        except Exception:
            if outcome.status and outcome.sent:
                raise  # the response is under way: the server drops the connection
            log.exception("request %s failed", rid)
            outcome.status, outcome.verdict = 500, "error"
            with contextlib.suppress(Exception):
                outcome.sent = await self._reject(send, 500, rid, accept, websocket, runtime)
        finally:
            duration = time.perf_counter() - started
            self.metrics.observe(domain_name, outcome.status, outcome.verdict, duration)
            if self.access_log is not None:
                self.access_log.write(
                    request_id=rid, domain=domain_name, route=route_path, client_ip=client_ip,
                    method=scope.get("method", "GET"), path=scope["path"], status=outcome.status,
                    bytes_sent=outcome.sent, duration=duration, upstream=outcome.upstream, verdict=outcome.verdict,
                )

    async def _reject(
        self, send: Send, status: int, rid: str, accept: bytes | None, websocket: bool, runtime: Runtime
    ) -> int:
        if websocket:
            await send({"type": "websocket.close", "code": 1008})
            return 0
        if status in (404, 421) and status == runtime.unknown_host_status:
            body = runtime.unknown_host_body
            await send({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode())]})
            await send({"type": "http.response.body", "body": body})
            return len(body)
        messages = {431: "Request headers too large"}
        return await send_local(send, status, rid, accept, messages.get(status))


def create_app() -> EdgewardApp:
    """Granian factory: each worker builds its app from the config named in EDGEWARD_CONFIG."""
    logging.basicConfig(level=os.environ.get("EDGEWARD_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return EdgewardApp(os.environ["EDGEWARD_CONFIG"])
