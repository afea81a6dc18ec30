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
        self.log.write({
            "request_id": ctx.request_id, "domain": ctx.domain, "route": ctx.route.path if ctx.route else "-",
            "client_ip": ctx.client_ip, "method": ctx.method, "path": ctx.scope["path"], "status": outcome.status,
            "bytes": outcome.sent, "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "upstream": outcome.upstream, "verdict": outcome.verdict, "reason": outcome.reason,
        })
