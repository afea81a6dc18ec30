"""The access log as a ``done`` consumer: one line per request, whatever happened to it."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import ClassVar

from appliance.config.schema import AccessLogConfig
from appliance.observe.accesslog import AccessLog
from appliance.pipeline.context import RequestContext
from appliance.pipeline.stage import Stage
from appliance.pipeline.verdict import Outcome


class AccessLogStage(Stage):
    name: ClassVar[str] = "access_log"

    def __init__(self, cfg: AccessLogConfig) -> None:
        self.log = AccessLog(cfg.path)
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.log.open)
        self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.log.flush()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.log.close()

    def done(self, ctx: RequestContext, outcome: Outcome) -> None:
        route = ctx.route
        waf = ctx.waf.outcome if ctx.waf is not None else None
        self.log.write(
            ctx.request_id, ctx.domain, route.path if route is not None else "-", ctx.client_ip, ctx.method,
            ctx.scope["path"], outcome.status, outcome.sent, (time.perf_counter() - ctx.started) * 1000,
            outcome.upstream, outcome.verdict, outcome.reason,
            waf.rule_ids if waf is not None else None, waf.anomaly_score if waf is not None else 0)
