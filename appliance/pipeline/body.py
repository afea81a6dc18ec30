"""Reading the request body once, for whoever needs it first (a stage, then the proxy).

What was read is kept on the request context; the proxy sends it first and then streams the rest.
A body read beyond ``SPOOL_OVER`` bytes goes to a spool file instead of memory: a worker holding
several large uploads for inspection keeps them on disk, and the WAF engine reads the file itself.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from appliance.pipeline.context import RequestContext

SPOOL_OVER = 1024 * 1024  # bytes of body kept in memory before the rest goes to a spool file
_CHUNK = 256 * 1024


class ClientGone(Exception):
    """The client disconnected, or its body broke framing, before the body was read."""


class Spool:
    """A body on disk: a temporary file unlinked as soon as it is made (nothing is left behind if
    the worker dies), reached by its descriptor's /proc path. Reads and writes run in a thread."""

    __slots__ = ("fd", "size")

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="edgeward-body-")
        os.unlink(name)
        self.fd = fd
        self.size = 0

    @property
    def path(self) -> Path:
        return Path(f"/proc/self/fd/{self.fd}")

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, os.pwrite, self.fd, data, self.size)
        self.size += len(data)

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        offset = 0
        while offset < self.size:
            chunk = await loop.run_in_executor(None, os.pread, self.fd, min(_CHUNK, self.size - offset), offset)
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    def read(self, size: int) -> bytes:
        """The first ``size`` bytes (blocking: for a thread)."""
        return os.pread(self.fd, min(size, self.size), 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def read_body(ctx: RequestContext, want: int) -> None:
    """Read until the body read so far (``ctx.body_length``) is at least ``want`` bytes or the
    body is complete; beyond ``SPOOL_OVER`` bytes it goes to ``ctx.spool``."""
    if ctx.body_complete or ctx.body_length >= want:
        return
    parts = [ctx.body] if ctx.body else []
    size = len(ctx.body)
    spool = ctx.spool
    receive = ctx.receive
    while (spool.size if spool is not None else size) < want:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            if spool is not None:
                await spool.write(chunk)
            else:
                parts.append(chunk)
                size += len(chunk)
                if size > SPOOL_OVER:
                    spool = ctx.spool = Spool()
                    await spool.write(b"".join(parts))
                    parts, size = [], 0
        if not message.get("more_body", False):
            ctx.body_complete = True
            break
    ctx.body = b"".join(parts) if spool is None else b""
