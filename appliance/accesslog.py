"""The access log: one JSON object per line and request.

Lines go to a buffered writer flushed at most every half second (and at shutdown), so the hot path
never waits on a write system call for each request.
"""
from __future__ import annotations

import io
import json
import sys
import time
from typing import IO


class AccessLog:
    def __init__(self, path: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self._stream: IO[bytes] | None = None
        if enabled:
            if path == "-":
                self._stream = io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "w", closefd=False), 65536)
            else:
                self._stream = open(path, "ab", buffering=65536)  # noqa: SIM115 - closed in close()

    def write(
        self, *, request_id: str, domain: str, route: str, client_ip: str, method: str, path: str,
        status: int, bytes_sent: int, duration: float, upstream: str, verdict: str,
    ) -> None:
        if self._stream is None:
            return
        now = time.time()
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
            "request_id": request_id,
            "domain": domain,
            "route": route,
            "client_ip": client_ip,
            "method": method,
            "path": path,
            "status": status,
            "bytes": bytes_sent,
            "duration_ms": round(duration * 1000, 3),
            "upstream": upstream,
            "verdict": verdict,
        }
        self._stream.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.flush()
        if self._stream is not None and self._stream.raw.name != sys.stdout.fileno():  # type: ignore[attr-defined]
            self._stream.close()
        self._stream = None
