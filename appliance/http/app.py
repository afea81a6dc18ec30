"""The public listener's ASGI application: resolve, run the route's stages, proxy, then ``done``.

Plain ASGI on purpose: the hot path is one pass over the headers in ``resolve``, two table
lookups and the hooks compiled for the route; nothing is parsed or merged per request. Every
request, whatever happens to it, ends in the ``done`` consumers (metrics, access log, ...).
"""
from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance.config.schema import Config
from appliance.http.proxy import Proxy, answer_client_gone, deny_websocket
from appliance.http.responses import send_local
from appliance.observe.metrics import write_snapshot
from appliance.pipeline.body import ClientGone, read_body
from appliance.pipeline.context import RequestContext
from appliance.pipeline.runner import Pipeline, finish
from appliance.pipeline.verdict import Outcome, Verdict
from appliance.reloader import ConfigWatcher, file_signature, load_for_start, signature
from appliance.runtime import Runtime, compile_runtime
from appliance.stages import Shared
from appliance.stages.resolve import new_request_id
from appliance.types import Receive, Scope, Send
from appliance.upstream.h1client import H1Transport
from appliance.upstream.transport import Transport, WebSocketConnector

log = logging.getLogger("edgeward.app")

EXECUTOR_THREADS = 4
_MESSAGES = {431: "Request headers too large", 413: "Request body too large"}


