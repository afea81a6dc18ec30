"""The access log: one JSON object per line and request, written off the event loop.

``write`` only appends the line to a list; ``flush`` (every half second, and at close) hands the
lines to a worker thread that writes them. A reader that stops draining stdout therefore stalls
that thread, never the worker's event loop; while a write is stuck, lines queue up to
``MAX_PENDING`` and the rest are dropped and counted (the count is logged), so memory stays bounded.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("edgeward.accesslog")

MAX_PENDING = 100_000


class AccessLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._dropped = 0
        self._writing: asyncio.Future[None] | None = None

    def open(self) -> None:
        if self.path == "-":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, record: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._dropped += 1
            return
        now = time.time()
        record["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        self._pending.append(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def flush(self) -> None:
        """Start writing what is pending in a thread, unless a write is still under way."""
        if not self._pending or self._fd is None or (self._writing is not None and not self._writing.done()):
            return
        lines, self._pending = self._pending, []
        if self._dropped:
            log.warning("access log writer is stuck: %d lines dropped", self._dropped)
            self._dropped = 0
        self._writing = asyncio.ensure_future(asyncio.to_thread(_write_all, self._fd, b"".join(lines)))

    async def close(self) -> None:
        if self._writing is not None:
            await asyncio.wait_for(asyncio.shield(self._writing), 5)
        self.flush()
        if self._writing is not None:
            await asyncio.wait_for(asyncio.shield(self._writing), 5)
        if self._fd is not None and self.path != "-":
            os.close(self._fd)
        self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        log.warning("cannot write the access log: %s", exc)