class EdgewardApp:
    """One per worker process. ``runtime`` is replaced whole on reload, never mutated."""

    def __init__(self, config_path: str, transport: Transport | None = None) -> None:
        self.config_path = config_path
        self.runtime: Runtime | None = None
        self.shared = Shared()
        self.transport = transport or H1Transport()
        self.websockets = WebSocketConnector()
        self.proxy = Proxy(self.transport, self.websockets)
        metrics_dir = os.environ.get("EDGEWARD_METRICS_DIR")
        self.metrics_dir = Path(metrics_dir) if metrics_dir else None
        self._tasks: list[asyncio.Task[None]] = []

    # -- configuration -------------------------------------------------------------------
    def build(self, config: Config, generation: int) -> Runtime:
        return compile_runtime(config, generation, self.shared)

    async def apply(self, runtime: Runtime) -> None:
        """Start the new generation's stages, swap it in, retire the old one."""
        await runtime.start()
        previous = self.runtime
        if previous is not None:
            for key in ("listen", "tls", "workers", "admin", "state_dir"):
                if getattr(previous.config, key) != getattr(runtime.config, key):
                    log.warning("config key %r changed: it takes effect only after a restart", key)
        self.runtime = runtime
        if previous is not None:
            previous.retire()
            log.info("config generation %d is serving", runtime.generation)

    async def _startup(self) -> None:
        # File work (config loads, compiles, log writes, snapshots) runs in a small fixed pool: the
        # thread count of a worker is bounded whatever happens to reloads or slow log readers.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="edgeward-io"))
        # The baseline is taken before the file is read and before the compile reads activations: a
        # change made while this worker starts is then seen as a change, not lost.
        file_seen = await asyncio.to_thread(file_signature, self.config_path)
        config, _, _ = await asyncio.to_thread(load_for_start, self.config_path)
        baseline = await asyncio.to_thread(signature, self.config_path, config, file_seen)
        await self.apply(await asyncio.to_thread(self.build, config, 1))
        watcher = ConfigWatcher(self.config_path, config, self.build, self.apply, self.shared.metrics.reload,
                                baseline=baseline)
        self._tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(self._publish()),
                       asyncio.create_task(self._stall_watchdog())]

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.runtime is not None:
            self.runtime.retire()
            await self.runtime.closed()
        await self.proxy.close()
        await self.transport.close()
        await self.websockets.close()
        await asyncio.to_thread(self._write_snapshots, *self._snapshots())

    def _snapshots(self) -> tuple[dict[str, object], dict[str, object]]:
        """Copies taken on the event loop, which is the only place the counters change."""
        limiter = self.shared.limiter
        if limiter is not None:
            self.shared.metrics.cc(limiter.degraded, limiter.errors)
        return self.shared.metrics.snapshot(), dict(self.shared.canary.snapshot())

    def _write_snapshots(self, metrics: dict[str, object], canary: dict[str, object]) -> None:
        try:
            if self.metrics_dir is not None:
                write_snapshot(self.metrics_dir, metrics)
            if canary and self.runtime is not None:
                write_snapshot(self.runtime.config.state_dir / "run" / "canary", canary)
        except OSError as exc:
            log.warning("cannot write metrics snapshot: %s", exc)

    async def _publish(self) -> None:
        """Publish metrics and canary statistics twice a second, off the request path. Nothing
        that goes wrong here may end the task: the next round tries again."""
        while True:
            await asyncio.sleep(0.5)
            try:
                await asyncio.to_thread(self._write_snapshots, *self._snapshots())
            except Exception:
                log.exception("publishing metrics failed")

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
        runtime = self.runtime
        if runtime is None:  # lifespan not run (should not happen under granian)
            await send_local(send, 503, new_request_id(), None, "Starting up")
            return
        runtime.inflight += 1
        ctx = RequestContext(scope, receive, websocket, time.perf_counter())
        outcome = Outcome()
        route = None
        try:
            verdict = await runtime.resolve.request_headers(ctx)
            route = ctx.route
            if verdict is None and route is not None and route.pipeline.has_request_hooks:
                verdict = await _request_hooks(ctx, route.pipeline)
            if verdict is not None:
                await _refuse(ctx, verdict, send, outcome)
            elif route is None:
                raise AssertionError("resolve let a request through without a route")
            elif websocket:
                await self.proxy.websocket(ctx, route, send, outcome)
            else:
                await self.proxy.http(ctx, route, send, outcome)
            if ctx.would_block and outcome.verdict == "allow":
                outcome.verdict = "detect"
        except ClientGone:  # the body broke its framing, or the client left: answer in case it is there
            await answer_client_gone(send, ctx, outcome)
        except Exception as exc:
            outcome.verdict = "error"
            if outcome.started:  # the response is under way: the server drops the connection
                outcome.reason = outcome.reason or "internal_error"
                raise
            log.exception("request %s failed", ctx.request_id or "-")
            if not isinstance(exc, OSError):
                with contextlib.suppress(Exception):
                    await _refuse(ctx, Verdict(500, "internal_error", kind="error"), send, outcome)
        finally:
            finish(route.finish if route is not None else runtime.done.done_stages, ctx, outcome)
            if ctx.spool is not None:
                ctx.spool.close()
            runtime.leave()


async def _request_hooks(ctx: RequestContext, pipeline: Pipeline) -> Verdict | None:
    verdict = await pipeline.request_headers(ctx)
    if verdict is None and pipeline.needs_body:
        if ctx.has_body:
            await read_body(ctx, pipeline.body_want)
        verdict = await pipeline.request_body(ctx)
    return verdict


async def _refuse(ctx: RequestContext, verdict: Verdict, send: Send, outcome: Outcome) -> None:
    """The one place a verdict becomes a response (always with the request id)."""
    ctx.verdict = verdict
    outcome.status, outcome.reason = verdict.status, verdict.reason
    outcome.verdict = verdict.kind
    if ctx.websocket:
        await deny_websocket(ctx, send, outcome, verdict.status, verdict.headers)
        return
    outcome.started = True
    outcome.sent = await send_local(send, verdict.status, ctx.request_id or new_request_id(), ctx.accept,
                                    _MESSAGES.get(verdict.status), verdict.headers, verdict.body)


def create_app() -> EdgewardApp:
    """Granian factory: each worker builds its app from the config named in EDGEWARD_CONFIG."""
    logging.basicConfig(level=os.environ.get("EDGEWARD_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return EdgewardApp(os.environ["EDGEWARD_CONFIG"])
